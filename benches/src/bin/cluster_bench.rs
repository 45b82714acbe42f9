//! `cluster-bench`: partition moves and broker failover on a Weir cluster, measured as a client
//! sees them. A probe producer (acks=all, no batching) sends a small record to each partition every
//! few milliseconds; unavailability is the longest gap between successful acknowledgements around
//! an event.
//!
//! - `cluster-bench moves --bootstrap B --admin HOST:PORT --topic T --partition P --moves 100`:
//!   moves partition P to another broker (`POST /v1/cluster/reassign`), waits until the new owner
//!   holds it, pauses, repeats; reports the move time (request to new owner recorded) and the
//!   producer's unavailability, p50/p99/max.
//! - `cluster-bench failover --bootstrap B --admin HOST:PORT --topic T --kill-pid PID`: probes every
//!   partition, kills the broker `PID` with SIGKILL, and reports how long until every partition
//!   acknowledges writes again (the slowest partition) and the median partition.
//! - `cluster-bench join --admin HOST:PORT --topic T --broker N [--timeout S] [--settle S]`: waits
//!   for broker N to join, then reports how long until the balancer has given it its share of T's
//!   partitions (T under an even load, e.g. from `weir-bench produce --rate`), and how many of them
//!   move again in the `--settle` seconds after (default 60).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Prints librdkafka's log with the wall-clock time, so that a run with `CLUSTER_BENCH_DEBUG`
/// (librdkafka `debug` contexts, e.g. `broker,topic,metadata`) lines up with the brokers' logs.
struct StderrLog;

impl ClientContext for StderrLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!(
            "{}.{:03} {level:?} {fac} {log_message}",
            now.as_secs(),
            now.subsec_millis()
        );
    }
}

/// Acknowledged probes: partition → (sent, acknowledged).
type Acks = Arc<Mutex<BTreeMap<i32, Vec<(Instant, Instant)>>>>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn http(admin: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut conn) = TcpStream::connect(admin) else {
        return (0, String::new());
    };
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Partition → (owner, target) of `topic`, and the live brokers that may take partitions.
fn cluster(admin: &str, topic: &str) -> (BTreeMap<i32, (u64, u64)>, Vec<u64>) {
    let (_, body) = http(admin, "GET", "/v1/cluster", "");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let partitions = view["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["topic"] == topic)
        .map(|p| {
            (
                p["partition"].as_i64().unwrap() as i32,
                (p["owner"].as_u64().unwrap(), p["target"].as_u64().unwrap()),
            )
        })
        .collect();
    let brokers = view["brokers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["fenced"] == false && b["drained"] == false)
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    (partitions, brokers)
}

/// Sends one small record to each of `partitions` every `every` until `stop`.
fn spawn_probe(
    runtime: &tokio::runtime::Runtime,
    bootstrap: &str,
    topic: &str,
    partitions: Vec<i32>,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Acks {
    let acks: Acks = Arc::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "10")
        .set("retry.backoff.max.ms", "50")
        .set("topic.metadata.refresh.fast.interval.ms", "10");
    if let Ok(debug) = std::env::var("CLUSTER_BENCH_DEBUG") {
        config
            .set("debug", debug)
            .set_log_level(RDKafkaLogLevel::Debug);
    }
    let producer: FutureProducer<StderrLog> = config.create_with_context(StderrLog).unwrap();
    let topic = topic.to_owned();
    let out = acks.clone();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            for &p in &partitions {
                let producer = producer.clone();
                let topic = topic.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let record = FutureRecord::<(), [u8]>::to(&topic)
                        .payload(&[0u8; 100][..])
                        .partition(p);
                    if producer.send(record, Duration::from_secs(60)).await.is_ok() {
                        let acked = Instant::now();
                        out.lock()
                            .unwrap()
                            .entry(p)
                            .or_default()
                            .push((sent, acked));
                    }
                });
            }
        }
    });
    acks
}

