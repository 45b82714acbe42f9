//! Test harness: a `weir serve` node in this process, or the `weir` binary as a child process, on
//! ports chosen by the OS on 127.0.0.1.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use weir_broker::{ServeConfig, Server};

pub mod dispatch;
pub mod scenarios;

/// A node served in this process.
pub struct InProcess {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl InProcess {
    pub async fn start() -> InProcess {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> InProcess {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(config(dir.path(), tweak)).await.unwrap();
        InProcess { server, dir }
    }

    pub fn bootstrap(&self) -> String {
        self.server.kafka_addr().to_string()
    }
}

pub fn config(dir: &Path, tweak: impl FnOnce(&mut ServeConfig)) -> ServeConfig {
    let mut config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..ServeConfig::default()
    };
    config.wal.segment_bytes = 8 << 20;
    config.wal.max_record_bytes = 4 << 20;
    config.group_initial_rebalance_delay_ms = 0;
    config.offsets_topic_partitions = 8;
    config.transaction_state_partitions = 4;
    tweak(&mut config);
    config
}

/// Logs to the test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The `weir` binary running `serve` as a child process.
pub struct Process {
    pub child: Child,
    pub kafka: SocketAddr,
    pub admin: SocketAddr,
}

impl Process {
    /// Starts `weir serve` on ports the OS picks (port 0) and reads the bound addresses from the
    /// line it prints, so no port is chosen here and then taken by someone else before the bind.
    pub fn start(dir: &Path) -> Process {
        Self::start_with(dir, &[], &[])
    }

    /// [`Process::start`] with more arguments to `weir serve` and more environment variables.
    pub fn start_with(dir: &Path, args: &[&str], env: &[(String, String)]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "warn")
            // Test settings, not broker settings (the broker warns about unknown WEIR_* variables).
            .env_remove("WEIR_S3_TESTS")
            .env_remove("WEIR_WEED")
            .env_remove("WEIR_TEST_KCAT")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("weir serve did not start: {line:?}"))
                .parse()
                .unwrap()
        };
        let process = Process {
            kafka: addr("kafka="),
            admin: addr("admin="),
            child,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(self.admin) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /health/ready HTTP/1.0\r\n\r\n");
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                if text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("weir serve did not become ready on {}", self.admin);
    }

    /// SIGTERM (a graceful shutdown: everything acknowledged is uploaded) and wait for the exit, which
    /// must be a success.
    pub fn stop(mut self) {
        // SAFETY: signals a child process this handle owns and has not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "cannot signal weir serve");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "weir serve exited with {status} after SIGTERM"
        );
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw Kafka protocol connection, for requests no client library sends.
pub struct Raw {
    pub stream: TcpStream,
    pub correlation: i32,
    /// Correlation ids of the requests sent and not answered yet, oldest first.
    sent: std::collections::VecDeque<i32>,
}

impl Raw {
    pub fn connect(node: &InProcess) -> Raw {
        Self::connect_to(node.server.kafka_addr())
    }

    pub fn connect_to(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            correlation: 0,
            sent: std::collections::VecDeque::new(),
        }
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.put_u32(u32::try_from(body.len()).unwrap());
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    /// The next response frame, or `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn request<R: Encodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &R,
    ) -> Option<Bytes> {
        self.send(key, version, request);
        self.receive(key, version)
    }

    /// Sends a request without waiting for its answer (requests can be pipelined); the answers
    /// come in order ([`Self::receive`]).
    pub fn send<R: Encodable + HeaderVersion>(&mut self, key: ApiKey, version: i16, request: &R) {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("bad-input-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_frame(&body);
        self.sent.push_back(self.correlation);
    }

    /// The body of the answer to the oldest request sent and not answered yet.
    pub fn receive(&mut self, key: ApiKey, version: i16) -> Option<Bytes> {
        let mut response = self.read_frame()?;
        let correlation = response.get_i32();
        assert_eq!(Some(correlation), self.sent.pop_front());
        if key.response_header_version(version) >= 1 {
            // Flexible response header: an empty tagged-field section.
            assert_eq!(response.get_u8(), 0);
        }
        Some(response)
    }

    pub fn is_closed(&mut self) -> bool {
        self.read_frame().is_none()
    }
}

/// An uncompressed RecordBatch v2 of `values` (no keys), all with `timestamp`, as a producer sends it.
pub fn record_batch(values: &[Bytes], timestamp: i64) -> Bytes {
    producer_batch(values, timestamp, -1, -1, -1)
}

/// [`record_batch`] of an idempotent producer: its id and epoch, sequences from `base_sequence`.
pub fn producer_batch(
    values: &[Bytes],
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence + i as i32,
            timestamp,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}
