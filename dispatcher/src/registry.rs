//! The endpoints in force: the compacted `weir.dispatch.config` topic read into memory (every
//! dispatcher instance reads all of it), with their secrets decrypted for signing.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio::sync::watch;

use crate::crypto::SecretKey;
use crate::endpoint::{Endpoint, StoredEndpoint};

/// An endpoint ready to deliver to.
#[derive(Debug, Clone)]
pub struct Live {
    pub endpoint: Endpoint,
    /// Secrets that sign now (current first), in clear.
    pub secrets: Vec<(String, Option<i64>)>,
    /// As stored.
    pub stored: StoredEndpoint,
}

impl Live {
    /// The secrets that still sign at `now_ms`.
    pub fn signing_secrets(&self, now_ms: i64) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(move |(_, until)| until.is_none_or(|t| t > now_ms))
            .map(|(s, _)| s.as_str())
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Registry {
    endpoints: RwLock<HashMap<String, Arc<Live>>>,
    key: SecretKey,
    /// Bumped on every change.
    version: watch::Sender<u64>,
}

impl Registry {
    /// An empty registry decrypting secrets with `key`.
    pub fn new(key: SecretKey) -> Arc<Registry> {
        Arc::new(Registry {
            endpoints: RwLock::new(HashMap::new()),
            key,
            version: watch::channel(0).0,
        })
    }

    /// Applies one record of the config topic.
    pub fn apply(&self, record: &BorrowedMessage<'_>) {
        let Some(id) = record.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        let live = match record.payload() {
            None => None,
            Some(value) => match serde_json::from_slice::<StoredEndpoint>(value) {
                Ok(stored) => match self.open(stored) {
                    Ok(live) => Some(Arc::new(live)),
                    Err(e) => {
                        tracing::error!(endpoint = id, error = %e, "endpoint secret unreadable; endpoint skipped");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(endpoint = id, error = %e, "malformed endpoint record skipped");
                    return;
                }
            },
        };
        {
            let mut all = self
                .endpoints
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            match live {
                Some(live) => all.insert(id.to_owned(), live),
                None => all.remove(id),
            };
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn open(&self, stored: StoredEndpoint) -> Result<Live, crate::crypto::SecretError> {
        let secrets = stored
            .secrets
            .iter()
            .map(|s| Ok((self.key.open(&s.sealed)?, s.expires_at_ms)))
            .collect::<Result<_, _>>()?;
        Ok(Live {
            endpoint: stored.endpoint.clone(),
            secrets,
            stored,
        })
    }

    /// The endpoint `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Every endpoint, by id.
    pub fn all(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<Arc<Live>> = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.endpoint.id.cmp(&b.endpoint.id));
        all
    }

    /// Changes as they happen.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The key sealing secrets.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }
}
