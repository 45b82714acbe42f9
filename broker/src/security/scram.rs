//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them (KIP-84): the
//! credentials the metadata stores (salt, iterations, StoredKey and ServerKey: never a password
//! nor anything a client could log in with), the server side of the exchange, and the check of a
//! PLAIN password against the same credentials.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

/// Kafka's smallest iteration count (and its default).
pub const MIN_ITERATIONS: u32 = 4096;
/// Kafka's largest iteration count.
pub const MAX_ITERATIONS: u32 = 16384;

impl Mechanism {
    /// Both, in Kafka's order.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// By SASL mechanism name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's code (`ScramMechanism`: 1 SHA-256, 2 SHA-512).
    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// By Kafka's code.
    pub fn from_code(code: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => mac::<Hmac<Sha256>>(key, data),
            Mechanism::Sha512 => mac::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword := Hi(Normalize(password), salt, i) (PBKDF2 with the mechanism's HMAC).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Mechanism::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Equality that takes the same time wherever the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the server keeps of a user's password for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// From a SaltedPassword (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> Credential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        Credential {
            mechanism,
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// From a password and a fresh random salt.
    pub fn from_password(mechanism: Mechanism, password: &str, iterations: u32) -> Credential {
        let mut salt = vec![0u8; 32];
        rand::fill(&mut salt[..]);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        Credential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// Whether `password` is the one this credential was made from (SASL/PLAIN).
    pub fn verify_password(&self, password: &str) -> bool {
        let salted =
            self.mechanism
                .salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        same(&self.mechanism.hash(&client_key), &self.stored_key)
    }
}

/// Why an exchange failed; the client is only told that authentication failed.
pub type Failure = String;

/// The server side of one SCRAM exchange: client-first → server-first, client-final →
/// server-final.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

#[derive(Debug)]
enum State {
    First,
    Final {
        user: String,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        credential: Credential,
    },
    Ended,
}

/// The outcome of a client message.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge and wait for the next message.
    Challenge(Vec<u8>),
    /// Authenticated as this user; send the final message.
    Done { user: String, last: Vec<u8> },
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::First,
        }
    }

    /// Takes the client's next message; `lookup` finds a user's credential for this mechanism.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Step, Failure> {
        let message = std::str::from_utf8(message).map_err(|_| "not UTF-8".to_string())?;
        match std::mem::replace(&mut self.state, State::Ended) {
            State::First => self.client_first(message, lookup),
            State::Final {
                user,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
                credential,
            } => {
                let auth = Exchange {
                    gs2_header: &gs2_header,
                    client_first_bare: &client_first_bare,
                    server_first: &server_first,
                    nonce: &nonce,
                };
                let last = auth.client_final(self.mechanism, message, &credential)?;
                Ok(Step::Done { user, last })
            }
            State::Ended => Err("the exchange is over".into()),
        }
    }

    fn client_first(
        &mut self,
        message: &str,
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<Step, Failure> {
        // gs2-header: "n," / "y," (no channel binding), then an optional "a=authzid", then ",".
        let (cbind, rest) = message
            .split_once(',')
            .ok_or("client-first: no GS2 header")?;
        if cbind != "n" && cbind != "y" {
            return Err("client-first: channel binding is not supported".into());
        }
        let (authzid, bare) = rest.split_once(',').ok_or("client-first: no GS2 header")?;
        let gs2_header = format!("{cbind},{authzid},");
        let mut user = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            match attribute.split_once('=') {
                Some(("n", v)) => user = Some(decode_name(v)?),
                Some(("r", v)) => client_nonce = Some(v.to_string()),
                Some(("m", _)) => return Err("client-first: mandatory extension".into()),
                // Other extensions (Kafka's tokenauth=...) are optional.
                _ => {}
            }
        }
        let user = user.ok_or("client-first: no user name")?;
        let client_nonce = client_nonce
            .filter(|n| !n.is_empty())
            .ok_or("client-first: no nonce")?;
        if let Some(id) = authzid.strip_prefix("a=") {
            // Kafka accepts an authorization id only if it is the user itself.
            if decode_name(id)? != user {
                return Err("client-first: authorization id differs from the user".into());
            }
        } else if !authzid.is_empty() {
            return Err("client-first: malformed GS2 header".into());
        }
        let credential = lookup(&user)
            .ok_or_else(|| format!("unknown user {user:?} for {}", self.mechanism.name()))?;
        let mut random = [0u8; 24];
        rand::fill(&mut random[..]);
        let nonce = format!("{client_nonce}{}", B64.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::Final {
            user,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            credential,
        };
        Ok(Step::Challenge(server_first.into_bytes()))
    }
}

struct Exchange<'a> {
    gs2_header: &'a str,
    client_first_bare: &'a str,
    server_first: &'a str,
    nonce: &'a str,
}

impl Exchange<'_> {
    /// Checks the client's proof; the server-final message.
    fn client_final(
        &self,
        mechanism: Mechanism,
        message: &str,
        credential: &Credential,
    ) -> Result<Vec<u8>, Failure> {
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or("client-final: no proof")?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        if binding != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err("client-final: channel binding differs from the GS2 header".into());
        }
        // As Kafka, a nonce that ends with the server's is accepted: librdkafka 2.0 (Debian's
        // kcat) repeats the client's part in front. It still carries this exchange's fresh part.
        if !nonce.is_some_and(|n| n.ends_with(self.nonce)) {
            return Err(format!(
                "client-final: nonce {:?} differs from {:?}",
                nonce.unwrap_or_default(),
                self.nonce
            ));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| "client-final: proof is not base64")?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err("client-final: proof has the wrong length".into());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !same(&mechanism.hash(&client_key), &credential.stored_key) {
            return Err("wrong password".into());
        }
        let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// A SCRAM `saslname`: "=2C" is ",", "=3D" is "=", no other "=".