/// The longest gap between consecutive acknowledgements of `partition` within `[from, to]`.
fn longest_gap(acks: &Acks, partition: i32, from: Instant, to: Instant) -> Duration {
    let acks = acks.lock().unwrap();
    let mut times: Vec<Instant> = acks
        .get(&partition)
        .into_iter()
        .flatten()
        .map(|(_, acked)| *acked)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.sort();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(to - from)
}

fn percentiles(values: Vec<Duration>) -> String {
    weir_benches::stats::percentiles(values, 0)
}

fn moves(args: &[String]) {
    let bootstrap = arg(args, "--bootstrap").expect("--bootstrap");
    let admin = arg(args, "--admin").expect("--admin HOST:PORT");
    let topic = arg(args, "--topic").expect("--topic");
    let partition: i32 = arg(args, "--partition").map_or(0, |p| p.parse().unwrap());
    let count: usize = arg(args, "--moves").map_or(100, |p| p.parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = spawn_probe(
        &runtime,
        &bootstrap,
        &topic,
        vec![partition],
        Duration::from_millis(2),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut move_times = Vec::new();
    let mut gaps = Vec::new();
    for i in 0..count {
        let (partitions, brokers) = cluster(&admin, &topic);
        let owner = partitions[&partition].0;
        let target = *brokers
            .iter()
            .find(|b| **b != owner && (i % 2 == 0 || **b > owner))
            .or_else(|| brokers.iter().find(|b| **b != owner))
            .expect("another broker");
        let before = Instant::now();
        let body = format!(r#"{{"topic":"{topic}","partition":{partition},"broker":{target}}}"#);
        let (status, answer) = http(&admin, "POST", "/v1/cluster/reassign", &body);
        assert_eq!(status, 200, "reassign: {answer}");
        loop {
            let (partitions, _) = cluster(&admin, &topic);
            if partitions[&partition] == (target, 0) {
                break;
            }
            assert!(
                before.elapsed() < Duration::from_secs(30),
                "move {i} did not finish"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        move_times.push(before.elapsed());
        // Let the probe find the new leader and settle before the next move.
        std::thread::sleep(Duration::from_millis(1500));
        gaps.push(longest_gap(
            &acks,
            partition,
            before - Duration::from_millis(100),
            Instant::now(),
        ));
        eprintln!(
            "move {i}: {owner} -> {target} in {:?}, longest gap {:?}",
            move_times[i], gaps[i]
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("moves of {topic}/{partition}: {count}");
    println!(
        "move time (request to new owner): {}",
        percentiles(move_times)
    );
    println!(
        "producer unavailability (longest gap between acks): {}",
        percentiles(gaps)
    );
}

fn failover(args: &[String]) {
    let bootstrap = arg(args, "--bootstrap").expect("--bootstrap");
    let admin = arg(args, "--admin").expect("--admin HOST:PORT");
    let topic = arg(args, "--topic").expect("--topic");
    let pid = arg(args, "--kill-pid").expect("--kill-pid");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (partitions, _) = cluster(&admin, &topic);
    let all: Vec<i32> = partitions.keys().copied().collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = spawn_probe(
        &runtime,
        &bootstrap,
        &topic,
        all.clone(),
        Duration::from_millis(10),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "kill -9 {pid} at {}.{:03}",
        wall.as_secs(),
        wall.subsec_millis()
    );
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    // Each partition: time from the kill to the first acknowledgement of a record sent after it.
    let deadline = killed + Duration::from_secs(120);
    let mut back: BTreeMap<i32, Duration> = BTreeMap::new();
    while back.len() < all.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let acks = acks.lock().unwrap();
        for p in &all {
            if back.contains_key(p) {
                continue;
            }
            if let Some((_, acked)) = acks
                .get(p)
                .into_iter()
                .flatten()
                .filter(|(sent, _)| *sent > killed)
                .min_by_key(|(_, acked)| *acked)
            {
                back.insert(*p, *acked - killed);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (after, _) = cluster(&admin, &topic);
    let moved: Vec<i32> = partitions
        .iter()
        .filter(|(p, (owner, _))| after.get(p).is_some_and(|(o, _)| o != owner))
        .map(|(p, _)| *p)
        .collect();
    println!(
        "failover of {topic}: {} of {} partitions served again, {} of them moved",
        back.len(),
        all.len(),
        moved.len()
    );
    for (p, took) in &back {
        let owner = partitions.get(p).map_or(0, |(owner, _)| *owner);
        eprintln!("partition {p} (led by {owner} before the kill): back after {took:?}");
    }
    let times = |of_moved: bool| -> Vec<Duration> {
        back.iter()
            .filter(|(p, _)| moved.contains(p) == of_moved)
            .map(|(_, t)| *t)
            .collect()
    };
    println!(
        "kill -9 to acknowledged writes again, the killed broker's partitions: {}",
        percentiles(times(true))
    );
    println!(
        "                                      the other partitions: {}",
        percentiles(times(false))
    );
}

/// Waits for broker `--broker` to appear in the cluster, then until it leads its share of the
/// partitions of `--topic` (all of them written at the same rate by a load generator): every live
/// broker leads between floor(P/N) and ceil(P/N) of them and nothing is moving. Prints both times.
fn join(args: &[String]) {
    let admin = arg(args, "--admin").expect("--admin HOST:PORT");
    let topic = arg(args, "--topic").expect("--topic");
    let broker: u64 = arg(args, "--broker")
        .expect("--broker N")
        .parse()
        .expect("a broker id");
    let timeout = Duration::from_secs(
        arg(args, "--timeout").map_or(300, |t| t.parse().expect("--timeout in seconds")),
    );
    let settle = Duration::from_secs(
        arg(args, "--settle").map_or(60, |t| t.parse().expect("--settle in seconds")),
    );
    let start = Instant::now();
    let mut joined = None;
    let mut first_partition = None;
    let mut last = None;
    while start.elapsed() < timeout {
        let (partitions, live) = cluster(&admin, &topic);
        if joined.is_none() && live.contains(&broker) {
            joined = Some(Instant::now());
            println!("broker {broker} joined; waiting for it to take its share of {topic}");
        }
        if let Some(at) = joined {
            let mut led: BTreeMap<u64, usize> = live.iter().map(|b| (*b, 0)).collect();
            for (owner, _) in partitions.values() {
                *led.entry(*owner).or_default() += 1;
            }
            let moving = partitions.values().any(|(_, target)| *target != 0);
            let (low, high) = (
                partitions.len() / live.len(),
                partitions.len().div_ceil(live.len()),
            );
            if last.as_ref() != Some(&led) {
                eprintln!("{:>8.1?} partitions per broker {led:?}", at.elapsed());
                last = Some(led.clone());
            }
            if first_partition.is_none() && led.get(&broker).is_some_and(|n| *n > 0) {
                first_partition = Some(at.elapsed());
            }
            if !moving && led.values().all(|n| (low..=high).contains(n)) {
                println!(
                    "broker {broker}: first partition after {:?}, its share ({} of {} partitions; \
                     per broker {led:?}) after {:?}",
                    first_partition.unwrap_or_default(),
                    led[&broker],
                    partitions.len(),
                    at.elapsed()
                );
                // Then the balancer should leave a balanced cluster alone.
                let balanced = partitions;
                let watch = Instant::now();
                let mut moved = std::collections::BTreeSet::new();
                while watch.elapsed() < settle {
                    std::thread::sleep(Duration::from_millis(200));
                    let (now, _) = cluster(&admin, &topic);
                    for (p, (owner, _)) in &now {
                        if balanced.get(p).is_some_and(|(o, _)| o != owner) {
                            moved.insert(*p);
                        }
                    }
                }
                println!(
                    "then {} partitions of {topic} moved in the next {settle:?}",
                    moved.len()
                );
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("broker {broker} did not take its share within {timeout:?}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("moves") => moves(&args),
        Some("failover") => failover(&args),
        Some("join") => join(&args),
        _ => eprintln!(
            "usage: cluster-bench moves|failover|join --bootstrap B --admin HOST:PORT --topic T ..."
        ),
    }
}
