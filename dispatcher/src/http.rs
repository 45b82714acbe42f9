//! The HTTP side: one shared client (connection pools per host, no redirects followed), the SSRF
//! guard, and one attempt: the request with its Standard Webhooks, CloudEvents and trace headers,
//! and the answer's classification.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::task::ErrorClass;

/// Denies private, loopback, link-local and other non-public addresses unless allow-listed.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<ipnet::IpNet>,
    /// Ports of this process's own listeners: denied on every non-public address.
    own_ports: Vec<u16>,
}

impl Guard {
    /// A guard allowing `allow` besides public addresses.
    pub fn new(allow: Vec<ipnet::IpNet>) -> Guard {
        Guard {
            allow,
            own_ports: Vec::new(),
        }
    }

    /// The guard, also denying `ports` on every non-public address (this process's listeners).
    pub fn with_own_ports(mut self, ports: Vec<u16>) -> Guard {
        self.own_ports = ports;
        self
    }

    /// Whether a request may go to `ip`:`port` as far as this process's own listeners go.
    fn permits_port(&self, ip: IpAddr, port: u16) -> bool {
        is_public(ip) || !self.own_ports.contains(&port)
    }

    /// Whether a request may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// Whether `ip` is an ordinary public unicast address.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 of any IPv4
                || first == 0x2001 && v6.segments()[1] == 0xdb8) // documentation
        }
    }
}

/// Resolves names as the system does, then keeps only the addresses the guard permits.
#[derive(Debug)]
struct GuardedResolver(Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked(format!(
                    "{host} resolves only to addresses the SSRF guard denies ({all:?})"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The SSRF guard refused a target.
#[derive(Debug, thiserror::Error)]
#[error("blocked: {0}")]
struct Blocked(String);

/// The dispatcher's HTTP client.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    guard: Guard,
}

/// One attempt's result.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status, if one came back.
    pub status: Option<u16>,
    /// Why it failed; none for a 2xx.
    pub error: Option<ErrorClass>,
    pub latency: Duration,
    /// The `Retry-After` the endpoint asked for.
    pub retry_after: Option<Duration>,
    /// Detail for the log.
    pub detail: String,
}

/// One request to make.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl Http {
    /// A client whose requests pass `guard`.
    pub fn new(guard: Guard) -> anyhow::Result<Http> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("Weir-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http { client, guard })
    }

    /// Why a URL may not be called at all: a literal address the guard denies.
    pub fn refuses(&self, url: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).ok()?;
        let ip = match url.host()? {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(_) => return None,
        };
        (!self.guard.permits(ip)).then(|| format!("{ip} is denied by the SSRF guard"))
    }

    /// Why a URL may not be called: it names one of this process's own listeners (by address or
    /// through a name resolving to a non-public address).
    async fn refuses_own(&self, url: &str) -> Option<String> {
        if self.guard.own_ports.is_empty() {
            return None;
        }
        let url = reqwest::Url::parse(url).ok()?;
        let port = url.port_or_known_default()?;
        if self.guard.own_ports.contains(&port) {
            let ips: Vec<IpAddr> = match url.host()? {
                url::Host::Ipv4(v4) => vec![IpAddr::V4(v4)],
                url::Host::Ipv6(v6) => vec![IpAddr::V6(v6)],
                url::Host::Domain(name) => tokio::net::lookup_host((name, port))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect())
                    .unwrap_or_default(),
            };
            if let Some(ip) = ips
                .into_iter()
                .find(|ip| !self.guard.permits_port(*ip, port))
            {
                return Some(format!(
                    "{ip}:{port} is one of this broker's own listeners (denied by the SSRF guard)"
                ));
            }
        }
        None
    }

    /// Makes one attempt.
    pub async fn send(&self, request: Request<'_>) -> Answer {
        let started = Instant::now();
        let refused = match self.refuses(request.url) {
            Some(why) => Some(why),
            None => self.refuses_own(request.url).await,
        };
        if let Some(why) = refused {
            return Answer {
                status: None,
                error: Some(ErrorClass::Blocked),
                latency: started.elapsed(),
                retry_after: None,
                detail: why,
            };
        }
        let mut builder = self
            .client
            .post(request.url)
            .timeout(request.timeout)
            .body(request.body);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Read (and drop) a bounded body so the connection can be reused.
                let mut response = response;
                let mut read = 0usize;
                while read < 64 << 10 {
                    match tokio::time::timeout(request.timeout, response.chunk()).await {
                        Ok(Ok(Some(chunk))) => read += chunk.len(),
                        _ => break,
                    }
                }
                let ok = (200..300).contains(&status);
                Answer {
                    status: Some(status),
                    error: (!ok).then(|| ErrorClass::of_status(status)),
                    latency: started.elapsed(),
                    retry_after,
                    detail: String::new(),
                }
            }
            Err(e) => Answer {
                status: None,
                error: Some(classify(&e)),
                latency: started.elapsed(),
                retry_after: None,
                detail: chain(&e),
            },
        }
    }
}

/// The class of a failed request.
fn classify(e: &reqwest::Error) -> ErrorClass {
    if chain(e).contains("blocked: ") {
        ErrorClass::Blocked
    } else if e.is_timeout() {
        ErrorClass::Timeout
    } else if is_tls(e) {
        ErrorClass::Tls
    } else {
        ErrorClass::Connect
    }
}

/// Whether a TLS error (rustls's, carried in an I/O error) is among the causes.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<rustls::Error>() {
            return true;
        }
        // I/O errors carry it inside, sometimes in another I/O error.
        let mut io = c.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if inner.is::<rustls::Error>() {
                return true;
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cause = c.source();
    }
    false
}

/// An error with its sources, one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// A CloudEvents HTTP header value: percent-encodes space, `"`, `%` and anything outside
/// 0x21-0x7E (the HTTP protocol binding, 3.1.3.2).
pub fn ce_header_value(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b == b' ' || b == b'"' || b == b'%' || !(0x21..=0x7e).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// A new W3C `traceparent` (a random trace and span, sampled).
pub fn new_traceparent() -> String {
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    rand::fill(&mut trace);
    rand::fill(&mut span);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn webhooks_never_reach_this_brokers_own_listeners() {
        // weir serve allows loopback targets; its own ports stay out of reach.
        let guard = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]).with_own_ports(vec![9644]);
        let http = Http::new(guard).unwrap();
        for url in [
            "http://127.0.0.1:9644/v1/security/acls",
            "http://localhost:9644/v1/cluster/drain",
            "http://127.0.0.2:9644/",
        ] {
            assert!(http.refuses_own(url).await.is_some(), "{url}");
        }
        assert!(
            http.refuses_own("http://127.0.0.1:8080/hook")
                .await
                .is_none()
        );
        assert!(
            http.refuses_own("http://93.184.216.34:9644/hook")
                .await
                .is_none()
        );
    }

    #[test]
    fn the_guard_denies_private_targets_unless_allowed() {
        let guard = Guard::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!guard.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(guard.permits(ip.parse().unwrap()), "{ip}");
        }
        let loopback = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(loopback.permits("127.0.0.1".parse().unwrap()));
        assert!(!loopback.permits("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let parsed = parse_retry_after(&soon).unwrap();
        assert!(parsed > Duration::from_secs(50) && parsed <= Duration::from_secs(60));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn cloudevents_header_values_are_percent_encoded() {
        assert_eq!(ce_header_value(b"order.created"), "order.created");
        assert_eq!(ce_header_value("a b\"%é".as_bytes()), "a%20b%22%25%C3%A9");
        let tp = new_traceparent();
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with("00-") && tp.ends_with("-01"));
    }
}
