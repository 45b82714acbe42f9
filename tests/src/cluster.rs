//! A cluster of `weir broker` processes for tests: each broker a real process on 127.0.0.1 ports it
//! picks itself (port 0; they are read back from the line it prints), sharing one object store,
//! started, stopped (SIGTERM) and killed (`kill -9`) one by one. Every process still running is
//! killed when the cluster is dropped.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running broker.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// Its node id.
    pub node_id: u32,
    /// Its Kafka listener.
    pub kafka: SocketAddr,
    /// Its admin HTTP listener.
    pub admin: SocketAddr,
    /// Its gRPC listener.
    pub rpc: SocketAddr,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Cluster {
    weir: PathBuf,
    store: String,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    brokers: BTreeMap<u32, Broker>,
}

impl Cluster {
    /// A cluster with no broker yet; `weir` is the binary, `store` the object store URL every broker
    /// shares, `env` extra variables for every broker (settings, `AWS_*`).
    pub fn new(weir: &Path, store: &str, env: &[(String, String)]) -> Cluster {
        Cluster {
            weir: weir.to_path_buf(),
            store: store.to_owned(),
            env: env.to_vec(),
            dir: tempfile::tempdir().expect("temporary directory for the cluster"),
            brokers: BTreeMap::new(),
        }
    }

    /// Starts broker `node_id` (with the controller role if `controller`) with the object WAL, and
    /// waits until it serves.
    ///
    /// # Panics
    /// If the process cannot start or does not print its addresses within 60 seconds.
    pub fn start(&mut self, node_id: u32, controller: bool) -> &Broker {
        assert!(
            !self.brokers.contains_key(&node_id),
            "broker {node_id} is already running"
        );
        let data = self.dir.path().join(format!("broker-{node_id}"));
        std::fs::create_dir_all(&data).expect("broker data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir().join(format!("broker-{node_id}.log")))
            .expect("broker log");
        let mut command = Command::new(&self.weir);
        command
            .arg("broker")
            .args(["--node-id", &node_id.to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--rpc-listen", "127.0.0.1:0"])
            .args(["--object-store", &self.store])
            .args(["--wal", "object"])
            .arg("--data-dir")
            .arg(&data);
        if controller {
            command.arg("--controller");
        }
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Test settings, not broker settings (the broker warns about unknown WEIR_* variables).
            .env_remove("WEIR_S3_TESTS")
            .env_remove("WEIR_WEED")
            .env_remove("WEIR_TEST_KCAT")
            .env_remove("WEIR_TEST_LOG_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.weir.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "broker {node_id} did not start: {line:?}\n{}",
                        self.log(node_id)
                    )
                })
        };
        let broker = Broker {
            node_id,
            kafka: addr("kafka="),
            admin: addr("admin="),
            rpc: addr("rpc="),
            child,
        };
        self.brokers.insert(node_id, broker);
        &self.brokers[&node_id]
    }

    /// The running brokers.
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    /// A broker's data directory (its `admin.token` is there).
    pub fn data_dir(&self, node_id: u32) -> PathBuf {
        self.dir.path().join(format!("broker-{node_id}"))
    }

    /// A running broker.
    pub fn broker(&self, node_id: u32) -> &Broker {
        &self.brokers[&node_id]
    }

    /// Every running broker's Kafka address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .values()
            .map(|b| b.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills a broker with SIGKILL and waits for it to be gone.
    pub fn kill9(&mut self, node_id: u32) {
        if let Some(mut b) = self.brokers.remove(&node_id) {
            let _ = b.child.kill();
            let _ = b.child.wait();
        }
    }

    /// Sends a broker a signal by name (`STOP` pauses it as a long pause would, `CONT` resumes it).
    pub fn signal(&self, node_id: u32, signal: &str) {
        let pid = self.brokers[&node_id].child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}").as_str(), &pid])
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill -{signal} {pid} (broker {node_id})"
        );
    }

    /// Waits up to `timeout` for a broker to exit on its own; its exit status, or `None` if it
    /// still runs.
    pub fn wait_exit(
        &mut self,
        node_id: u32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let b = self.brokers.get_mut(&node_id)?;
            if let Ok(Some(status)) = b.child.try_wait() {
                self.brokers.remove(&node_id);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops a broker with SIGTERM (a graceful stop) and waits up to a minute; `true` if it exited
    /// successfully.
    pub fn stop(&mut self, node_id: u32) -> bool {
        let Some(mut b) = self.brokers.remove(&node_id) else {
            return false;
        };
        let pid = b.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match b.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = b.child.kill();
                    let _ = b.child.wait();
                    return false;
                }
            }
        }
    }

    /// Where the brokers' logs go: `$WEIR_TEST_LOG_DIR` (kept), else the cluster's directory.
    fn log_dir(&self) -> PathBuf {
        std::env::var_os("WEIR_TEST_LOG_DIR")
            .map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from)
    }

    /// A broker's log (stderr) so far, for failure messages.
    pub fn log(&self, node_id: u32) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("broker-{node_id}.log")))
            .unwrap_or_default()
    }

    /// The last lines of every broker's log.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut ids: Vec<u32> = std::fs::read_dir(self.log_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("broker-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        for id in ids {
            let log = self.log(id);
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- broker {id} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// An HTTP GET on a broker's admin listener: `(status, body)`.
    pub fn admin_get(&self, node_id: u32, path: &str) -> (u16, String) {
        http(self.broker(node_id).admin, "GET", path, "")
    }

    /// An HTTP POST of a JSON body to a broker's admin listener: `(status, body)`.
    pub fn admin_post(&self, node_id: u32, path: &str, json: &str) -> (u16, String) {
        http(self.broker(node_id).admin, "POST", path, json)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for b in self.brokers.values_mut() {
            let _ = b.child.kill();
            let _ = b.child.wait();
        }
    }
}

/// A minimal HTTP/1.0 request.
pub fn http(addr: SocketAddr, method: &str, path: &str, json: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{json}",
        json.len()
    );
    if conn.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
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
