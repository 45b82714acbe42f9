//! The dispatcher's test helpers: `weir serve` with its dispatcher in this process, admin API
//! calls, producing CloudEvents-style records.

use std::io::BufRead;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use weir_dispatcher::Dispatcher;

use super::InProcess;

/// `weir serve` in this process with its dispatcher (short retry tiers for the tests).
pub async fn serve() -> (InProcess, Dispatcher, String) {
    serve_with(|_| {}).await
}

/// [`serve`] with more settings.
pub async fn serve_with(
    tweak: impl FnOnce(&mut weir_dispatcher::DispatcherConfig),
) -> (InProcess, Dispatcher, String) {
    let mut config = None;
    let node = InProcess::start_with(|c| {
        c.dispatcher.retry_tiers_s = vec![1, 2, 60];
        c.dispatcher.topic_partitions = 2;
        c.dispatcher.breaker_failures = 1000;
        tweak(&mut c.dispatcher);
        config = Some(c.clone());
    })
    .await;
    let dispatcher = weir_broker::dispatch::start_in_serve(&node.server, &config.unwrap())
        .await
        .unwrap()
        .unwrap();
    let admin = format!("http://{}", node.server.admin_addr());
    (node, dispatcher, admin)
}

pub async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    call_as(None, method, url, body).await
}

/// [`call`] with a bearer token.
pub async fn call_as(
    token: Option<&str>,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn create(admin: &str, body: Value) -> Value {
    let (status, answer) = call(
        reqwest::Method::POST,
        format!("{admin}/v1/endpoints"),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    answer
}

pub async fn produce(
    bootstrap: &str,
    topic: &str,
    events: &[(&str, &str, &str)],
    extra: &[(&str, &str)],
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut sends = Vec::new();
    for (key, id, body) in events {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some(*id),
            })
            .insert(Header {
                key: "ce_type",
                value: Some("order.created"),
            })
            .insert(Header {
                key: "ce_source",
                value: Some("/shop"),
            });
        for (k, v) in extra {
            headers = headers.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        sends.push(
            producer.send(
                FutureRecord::to(topic)
                    .key(*key)
                    .payload(*body)
                    .headers(headers),
                Duration::from_secs(10),
            ),
        );
    }
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
}

/// A `weir dispatcher` process (short retry tiers, 4 partitions per topic); killed on drop.
pub struct DispatcherProcess {
    child: std::process::Child,
    pub admin: String,
}

impl DispatcherProcess {
    pub fn start(bootstrap: &str, key: &str, allow_loopback: bool) -> DispatcherProcess {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .args([
                "dispatcher",
                "--bootstrap",
                bootstrap,
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("WEIR_DISPATCHER__SECRET_KEY", key)
            .env("WEIR_DISPATCHER__RETRY_TIERS_S", "[1, 2]")
            .env("WEIR_DISPATCHER__TOPIC_PARTITIONS", "4")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        if allow_loopback {
            command.env("WEIR_DISPATCHER__ALLOW_CIDRS", "[\"127.0.0.0/8\"]");
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let admin = line
            .trim()
            .strip_prefix("weir dispatcher serving admin=")
            .unwrap_or_else(|| panic!("weir dispatcher did not start: {line:?}"))
            .to_owned();
        DispatcherProcess {
            child,
            admin: format!("http://{admin}"),
        }
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for DispatcherProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `n` events with keys `k<i>`, ids `<prefix><i>` and `body`.
pub async fn produce_events(bootstrap: &str, topic: &str, prefix: &str, n: usize, body: &str) {
    let list: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k{i}"), format!("{prefix}{i}")))
        .collect();
    let refs: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|(k, id)| (k.as_str(), id.as_str(), body))
        .collect();
    produce(bootstrap, topic, &refs, &[]).await;
}
