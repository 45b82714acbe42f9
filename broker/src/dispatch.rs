//! The webhook dispatcher inside a broker process (`weir serve`; `weir broker` when configured):
//! a Kafka client of this very broker, its API on the admin listener.

use std::path::Path;

use weir_dispatcher::{Dispatcher, DispatcherConfig};

use crate::{ServeConfig, Server};

/// Starts the dispatcher of `weir serve` next to `server`: it reads through the server's own Kafka
/// listener, keeps its secret key in the data directory if none is configured, and may call
/// loopback targets unless `dispatcher.allow_cidrs` says otherwise. `None` when disabled.
pub async fn start_in_serve(
    server: &Server,
    config: &ServeConfig,
) -> anyhow::Result<Option<Dispatcher>> {
    let mut d = config.dispatcher.clone();
    if !d.enabled {
        return Ok(None);
    }
    if d.secret_key.is_none() {
        d.secret_key = Some(key_file(&config.data_dir.join("dispatcher.key"))?);
    }
    if d.allow_cidrs.is_none() {
        tracing::info!(
            "dispatcher: loopback targets allowed (127.0.0.0/8, ::1), as weir serve is a \
             development setup; set dispatcher.allow_cidrs = [] to deny them"
        );
        d.allow_cidrs = Some(vec![
            "127.0.0.0/8".parse().expect("a CIDR"),
            "::1/128".parse().expect("a CIDR"),
        ]);
    }
    start(server, d).await.map(Some)
}

/// Starts the dispatcher of a cluster broker, if `dispatcher.secret_key` is set (every broker's
/// dispatcher must decrypt the same endpoint secrets).
pub async fn start_in_broker(
    server: &Server,
    config: &ServeConfig,
) -> anyhow::Result<Option<Dispatcher>> {
    let d = config.dispatcher.clone();
    if !d.enabled {
        return Ok(None);
    }
    if d.secret_key.is_none() {
        tracing::info!(
            "dispatcher not started: set dispatcher.secret_key (the same on every broker) to run it"
        );
        return Ok(None);
    }
    start(server, d).await.map(Some)
}

async fn start(server: &Server, mut config: DispatcherConfig) -> anyhow::Result<Dispatcher> {
    config.bootstrap = server.plaintext_kafka_addr().to_string();
    // Webhooks never reach this broker's own APIs (admin, Kafka, gRPC) on a local address.
    config.own_ports = server
        .kafka_addrs()
        .into_iter()
        .chain([server.admin_addr()])
        .chain(server.rpc_addr())
        .map(|a| a.port())
        .collect();
    if !config.kafka.contains_key("security.protocol") {
        config.kafka.extend(server.in_process_client_properties());
    }
    let dispatcher = Dispatcher::start(config).await?;
    server.mount_admin(dispatcher.router());
    Ok(dispatcher)
}

/// The key in `path`, made (32 random bytes, base64, readable only by this user) if missing.
fn key_file(path: &Path) -> anyhow::Result<String> {
    crate::security::secret_file(path, "the dispatcher key", || {
        tracing::warn!(
            path = %path.display(),
            "dispatcher.secret_key not set: generated one (endpoint secrets are encrypted with \
             it; keep the file with the data)"
        );
        weir_dispatcher::crypto::SecretKey::generate()
    })
}