fn decode_name(name: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("malformed user name".into()),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// SASL/PLAIN's message: `authzid NUL user NUL password` → (user, password).
pub fn parse_plain(message: &[u8]) -> Result<(String, String), Failure> {
    let text = std::str::from_utf8(message).map_err(|_| "PLAIN: not UTF-8".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("PLAIN: expected authzid NUL user NUL password".into());
    };
    if user.is_empty() || password.is_empty() {
        return Err("PLAIN: empty user or password".into());
    }
    if !authzid.is_empty() && authzid != user {
        return Err("PLAIN: authorization id differs from the user".into());
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A SCRAM client as RFC 5802 describes it, to drive the server.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        client_final_with(mechanism, password, client_first_bare, server_first, |n| n)
    }

    /// [`client_final`], sending the nonce `send` makes of the server's (and proving it).
    fn client_final_with(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        send: impl FnOnce(String) -> String,
    ) -> (String, Vec<u8>) {
        let mut salt = None;
        let mut iterations = None;
        let mut nonce = None;
        for a in server_first.split(',') {
            match a.split_once('=') {
                Some(("r", v)) => nonce = Some(v.to_string()),
                Some(("s", v)) => salt = Some(B64.decode(v).unwrap()),
                Some(("i", v)) => iterations = Some(v.parse().unwrap()),
                _ => {}
            }
        }
        let salted =
            mechanism.salted_password(password.as_bytes(), &salt.unwrap(), iterations.unwrap());
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={}", send(nonce.unwrap()));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let expected = format!(
            "v={}",
            B64.encode(mechanism.hmac(&server_key, auth.as_bytes()))
        );
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            expected.into_bytes(),
        )
    }

    fn exchange(
        mechanism: Mechanism,
        stored: &Credential,
        password: &str,
    ) -> Result<String, Failure> {
        let mut server = ScramServer::new(mechanism);
        let bare = "n=al=3Dice,r=fyko+d2lbbFgONRv9qkxdawL";
        let Step::Challenge(first) = server.step(format!("n,,{bare}").as_bytes(), |u| {
            (u == "al=ice").then(|| stored.clone())
        })?
        else {
            panic!("a challenge first")
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"), "{first}");
        let (last, expected) = client_final(mechanism, password, bare, &first);
        match server.step(last.as_bytes(), |_| None)? {
            Step::Done { user, last } => {
                assert_eq!(last, expected, "the server proves it knows the ServerKey");
                Ok(user)
            }
            Step::Challenge(_) => panic!("done after the final message"),
        }
    }

    #[test]
    fn scram_logs_in_with_the_right_password_only() {
        for mechanism in Mechanism::ALL {
            let stored = Credential::from_password(mechanism, "pencil", MIN_ITERATIONS);
            assert_eq!(exchange(mechanism, &stored, "pencil").unwrap(), "al=ice");
            assert!(exchange(mechanism, &stored, "pencils").is_err());
        }
    }

    #[test]
    fn a_nonce_repeating_the_clients_part_is_accepted_as_kafka_does() {
        // librdkafka 2.0 sends r=<client nonce><server nonce> in its final message.
        let stored = Credential::from_password(Mechanism::Sha256, "pencil", MIN_ITERATIONS);
        let mut server = ScramServer::new(Mechanism::Sha256);
        let bare = "n=user,r=abc";
        let Ok(Step::Challenge(first)) =
            server.step(format!("n,,{bare}").as_bytes(), |_| Some(stored.clone()))
        else {
            panic!("a challenge first")
        };
        let first = String::from_utf8(first).unwrap();
        let (doubled, _) = client_final_with(Mechanism::Sha256, "pencil", bare, &first, |n| {
            format!("abc{n}")
        });
        assert!(matches!(
            server.step(doubled.as_bytes(), |_| None),
            Ok(Step::Done { .. })
        ));
        // A nonce that does not end with the server's is refused, even with a proof over it.
        let mut server = ScramServer::new(Mechanism::Sha256);
        let Ok(Step::Challenge(first)) =
            server.step(format!("n,,{bare}").as_bytes(), |_| Some(stored.clone()))
        else {
            panic!("a challenge first")
        };
        let first = String::from_utf8(first).unwrap();
        let (forged, _) = client_final_with(Mechanism::Sha256, "pencil", bare, &first, |n| {
            format!("{n}x")
        });
        let refused = server.step(forged.as_bytes(), |_| None);
        assert!(
            matches!(&refused, Err(why) if why.contains("nonce")),
            "{refused:?}"
        );
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let c = Credential::from_salted_password(Mechanism::Sha256, salt, 4096, &salted);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = Mechanism::Sha256.hmac(&c.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(c.verify_password("pencil"));
        assert!(!c.verify_password("pen"));
    }

    #[test]
    fn malformed_messages_fail() {
        let stored = Credential::from_password(Mechanism::Sha256, "x", MIN_ITERATIONS);
        for first in [
            "",
            "n",
            "p=tls-unique,,n=a,r=b",
            "n,,n=a",
            "n,,r=b",
            "n,a=b,n=a,r=c",
            "n,,n=a=,r=b",
        ] {
            let mut server = ScramServer::new(Mechanism::Sha256);
            assert!(
                server
                    .step(first.as_bytes(), |_| Some(stored.clone()))
                    .is_err(),
                "{first:?} accepted"
            );
        }
        assert!(parse_plain(b"\0alice\0secret").is_ok());
        assert!(parse_plain(b"alice\0alice\0secret").is_ok());
        assert!(parse_plain(b"bob\0alice\0secret").is_err());
        assert!(parse_plain(b"alice\0secret").is_err());
        assert!(parse_plain(b"\0alice\0").is_err());
    }
}
