//! Who a connection is and what it may do (DESIGN.md section 9): SASL authentication (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) on SASL_PLAINTEXT and SASL_SSL listeners, principals from client
//! certificates on SSL listeners, and ACLs ([`acl`]).
//!
//! A SASL listener serves nothing but ApiVersions, SaslHandshake and SaslAuthenticate until the
//! client has authenticated; anything else, or a failed login, closes the connection (as Kafka).
//! SaslHandshake v0 (tokens sent as bare frames) and v1 (tokens inside SaslAuthenticate) are both
//! served. PLAIN checks the password against the user's SCRAM credentials, so one store holds
//! every password, salted and never in clear.

pub mod acl;
pub mod http;
pub mod scram;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

use crate::node::Node;
use scram::{Credential, Mechanism, ScramServer, Step};

/// A SASL mechanism Weir serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    /// Every mechanism, by name.
    pub const NAMES: [&'static str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        if name == "PLAIN" {
            return Some(SaslMechanism::Plain);
        }
        Mechanism::from_name(name).map(SaslMechanism::Scram)
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// A user's stored credential for a SCRAM mechanism.
pub fn credential(node: &Node, user: &str, mechanism: Mechanism) -> Option<Credential> {
    if user == INTERNAL_USER {
        // Reserved: only the internal listener's own check logs it in.
        return None;
    }
    node.controller.read(|s| {
        s.scram
            .get(&(user.to_string(), i32::from(mechanism.code())))
            .map(|c| Credential {
                mechanism,
                salt: c.salt.clone(),
                iterations: c.iterations,
                stored_key: c.stored_key.clone(),
                server_key: c.server_key.clone(),
            })
    })
}

/// A connection's authentication.
#[derive(Debug)]
pub(crate) struct Session {
    /// Who the client is: `User:ANONYMOUS` until it authenticates (or from its certificate).
    pub(crate) principal: Arc<str>,
    sasl: Sasl,
    /// The internal listener: PLAIN is always offered, and only there may this process's own
    /// clients log in.
    internal: bool,
}

#[derive(Debug)]
enum Sasl {
    /// Not a SASL listener.
    Off,
    /// Waiting for SaslHandshake.
    Handshake,
    /// A mechanism was chosen; `raw`: SaslHandshake v0, tokens come as bare frames.
    Authenticating {
        mechanism: SaslMechanism,
        raw: bool,
        scram: Option<Box<ScramServer>>,
    },
    Done,
}

/// A failed login: what the client is told, and what the log says.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: i16,
    pub(crate) message: String,
}

impl Session {
    /// A connection's session: `sasl` on SASL listeners; `principal` before any login.
    pub(crate) fn new(sasl: bool, internal: bool, principal: Arc<str>) -> Session {
        Session {
            principal,
            sasl: if sasl { Sasl::Handshake } else { Sasl::Off },
            internal,
        }
    }

    /// Whether a request of this kind may be served now.
    pub(crate) fn allows(&self, key: ApiKey) -> bool {
        match self.sasl {
            Sasl::Off | Sasl::Done => true,
            Sasl::Handshake => matches!(key, ApiKey::ApiVersions | ApiKey::SaslHandshake),
            Sasl::Authenticating { raw, .. } => {
                !raw && matches!(key, ApiKey::ApiVersions | ApiKey::SaslAuthenticate)
            }
        }
    }

    /// Whether the next frame is a bare SASL token (after a SaslHandshake v0).
    pub(crate) fn expects_token(&self) -> bool {
        matches!(self.sasl, Sasl::Authenticating { raw: true, .. })
    }

    /// SaslHandshake: the error code, and the mechanisms enabled.
    pub(crate) fn handshake(&mut self, node: &Node, mechanism: &str, version: i16) -> i16 {
        if !matches!(self.sasl, Sasl::Handshake) {
            return ResponseError::IllegalSaslState.code();
        }
        let enabled = &node.config.sasl.mechanisms;
        let internal = self.internal;
        let Some(chosen) = SaslMechanism::from_name(mechanism).filter(|m| {
            enabled.iter().any(|e| e == m.name()) || (internal && *m == SaslMechanism::Plain)
        }) else {
            return ResponseError::UnsupportedSaslMechanism.code();
        };
        self.sasl = Sasl::Authenticating {
            mechanism: chosen,
            raw: version == 0,
            scram: match chosen {
                SaslMechanism::Plain => None,
                SaslMechanism::Scram(m) => Some(Box::new(ScramServer::new(m))),
            },
        };
        0
    }

