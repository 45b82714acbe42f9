//! An object store that fails on purpose, for tests: errors, added latency, PUTs that land but whose
//! response is lost, throttling, and outages, switched on and off while a test runs.
//!
//! Faults are deterministic (every n-th request, not a coin toss) so that a failing test fails the
//! same way again.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// What goes wrong, and how often.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The store is unreachable: every request fails.
    pub down: bool,
    /// Every request is refused as throttled (S3's `503 SlowDown`).
    pub throttle: bool,
    /// Every n-th request fails with a transient error (0: none).
    pub fail_every: u64,
    /// PUTs are carried out, then answer with an error: the response was lost on its way back.
    pub lose_put_responses: bool,
    /// Added before every request.
    pub latency: Duration,
}

/// The switch a test holds to change the faults of a [`FaultyStore`] while it is in use.
#[derive(Debug, Default)]
pub struct Faults {
    plan: Mutex<FaultPlan>,
    requests: AtomicU64,
    injected: AtomicU64,
}

impl Faults {
    /// Replaces the current faults.
    pub fn set(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = plan;
    }

    /// The store works again.
    pub fn heal(&self) {
        self.set(FaultPlan::default());
    }

    /// How many requests failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn plan(&self) -> FaultPlan {
        self.plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn error(&self, what: &str) -> object_store::Error {
        self.injected.fetch_add(1, Ordering::Relaxed);
        object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("injected fault: {what}").into(),
        }
    }

    /// Waits the plan's latency, then fails the request if the plan says so.
    async fn before(&self, op: &str) -> Result<FaultPlan> {
        let plan = self.plan();
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if plan.down {
            return Err(self.error(&format!("{op}: connection refused")));
        }
        if plan.throttle {
            return Err(self.error(&format!("{op}: 503 SlowDown")));
        }
        if plan.fail_every > 0 && n.is_multiple_of(plan.fail_every) {
            return Err(self.error(&format!("{op}: 500 InternalError")));
        }
        Ok(plan)
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    /// Wraps `inner`; the returned [`Faults`] switch the faults (none at first).
    pub fn new(inner: Arc<dyn ObjectStore>) -> (FaultyStore, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            FaultyStore {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }

    /// A stream that fails at once if the plan says so, else `inner`'s.
    fn stream<T: Send + 'static>(
        &self,
        op: &'static str,
        inner: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let faults = self.faults.clone();
        let mut inner = Some(inner);
        futures::stream::once(async move { faults.before(op).await })
            .flat_map(move |checked| match checked {
                Ok(_) => inner
                    .take()
                    .unwrap_or_else(|| futures::stream::empty().boxed()),
                Err(e) => futures::stream::once(futures::future::ready(Err(e))).boxed(),
            })
            .boxed()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let plan = self.faults.before("PUT").await?;
        let result = self.inner.put_opts(location, payload, opts).await;
        if plan.lose_put_responses {
            return Err(self.faults.error("PUT: response lost after the write"));
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.faults.before("PUT").await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.faults.before("GET").await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.faults.before("GET").await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = self.inner.delete_stream(locations);
        self.stream("DELETE", inner)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        self.stream("LIST", inner)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list_with_offset(prefix, offset);
        self.stream("LIST", inner)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.faults.before("LIST").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.faults.before("COPY").await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.faults.before("COPY").await?;
        self.inner.rename_opts(from, to, options).await
    }
}
