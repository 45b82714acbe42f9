//! A headless Chromium for tests of the operator console, driven over the Chrome DevTools
//! Protocol (a WebSocket to `--remote-debugging-port`): open a page, evaluate JavaScript in it.
//!
//! Browser tests are gated: they run when `WEIR_BROWSER_TESTS=1` (which `.ci/run` sets, after
//! installing Debian's `chromium`) and say they were not run otherwise. The browser is
//! `$WEIR_CHROMIUM`, else `chromium` on `PATH`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Whether browser tests should run; prints why not when they should not.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var("WEIR_BROWSER_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!(
            "{test}: NOT RUN: needs a headless Chromium; set WEIR_BROWSER_TESTS=1 (and \
             WEIR_CHROMIUM, or `chromium` on PATH: apt-get install chromium) as .ci/run does"
        );
    }
    on
}

/// A headless Chromium showing one page; killed on drop.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and opens `url`.
    ///
    /// # Panics
    /// If Chromium cannot be started or does not offer its DevTools endpoint within 30 seconds.
    pub async fn open(url: &str) -> Browser {
        let binary = std::env::var("WEIR_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary} ({e}): apt-get install chromium, or set WEIR_CHROMIUM"
                )
            });
        // Chromium says where its DevTools endpoint is on stderr; the rest of stderr is drained
        // by a thread so the browser never blocks on it.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("Chromium did not print its DevTools endpoint within 30 s");
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to Chromium's DevTools endpoint");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let target = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// Sends one DevTools command and waits for its answer (events in between are skipped).
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            command["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send to Chromium");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {method} within 30 s"))
                .expect("Chromium closed the connection")
                .expect("a DevTools message");
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["id"] == json!(id) {
                assert!(
                    answer.get("error").is_none(),
                    "{method} failed: {}",
                    answer["error"]
                );
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    ///
    /// # Panics
    /// If the expression throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let result = self
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy (or `timeout`); its last value.
    pub async fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.eval(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy || tokio::time::Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
