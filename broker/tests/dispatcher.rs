//! The webhook dispatcher (issue 8) against real HTTP receivers (`weir_tests::receiver`): Kafka
//! records in, signed HTTP requests out; failures classified, retried on schedule, dead-lettered;
//! a hanging endpoint does not slow a healthy one; per-key order holds through retries; a
//! dispatcher killed with SIGKILL loses nothing; the SSRF guard; secrets encrypted at rest.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use common::InProcess;
use common::dispatch::{DispatcherProcess, call, create, produce, produce_events, serve};
use hmac::{Hmac, Mac};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::{Value, json};
use weir_tests::receiver::{Received, Receiver};

/// The Standard Webhooks check, written independently of the dispatcher's code: one of the
/// `v1,` signatures is the base64 HMAC-SHA256 of `id.timestamp.body` under the secret's bytes.
fn verifies(r: &Received, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let id = r.header("webhook-id").unwrap();
    let ts = r.header("webhook-timestamp").unwrap();
    let mut mac = <Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = b64.encode(mac.finalize().into_bytes());
    r.header("webhook-signature")
        .unwrap()
        .split(' ')
        .any(|s| s == format!("v1,{expected}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_and_carry_cloudevents_and_trace_headers() {
    let (node, dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    let endpoint = create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["orders"],
               "event_types": ["order.*"], "headers": {"x-api-key": "k1"}}),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let events: Vec<(String, String, String)> = (0..20)
        .map(|i| {
            (
                format!("k{i}"),
                format!("evt-{i}"),
                format!("{{\"n\":{i}}}"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    produce(
        &node.bootstrap(),
        "orders",
        &refs,
        &[("traceparent", trace)],
    )
    .await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 20)
            .await
    );
    let got = receiver.received();
    assert_eq!(got.len(), 20, "each event once");
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 20, "webhook-id is the event's ce_id");
    for r in &got {
        assert!(verifies(r, &secret), "signature of {r:?}");
        assert_eq!(r.header("ce-type"), Some("order.created"));
        assert_eq!(r.header("ce-source"), Some("/shop"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("traceparent"), Some(trace));
        assert_eq!(r.header("x-api-key"), Some("k1"));
        let n: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.header("webhook-id").unwrap(), format!("evt-{}", n["n"]));
    }
    // Every attempt is a record, readable through the API.
    let ok = || async {
        let (_, a) = call(
            reqwest::Method::GET,
            format!("{admin}/v1/attempts?endpoint_id={id}&limit=1000"),
            None,
        )
        .await;
        a["attempts"].as_array().unwrap().len()
    };
    for _ in 0..100 {
        if ok().await == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ok().await, 20);
    let (_, one) = call(
        reqwest::Method::GET,
        format!("{admin}/v1/attempts?event_id=evt-3"),
        None,
    )
    .await;
    assert_eq!(one["attempts"][0]["status"], 200, "{one}");
    assert_eq!(one["attempts"][0]["outcome"], "delivered");
    // A rotated secret: both the new and the old one sign during the overlap.
    let (status, rotated) = call(
        reqwest::Method::POST,
        format!("{admin}/v1/endpoints/{id}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    produce(
        &node.bootstrap(),
        "orders",
        &[("k", "evt-rotated", "{}")],
        &[],
    )
    .await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 21)
            .await
    );
    let last = receiver.received().pop().unwrap();
    assert_eq!(
        last.header("webhook-signature").unwrap().split(' ').count(),
        2
    );
    assert!(verifies(&last, new_secret) && verifies(&last, &secret));
    // Prometheus metrics of the deliveries, on the admin listener's /metrics.
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let delivered = format!(
        "weir_dispatch_attempts_total{{endpoint=\"{id}\",outcome=\"delivered\",class=\"none\"}} 21"
    );
    assert!(
        metrics.contains(&delivered),
        "{delivered} not in:\n{metrics}"
    );
    assert!(metrics.contains("weir_dispatch_attempt_seconds_bucket{endpoint="));
    assert!(metrics.contains("weir_dispatch_delivery_seconds_count{endpoint="));
    dispatcher.shutdown().await;
    node.server.shutdown().await.unwrap();
}

/// The attempts of one endpoint, oldest first.
fn times(receiver: &Receiver, path: &str) -> Vec<Duration> {
    let got = receiver.on(path);
    got.windows(2).map(|w| w[1].at - w[0].at).collect()
}

async fn dead_letter(admin: &str, endpoint: &str) -> Option<Value> {
    let (_, d) = call(
        reqwest::Method::GET,
        format!("{admin}/v1/dlq?endpoint_id={endpoint}"),
        None,
    )
    .await;
    d["dead_letters"]
        .as_array()
        .and_then(|a| a.first().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified_retried_on_schedule_and_dead_lettered() {
    let (node, dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    // Not a TLS server: answers plain text at once, so the TLS handshake fails.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_url = format!("https://{}/", plain.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = plain.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let mut endpoints = BTreeMap::new();
    let tls = create(
        &admin,
        json!({"url": tls_url, "source_topics": ["events"], "retry_schedule_s": [1]}),
    )
    .await;
    endpoints.insert("tls", (tls["id"].as_str().unwrap().to_owned(), "-"));
    for (name, path, extra) in [
        ("server", "/status/500", json!({"retry_schedule_s": [1, 2]})),
        ("client", "/status/404", json!({})),
        ("gone", "/status/410", json!({})),
        ("throttled", "/throttle/3", json!({"retry_schedule_s": [1]})),
        (
            "timeout",
            "/hang",
            json!({"retry_schedule_s": [1], "timeout_ms": 300}),
        ),
        ("closed", "/close", json!({"retry_schedule_s": [1]})),
        ("conflict", "/status/409", json!({"retry_schedule_s": [1]})),
    ] {
        let mut body = json!({"url": receiver.url(path), "source_topics": ["events"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let e = create(&admin, body).await;
        endpoints.insert(name, (e["id"].as_str().unwrap().to_owned(), path));
    }
    produce(&node.bootstrap(), "events", &[("k", "evt-1", "{}")], &[]).await;
    for (name, (id, _)) in &endpoints {
        let mut found = None;
        for _ in 0..300 {
            found = dead_letter(&admin, id).await;
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found.is_some(), "{name} was dead-lettered");
    }
    let letter = |name: &str| {
        let id = endpoints[name].0.clone();
        let admin = admin.clone();
        async move { dead_letter(&admin, &id).await.unwrap() }
    };
    // 5xx: retried after 1 s and 2 s (± 20% jitter), then exhausted.
    let server = letter("server").await;
    assert_eq!(
        (
            server["attempts"].clone(),
            server["error_class"].clone(),
            server["reason"].clone()
        ),
        (json!(3), json!("server"), json!("exhausted")),
        "{server}"
    );
    assert_eq!(server["last_status"], 500);
    assert_eq!(server["event"]["id"], "evt-1");
    assert_eq!(
        server["event"]["topic"], "events",
        "the payload by reference"
    );
    let gaps = times(&receiver, "/status/500");
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert!(
        gaps[0] >= Duration::from_millis(790) && gaps[0] < Duration::from_secs(4),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(1590) && gaps[1] < Duration::from_secs(5),
        "{gaps:?}"
    );
    // Other 4xx: not retried; 409 (and 408, 425) are.
    let client = letter("client").await;
    assert_eq!(
        (client["attempts"].clone(), client["reason"].clone()),
        (json!(1), json!("not_retryable"))
    );
    assert_eq!(receiver.on("/status/404").len(), 1);
    assert_eq!(receiver.on("/status/409").len(), 2);
    // 410: not retried, and the endpoint is disabled.
    let gone = letter("gone").await;
    assert_eq!(
        (gone["reason"].clone(), gone["error_class"].clone()),
        (json!("endpoint_gone"), json!("gone"))
    );
    let (_, e) = call(
        reqwest::Method::GET,
        format!("{admin}/v1/endpoints/{}", endpoints["gone"].0),
        None,
    )
    .await;
    assert_eq!(e["enabled"], false, "{e}");
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
    // 429 with Retry-After: 3 waits 3 s although the schedule says 1 s.
    assert_eq!(letter("throttled").await["error_class"], "throttled");
    let gaps = times(&receiver, "/throttle/3");
    assert!(
        gaps[0] >= Duration::from_millis(2950),
        "Retry-After honoured: {gaps:?}"
    );
    // No answer within the timeout; the connection closed without an answer.
    assert_eq!(letter("timeout").await["error_class"], "timeout");
    assert_eq!(receiver.on("/hang").len(), 2);
    assert_eq!(letter("closed").await["error_class"], "connect");
    assert_eq!(letter("tls").await["error_class"], "tls");
    // Every attempt was recorded, with its class.
    let (_, a) = call(
        reqwest::Method::GET,
        format!("{admin}/v1/attempts?endpoint_id={}", endpoints["server"].0),
        None,
    )
    .await;
    let attempts = a["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{a}");
    assert!(
        attempts
            .iter()
            .all(|x| x["error_class"] == "server" && x["status"] == 500)
    );
    dispatcher.shutdown().await;
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_slow_a_healthy_one() {
    let (node, dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    create(
        &admin,
        json!({"url": receiver.url("/hang"), "source_topics": ["busy"], "timeout_ms": 5000,
               "max_in_flight": 2, "retry_schedule_s": [60]}),
    )
    .await;
    create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["busy"]}),
    )
    .await;
    produce_events(&node.bootstrap(), "busy", "e", 300, "{}").await;
    // Sharing a pool with the hanging endpoint (2 at a time, 5 s each), 300 events would take 750 s.
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r
                .iter()
                .filter(|x| x.path == "/ok")
                .count()
                >= 300)
            .await,
        "the healthy endpoint got {} of 300",
        receiver.on("/ok").len()
    );
    assert!(
        receiver.on("/hang").len() <= 10,
        "the hanging endpoint holds at most 2 at a time"
    );
    dispatcher.shutdown().await;
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_through_retries() {
    let (node, dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    create(
        &admin,
        json!({"url": receiver.url("/flaky/2"), "source_topics": ["ordered"], "ordering": "key",
               "retry_schedule_s": [1, 1, 1]}),
    )
    .await;
    let events: Vec<(String, String)> = (0..4)
        .flat_map(|i| {
            [
                ("a".to_owned(), format!("a{i}")),
                ("b".to_owned(), format!("b{i}")),
            ]
        })
        .collect();
    let refs: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(k, id)| (k.as_str(), id.as_str(), "{}"))
        .collect();
    produce(&node.bootstrap(), "ordered", &refs, &[]).await;
    // Each event fails twice, then succeeds: 3 requests each.
    let done = |r: &[Received]| {
        events.iter().all(|(_, id)| {
            r.iter()
                .filter(|x| x.header("webhook-id") == Some(id.as_str()))
                .count()
                >= 3
        })
    };
    assert!(
        receiver.wait(Duration::from_secs(60), done).await,
        "{:?}",
        receiver
            .received()
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect::<Vec<_>>()
    );
    let got: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    // The next event of a key is first sent only after the one before it succeeded (its third
    // request). A rebalance may send an event again later (at least once, same webhook-id).
    for key in ["a", "b"] {
        for i in 0..3 {
            let (this, next) = (format!("{key}{i}"), format!("{key}{}", i + 1));
            let third = got
                .iter()
                .enumerate()
                .filter(|(_, id)| **id == this)
                .nth(2)
                .map(|(at, _)| at)
                .unwrap();
            let first_next = got.iter().position(|id| *id == next).unwrap();
            assert!(
                first_next > third,
                "{next} before {this} succeeded: {got:?}"
            );
        }
    }
    dispatcher.shutdown().await;
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_rate_limit_holds() {
    let (node, dispatcher, admin) = serve().await;
    let receiver = Receiver::start().await;
    create(
        &admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["limited"], "rate_limit_per_s": 20}),
    )
    .await;
    produce_events(&node.bootstrap(), "limited", "r", 60, "{}").await;
    assert!(
        receiver
            .wait(Duration::from_secs(30), |r| r.len() >= 60)
            .await
    );
    let got = receiver.received();
    // A bucket of 20 a second (bursting to 20): the 21st to 60th request need 2 s at least.
    let span = got[59].at - got[0].at;
    assert!(
        span >= Duration::from_millis(1900),
        "60 requests in {span:?}"
    );
    for window in got.windows(41) {
        assert!(
            window[40].at - window[0].at >= Duration::from_millis(950),
            "more than 40 requests within a second"
        );
    }
    dispatcher.shutdown().await;
    node.server.shutdown().await.unwrap();
}

/// A `weir dispatcher` process; its admin address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_run_loses_no_delivery() {
    let node = InProcess::start_with(|c| c.dispatcher.enabled = false).await;
    let key = weir_dispatcher::crypto::SecretKey::generate();
    let receiver = Receiver::start().await;
    let first = DispatcherProcess::start(&node.bootstrap(), &key, true);
    create(
        &first.admin,
        json!({"url": receiver.url("/slow/20"), "source_topics": ["stream"], "max_in_flight": 4}),
    )
    .await;
    produce_events(&node.bootstrap(), "stream", "s", 1500, "{}").await;
    assert!(
        receiver
            .wait(Duration::from_secs(60), |r| r.len() >= 300)
            .await
    );
    first.kill9();
    let before = receiver.received().len();
    assert!(before < 1500, "killed mid-run ({before} delivered)");
    let second = DispatcherProcess::start(&node.bootstrap(), &key, true);
    let all = |r: &[Received]| {
        r.iter()
            .map(|x| x.header("webhook-id").unwrap_or_default().to_owned())
            .collect::<HashSet<String>>()
            .len()
            >= 1500
    };
    assert!(
        receiver.wait(Duration::from_secs(120), all).await,
        "every event delivered after the kill: {} distinct of 1500",
        receiver
            .received()
            .iter()
            .map(|x| x.header("webhook-id").unwrap_or_default().to_owned())
            .collect::<HashSet<String>>()
            .len()
    );
    // `weir dispatcher` serves its metrics too.
    let metrics = reqwest::get(format!("{}/metrics", second.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("weir_dispatch_attempts_total{endpoint="),
        "{metrics}"
    );
    drop(second);
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_loopback_targets_unless_allowed_and_secrets_are_encrypted() {
    let node = InProcess::start_with(|c| c.dispatcher.enabled = false).await;
    let key = weir_dispatcher::crypto::SecretKey::generate();
    let receiver = Receiver::start().await;
    let dispatcher = DispatcherProcess::start(&node.bootstrap(), &key, false);
    let (status, bad) = call(
        reqwest::Method::POST,
        format!("{}/v1/endpoints", dispatcher.admin),
        Some(json!({"url": "ftp://example.com/", "source_topics": ["x"]})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().starts_with("url"), "{bad}");
    let endpoint = create(
        &dispatcher.admin,
        json!({"url": receiver.url("/ok"), "source_topics": ["internal"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    produce(
        &node.bootstrap(),
        "internal",
        &[("k", "evt-ssrf", "{}")],
        &[],
    )
    .await;
    let mut letter = None;
    for _ in 0..300 {
        letter = dead_letter(&dispatcher.admin, id).await;
        if letter.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let letter = letter.expect("dead-lettered");
    assert_eq!(
        (letter["error_class"].clone(), letter["reason"].clone()),
        (json!("blocked"), json!("not_retryable"))
    );
    assert!(
        receiver.received().is_empty(),
        "nothing reached the loopback target"
    );
    // The secret is nowhere in clear in the config topic.
    let secret = endpoint["secret"].as_str().unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "config-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["weir.dispatch.config"]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    let value = String::from_utf8_lossy(record.payload().unwrap()).into_owned();
    assert!(
        value.contains(id) && value.contains("\"sealed\":\"v1:"),
        "{value}"
    );
    assert!(
        !value.contains(&secret["whsec_".len()..]),
        "secret in clear: {value}"
    );
    drop(dispatcher);
    node.server.shutdown().await.unwrap();
}
