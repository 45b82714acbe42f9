//! Opening an object store from a URL (`--object-store`), and checking at start-up that it honours
//! create-only PUTs, which the metadata log's fencing and every data object's uniqueness rely on.
//!
//! | URL | store |
//! |---|---|
//! | `file:///path` | [`LocalStore`] rooted at `/path` |
//! | `memory://` | `object_store`'s in-memory store: gone when the process exits (tests, demos) |
//! | `s3://bucket[/prefix]` | S3 or a compatible server, configured from the standard `AWS_*` variables: `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, ... |

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig,
};

use crate::LocalStore;

/// Why a store URL could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// The URL is not one of the supported forms.
    #[error(
        "object_store: {url:?} is not a supported URL ({detail}); use file:///path, memory:// or s3://bucket[/prefix]"
    )]
    Unsupported { url: String, detail: String },
    /// The store could not be built (bad settings) or reached.
    #[error("object_store: cannot open {url}: {detail}")]
    Open { url: String, detail: String },
    /// The store does not refuse a second create-only PUT of the same key.
    #[error(
        "object_store: {url} does not honour create-only PUTs (If-None-Match: *): {detail}. Weir needs \
         them to fence writers and never overwrite an object; use a store that supports conditional \
         writes (AWS S3, SeaweedFS, MinIO, ...)"
    )]
    NoConditionalCreate { url: String, detail: String },
}

/// Opens the store a URL names, S3 settings from the process environment. Nothing is requested from
/// it yet (see [`check_conditional_create`]).
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    open_store_with_env(url, std::env::vars())
}

/// [`open_store`] with the `AWS_*` settings taken from `env` instead of the process environment.
pub fn open_store_with_env(
    url: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    let unsupported = |detail: &str| StoreUrlError::Unsupported {
        url: url.to_owned(),
        detail: detail.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| unsupported("no scheme"))?;
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(unsupported(
                    "a file URL needs an absolute path, file:///path",
                ));
            }
            let store =
                LocalStore::open(std::path::Path::new(rest)).map_err(|e| StoreUrlError::Open {
                    url: url.to_owned(),
                    detail: e.to_string(),
                })?;
            Ok(Arc::new(store))
        }
        "memory" if rest.is_empty() => Ok(Arc::new(InMemory::new())),
        "memory" => Err(unsupported("memory:// takes no path")),
        "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(unsupported("no bucket"));
            }
            let mut builder = AmazonS3Builder::new()
                .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(30)))
                // Transient errors (5xx, throttling, connection resets) are retried with backoff
                // for up to a minute before the caller sees them; the uploader retries beyond that.
                .with_retry(RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: 10,
                    retry_timeout: Duration::from_secs(60),
                });
            // As `AmazonS3Builder::from_env` does, from the variables given.
            for (key, value) in env {
                if key.starts_with("AWS_")
                    && let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
                {
                    builder = builder.with_config(key, value);
                }
            }
            let s3 = builder
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| StoreUrlError::Open {
                    url: url.to_owned(),
                    detail: e.to_string(),
                })?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Ok(Arc::new(s3))
            } else {
                Ok(Arc::new(PrefixStore::new(s3, prefix)))
            }
        }
        _ => Err(unsupported("unknown scheme")),
    }
}

/// Writes a probe object twice with create-only PUTs: the first must succeed and the second must be
/// refused as already existing. The probe is deleted afterwards.
pub async fn check_conditional_create(
    store: &dyn ObjectStore,
    url: &str,
) -> Result<(), StoreUrlError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let key = Path::from(format!("meta/probe/{nanos}-{}", std::process::id()));
    let create = || PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let open_error = |e: object_store::Error| StoreUrlError::Open {
        url: url.to_owned(),
        detail: e.to_string(),
    };
    store
        .put_opts(&key, "first".into(), create())
        .await
        .map_err(open_error)?;
    let second = store.put_opts(&key, "second".into(), create()).await;
    let _ = store.delete(&key).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Ok(_) => Err(StoreUrlError::NoConditionalCreate {
            url: url.to_owned(),
            detail: "a second create of the same key succeeded".to_owned(),
        }),
        Err(object_store::Error::NotImplemented { operation, .. }) => {
            Err(StoreUrlError::NoConditionalCreate {
                url: url.to_owned(),
                detail: format!("not implemented: {operation}"),
            })
        }
        Err(e) => Err(open_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, reason) in [
            ("objects", "no scheme"),
            ("file://relative/path", "absolute path"),
            ("memory://x", "takes no path"),
            ("s3://", "no bucket"),
            ("gs://bucket", "unknown scheme"),
        ] {
            let err = open_store(url).expect_err(url).to_string();
            assert!(
                err.contains(reason) && err.contains("object_store"),
                "{url}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn local_and_memory_stores_pass_the_conditional_create_check() {
        let dir = tempfile::tempdir().unwrap();
        let file_url = format!("file://{}", dir.path().display());
        for url in [file_url.as_str(), "memory://"] {
            let store = open_store(url).unwrap();
            check_conditional_create(store.as_ref(), url).await.unwrap();
            let left = store.list(None).count().await;
            assert_eq!(left, 0, "{url}: the probe is deleted");
        }
    }

    /// A store that accepts every PUT, as some S3 implementations do with If-None-Match ignored.
    #[tokio::test]
    async fn a_store_that_overwrites_fails_the_check() {
        #[derive(Debug)]
        struct Overwrites(InMemory);
        impl std::fmt::Display for Overwrites {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Overwrites")
            }
        }
        #[async_trait::async_trait]
        impl ObjectStore for Overwrites {
            async fn put_opts(
                &self,
                location: &Path,
                payload: object_store::PutPayload,
                _: PutOptions,
            ) -> object_store::Result<object_store::PutResult> {
                self.0
                    .put_opts(location, payload, PutOptions::default())
                    .await
            }
            async fn put_multipart_opts(
                &self,
                location: &Path,
                opts: object_store::PutMultipartOptions,
            ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
                self.0.put_multipart_opts(location, opts).await
            }
            async fn get_opts(
                &self,
                location: &Path,
                options: object_store::GetOptions,
            ) -> object_store::Result<object_store::GetResult> {
                self.0.get_opts(location, options).await
            }
            fn delete_stream(
                &self,
                locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
            ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
                self.0.delete_stream(locations)
            }
            fn list(
                &self,
                prefix: Option<&Path>,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
            {
                self.0.list(prefix)
            }
            async fn list_with_delimiter(
                &self,
                prefix: Option<&Path>,
            ) -> object_store::Result<object_store::ListResult> {
                self.0.list_with_delimiter(prefix).await
            }
            async fn copy_opts(
                &self,
                from: &Path,
                to: &Path,
                options: object_store::CopyOptions,
            ) -> object_store::Result<()> {
                self.0.copy_opts(from, to, options).await
            }
        }
        let err = check_conditional_create(&Overwrites(InMemory::new()), "s3://lenient")
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreUrlError::NoConditionalCreate { .. }),
            "{err}"
        );
    }
}
