//! A webhook receiver for tests: a real HTTP/1.1 server on 127.0.0.1 (a port it picks) whose
//! behaviour is chosen by the request path, recording every request it gets.
//!
//! - `/ok`: 200;
//! - `/slow/MS`: 200 after MS milliseconds;
//! - `/status/CODE`: that status (410, 404, 500, ...);
//! - `/throttle/SECONDS`: 429 with `Retry-After: SECONDS`;
//! - `/hang`: never answers;
//! - `/close`: closes the connection without answering;
//! - `/flaky/N`: 500 for the first N requests of each `webhook-id`, then 200.
//!
//! A request is recorded when it has been read, before the answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on 127.0.0.1.
    ///
    /// # Panics
    /// If no port can be bound.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let task = tokio::spawn(async move {
            let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, log.clone(), attempts.clone()));
            }
        });
        Receiver {
            addr,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("receiver log").clone()
    }

    /// What was received on `path`.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `done(received)` holds, up to `timeout`; whether it did.
    pub async fn wait(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.received()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut socket: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Headers.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/")
            .to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            let mut chunk = [0u8; 8192];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[end..end + length].to_vec();
        buf.drain(..end + length);
        let request = Received {
            at: Instant::now(),
            path: path.clone(),
            headers,
            body,
        };
        let id = request.header("webhook-id").unwrap_or_default().to_owned();
        log.lock().expect("receiver log").push(request);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (status, extra) = match parts.as_slice() {
            ["ok"] => (200, String::new()),
            ["slow", ms] => {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                (200, String::new())
            }
            ["status", code] => (code.parse().unwrap_or(500), String::new()),
            ["throttle", seconds] => (429, format!("Retry-After: {seconds}\r\n")),
            ["hang"] => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            ["close"] => return,
            ["flaky", n] => {
                let mut seen = attempts.lock().expect("attempts");
                let count = seen.entry(format!("{path} {id}")).or_default();
                *count += 1;
                if *count <= n.parse().unwrap_or(0) {
                    (500, String::new())
                } else {
                    (200, String::new())
                }
            }
            _ => (404, String::new()),
        };
        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{extra}\r\n");
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
