//! The `weir` binary as a user runs it: kcat (Debian's, librdkafka 2.0.2) against it, and a graceful
//! SIGTERM that uploads everything before exiting.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Process;

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run kcat ({e}); install it with `apt-get install kcat`")
        });
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// kcat lists metadata, produces and consumes. Needs the `kcat` package: `.ci/run` installs it and
/// sets `WEIR_TEST_KCAT=1`; elsewhere the test says how to run it and passes without running.
#[test]
fn kcat_lists_produces_and_consumes() {
    if std::env::var_os("WEIR_TEST_KCAT").is_none() {
        eprintln!("kcat test not run: install kcat and set WEIR_TEST_KCAT=1 (.ci/run does both)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let weir = Process::start(dir.path());
    let b = weir.kafka.to_string();
    let input: String = (0..100).map(|i| format!("key{i}:value {i}\n")).collect();
    kcat(
        &["-b", &b, "-P", "-t", "kcat-topic", "-K:", "-z", "snappy"],
        Some(&input),
    );
    let listed = kcat(&["-b", &b, "-L"], None);
    assert!(
        listed.contains("topic \"kcat-topic\" with 1 partitions"),
        "{listed}"
    );
    let consumed = kcat(
        &[
            "-b",
            &b,
            "-C",
            "-t",
            "kcat-topic",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %k=%s\\n",
        ],
        None,
    );
    let expected: String = (0..100)
        .map(|i| format!("{i} key{i}=value {i}\n"))
        .collect();
    assert_eq!(consumed, expected);
    let tail = kcat(
        &[
            "-b",
            &b,
            "-C",
            "-t",
            "kcat-topic",
            "-o",
            "-2",
            "-e",
            "-f",
            "%o %k=%s\\n",
        ],
        None,
    );
    assert_eq!(tail, "98 key98=value 98\n99 key99=value 99\n");
}

/// SIGTERM drains and uploads: after a clean exit, the data is in objects, so it survives even the
/// loss of the WAL directory.
#[test]
fn sigterm_uploads_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Process::start(dir.path());
    let b = weir.kafka.to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .create()
            .unwrap();
        for i in 0..50 {
            let v = format!("v{i}");
            producer
                .send(
                    FutureRecord::<(), _>::to("graceful")
                        .payload(&v)
                        .partition(0),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
    let pid = i32::try_from(weir.child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child we spawned and still own; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut weir = weir;
    let status = weir.child.wait().unwrap();
    assert!(status.success(), "weir exited with {status}");
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();

    let weir = Process::start(dir.path());
    let b = weir.kafka.to_string();
    let got = runtime.block_on(async {
        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", "graceful")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create()
            .unwrap();
        consumer
            .fetch_watermarks("graceful", 0, Duration::from_secs(10))
            .unwrap()
    });
    assert_eq!(got, (0, 50), "every record came back from objects alone");
}