    /// A token of the exchange: the server's answer, or why the login failed (the connection
    /// then closes).
    pub(crate) async fn authenticate(
        &mut self,
        node: &Node,
        token: &[u8],
    ) -> Result<Vec<u8>, Refused> {
        let Sasl::Authenticating {
            mechanism, scram, ..
        } = &mut self.sasl
        else {
            return Err(Refused {
                code: ResponseError::IllegalSaslState.code(),
                message: "SaslAuthenticate before SaslHandshake".into(),
            });
        };
        let mechanism = *mechanism;
        let failed = |why: String| {
            tracing::warn!(mechanism = mechanism.name(), reason = %why, "SASL authentication failed");
            Refused {
                code: ResponseError::SaslAuthenticationFailed.code(),
                message: format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                    mechanism.name()
                ),
            }
        };
        let outcome = match (mechanism, scram.as_mut()) {
            (SaslMechanism::Plain, _) => {
                let (user, password) = scram::parse_plain(token).map_err(failed)?;
                if user == INTERNAL_USER && self.internal {
                    let secret = node.internal_secret.as_bytes();
                    let given = password.as_bytes();
                    let equal = secret.len() == given.len()
                        && secret.iter().zip(given).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
                    if !equal {
                        return Err(failed("wrong internal password".into()));
                    }
                    self.principal = Arc::from(INTERNAL_PRINCIPAL);
                    self.sasl = Sasl::Done;
                    return Ok(Vec::new());
                }
                // One credential is checked (SCRAM-SHA-512's if there is one); an unknown user
                // costs the same PBKDF2 as a known one.
                let known = Mechanism::ALL
                    .into_iter()
                    .rev()
                    .find_map(|m| credential(node, &user, m));
                match verify_plain(known, password).await {
                    Some(true) => {}
                    Some(false) => return Err(failed(format!("wrong password for {user:?}"))),
                    None => return Err(failed(format!("unknown user {user:?}"))),
                }
                Step::Done {
                    user,
                    last: Vec::new(),
                }
            }
            (SaslMechanism::Scram(m), Some(server)) => server
                .step(token, |user| credential(node, user, m))
                .map_err(failed)?,
            (SaslMechanism::Scram(_), None) => return Err(failed("no exchange".into())),
        };
        match outcome {
            Step::Challenge(reply) => Ok(reply),
            Step::Done { user, last } => {
                tracing::debug!(user = %user, mechanism = mechanism.name(), "authenticated");
                self.principal = Arc::from(format!("User:{user}"));
                self.sasl = Sasl::Done;
                Ok(last)
            }
        }
    }
}

/// A distinguished name's attribute value, escaped (RFC 4514 2.4): a certificate whose CN is
/// `admin,O=Example` must not read as the principal of another subject.
fn escape_dn_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        if matches!(c, ',' | '=' | '+' | '<' | '>' | ';' | '"' | '\\')
            || (c == '#' && i == 0)
            || edge_space
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// PBKDF2 runs at most this many at once, off the async workers: a flood of PLAIN logins cannot
/// take the broker's threads.
static PBKDF2: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Checks a PLAIN password against a credential (`None`: no such user; a stand-in credential is
/// checked anyway, so both take as long).
async fn verify_plain(credential: Option<Credential>, password: String) -> Option<bool> {
    let Ok(_permit) = PBKDF2.acquire().await else {
        return Some(false);
    };
    let known = credential.is_some();
    let credential = credential.unwrap_or_else(|| {
        Credential::from_salted_password(Mechanism::Sha512, vec![0; 32], scram::MIN_ITERATIONS, b"")
    });
    let verified = tokio::task::spawn_blocking(move || credential.verify_password(&password))
        .await
        .unwrap_or(false);
    known.then_some(verified)
}

/// The principal of a client certificate: `User:` and its subject as RFC 2253 writes it
/// (`CN=app,OU=payments,O=Example`), as Kafka's default principal builder.
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map_or_else(|_| attr.attr_type().to_id_string(), str::to_string);
                    let value = match attr.as_str() {
                        Ok(text) => escape_dn_value(text),
                        // Not a string: `#` and the value's bytes in hex (RFC 4514 2.4).
                        Err(_) => {
                            let bytes = attr.attr_value().as_bytes();
                            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                            format!("#{hex}")
                        }
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    let subject: Vec<String> = rdns.into_iter().rev().collect();
    Some(format!("User:{}", subject.join(",")))
}

/// A secret kept in a file readable by this user only: read, or made by `generate` if missing.
pub(crate) fn secret_file(
    path: &std::path::Path,
    what: &str,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) => Ok(secret.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot create {what} {}: {e}", path.display()))?;
            std::io::Write::write_all(&mut file, secret.as_bytes())?;
            file.sync_all()?;
            Ok(secret)
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot read {what} {}: {e}",
            path.display()
        )),
    }
}

/// The user this process's own clients (the embedded dispatcher) log in as, on its internal
/// listener, with [`Node::internal_secret`](crate::node::Node::internal_secret).
pub const INTERNAL_USER: &str = "__weir_internal";
/// Its principal: a super user.
pub const INTERNAL_PRINCIPAL: &str = "User:__weir_internal";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn certificate(subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificate_subjects_are_principals_as_kafka_writes_them() {
        let der = certificate(&[
            (rcgen::DnType::OrganizationName, "Example"),
            (rcgen::DnType::CommonName, "billing"),
        ]);
        assert_eq!(
            certificate_principal(&der).unwrap(),
            "User:CN=billing,O=Example",
            "most specific first (RFC 2253)"
        );
        // A CN that looks like another subject does not read as one.
        let forged = certificate(&[(rcgen::DnType::CommonName, "billing,O=Example")]);
        assert_eq!(
            certificate_principal(&forged).unwrap(),
            "User:CN=billing\\,O\\=Example"
        );
        assert_eq!(escape_dn_value(" #a+b "), "\\ #a\\+b\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert!(certificate_principal(b"not a certificate").is_none());
    }
}
