//! `dispatch-bench`: the webhook dispatcher of a running `weir serve` (or `weir dispatcher`), measured
//! from outside: events produced with librdkafka, delivered to a receiver in this process
//! (`weir_tests::receiver`, 127.0.0.1), endpoints made through the admin API.
//!
//! - `dispatch-bench throughput --bootstrap B --admin HOST:PORT [--events 50000]`: writes the events
//!   to a topic whose endpoint is disabled, enables it, and reports deliveries per second from the
//!   first delivery to the last (every attempt is recorded in `weir.dispatch.attempts` as usual).
//! - `dispatch-bench latency --bootstrap B --admin HOST:PORT [--rate 1000] [--seconds 30]
//!   [--hanging]`: produces at a fixed rate and reports the latency from the produce call (the
//!   append's start, so its acks=all round trip is included) to the request reaching the receiver,
//!   p50/p99/max; with `--hanging`, a second endpoint on the same topic never answers (timeout 1 s).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir_tests::receiver::Receiver;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn admin(method: reqwest::Method, url: String, body: serde_json::Value) -> serde_json::Value {
    let answer = reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let value: serde_json::Value = answer.json().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {value}");
    value
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .set("acks", "all")
        .create()
        .unwrap()
}

fn record<'a>(topic: &'a str, id: &'a str, body: &'a [u8]) -> FutureRecord<'a, str, [u8]> {
    FutureRecord::to(topic)
        .key(id)
        .payload(body)
        .headers(OwnedHeaders::new().insert(Header {
            key: "ce_id",
            value: Some(id),
        }))
}

fn percentiles(values: Vec<Duration>) -> String {
    weir_benches::stats::percentiles(values, 1)
}

async fn throughput(args: &[String]) {
    let bootstrap = arg(args, "--bootstrap").expect("--bootstrap");
    let base = format!("http://{}", arg(args, "--admin").expect("--admin"));
    let events: usize = arg(args, "--events").map_or(50_000, |n| n.parse().unwrap());
    let receiver = Receiver::start().await;
    let topic = format!("bench-{}", std::process::id());
    let endpoint = admin(
        reqwest::Method::POST,
        format!("{base}/v1/endpoints"),
        serde_json::json!({"url": receiver.url("/ok"), "source_topics": [topic],
                           "max_in_flight": 128, "enabled": false}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let producer = producer(&bootstrap);
    let body = vec![b'x'; 300];
    let ids: Vec<String> = (0..events).map(|i| format!("t{i}")).collect();
    let mut sends = Vec::new();
    for id in &ids {
        sends.push(producer.send(record(&topic, id, &body), Duration::from_secs(30)));
    }
    for s in futures::future::join_all(sends).await {
        s.unwrap();
    }
    println!("{events} events of 300 bytes written to {topic}; enabling the endpoint");
    admin(
        reqwest::Method::PATCH,
        format!("{base}/v1/endpoints/{id}"),
        serde_json::json!({"enabled": true}),
    )
    .await;
    assert!(
        receiver
            .wait(Duration::from_secs(600), |r| r.len() >= events)
            .await,
        "not all delivered"
    );
    let got = receiver.received();
    let span = got[events - 1].at - got[0].at;
    println!(
        "delivered {events} in {:.2} s from the first delivery: {:.0} deliveries/s",
        span.as_secs_f64(),
        events as f64 / span.as_secs_f64()
    );
}

async fn latency(args: &[String]) {
    let bootstrap = arg(args, "--bootstrap").expect("--bootstrap");
    let base = format!("http://{}", arg(args, "--admin").expect("--admin"));
    let rate: u64 = arg(args, "--rate").map_or(1000, |n| n.parse().unwrap());
    let seconds: u64 = arg(args, "--seconds").map_or(30, |n| n.parse().unwrap());
    let hanging = args.iter().any(|a| a == "--hanging");
    let receiver = Receiver::start().await;
    let topic = format!("bench-latency-{}", std::process::id());
    admin(
        reqwest::Method::POST,
        format!("{base}/v1/endpoints"),
        serde_json::json!({"url": receiver.url("/ok"), "source_topics": [topic]}),
    )
    .await;
    if hanging {
        admin(
            reqwest::Method::POST,
            format!("{base}/v1/endpoints"),
            serde_json::json!({"url": receiver.url("/hang"), "source_topics": [topic],
                               "timeout_ms": 1000}),
        )
        .await;
    }
    let producer = producer(&bootstrap);
    // Warm up: the first event waits for the dispatcher to join the group and read the topic.
    producer
        .send(record(&topic, "warm", b"{}"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        receiver
            .wait(Duration::from_secs(60), |r| r
                .iter()
                .any(|x| x.path == "/ok"))
            .await
    );
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    // The produce round trips (acks=all), to tell the broker's part of the tail from the rest.
    let acked: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // When each append was acknowledged: the event is in the log from then on.
    let appended: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = rate * seconds;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut pending = Vec::new();
    for i in 0..total {
        let due = start + every.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("l{i}");
        sent.lock().unwrap().insert(id.clone(), Instant::now());
        let producer = producer.clone();
        let topic = topic.clone();
        let acked = acked.clone();
        let appended = appended.clone();
        pending.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = producer
                .send(record(&topic, &id, b"{}"), Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e);
            acked.lock().unwrap().push(started.elapsed());
            appended.lock().unwrap().insert(id, Instant::now());
            result
        }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    let want = usize::try_from(total).unwrap();
    assert!(
        receiver
            .wait(Duration::from_secs(60), |r| r
                .iter()
                .filter(|x| x.path == "/ok")
                .count()
                > want)
            .await
    );
    let sent = sent.lock().unwrap();
    let appended = appended.lock().unwrap();
    let delivered = receiver.on("/ok");
    let since = |at: &HashMap<String, Instant>| -> Vec<Duration> {
        delivered
            .iter()
            .filter_map(|r| {
                let id = r.header("webhook-id")?;
                // A delivery can reach the receiver before the producer hears of its ack: 0.
                at.get(id).map(|s| r.at.saturating_duration_since(*s))
            })
            .collect()
    };
    let latencies = since(&sent);
    println!(
        "{rate} events/s for {seconds} s{}: produce call to delivery {}",
        if hanging {
            ", a second endpoint that never answers"
        } else {
            ""
        },
        percentiles(latencies)
    );
    println!(
        "  of which the produce round trip (acks=all): {}",
        percentiles(acked.lock().unwrap().clone())
    );
    println!(
        "  append acknowledged to delivery: {}",
        percentiles(since(&appended))
    );
    if hanging {
        println!(
            "the hanging endpoint got {} requests",
            receiver.on("/hang").len()
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("throughput") => throughput(&args).await,
        Some("latency") => latency(&args).await,
        _ => eprintln!(
            "usage: dispatch-bench throughput|latency --bootstrap B --admin HOST:PORT ..."
        ),
    }
}
