//! Endpoint secrets: generated as Standard Webhooks `whsec_` secrets, encrypted at rest with
//! AES-256-GCM before they reach the config topic, and used to sign deliveries
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of an encrypted secret in the config topic (the scheme, for a later key rotation).
const SEALED: &str = "v1:";

/// Why a secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not something [`SecretKey::seal`] wrote.
    #[error("malformed encrypted secret")]
    Malformed,
    /// Encrypted under another key (or altered).
    #[error("the secret does not decrypt with this dispatcher's key (dispatcher.secret_key)")]
    WrongKey,
}

/// The key that encrypts endpoint secrets at rest (`dispatcher.secret_key`, 32 bytes base64).
#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A key from its base64 form; the error names what is wrong with it.
    pub fn from_base64(text: &str) -> anyhow::Result<SecretKey> {
        let raw = B64
            .decode(text.trim())
            .map_err(|e| anyhow::anyhow!("not base64: {e}"))?;
        let cipher = Aes256Gcm::new_from_slice(&raw)
            .map_err(|_| anyhow::anyhow!("must be 32 bytes, is {}", raw.len()))?;
        Ok(SecretKey(cipher))
    }

    /// A new random key, base64.
    pub fn generate() -> String {
        let mut raw = [0u8; 32];
        rand::fill(&mut raw);
        B64.encode(raw)
    }

    /// `secret` encrypted under a fresh random nonce: `v1:` + base64(nonce ‖ ciphertext).
    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let sealed = self
            .0
            .encrypt(&Nonce::from(nonce), secret.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED}{}", B64.encode(out))
    }

    /// The secret [`seal`](Self::seal) encrypted.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(SEALED)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or(SecretError::Malformed)?;
        let (nonce, text) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Malformed)?;
        let plain = self
            .0
            .decrypt(&Nonce::from(nonce), text)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| SecretError::Malformed)
    }
}

/// A new Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_signing_secret() -> String {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    format!("whsec_{}", B64.encode(raw))
}

/// The `webhook-signature` entry for one secret: `v1,` + base64 HMAC-SHA256 of
/// `"{id}.{timestamp}.{body}"`, keyed by the secret's bytes (the base64 after `whsec_`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
        return String::new(); // HMAC takes keys of any length
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let key = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let other = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let secret = new_signing_secret();
        let sealed = key.seal(&secret);
        assert!(!sealed.contains(&secret["whsec_".len()..]), "not in clear");
        assert_ne!(sealed, key.seal(&secret), "a fresh nonce each time");
        assert_eq!(key.open(&sealed).unwrap(), secret);
        assert!(matches!(other.open(&sealed), Err(SecretError::WrongKey)));
        assert!(matches!(key.open("v1:AAAA"), Err(SecretError::Malformed)));
    }

    #[test]
    fn bad_keys_are_named() {
        let e = SecretKey::from_base64("c2hvcnQ=").unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
        assert!(SecretKey::from_base64("!!").is_err());
    }

    /// The example of the Standard Webhooks specification (and of its reference libraries).
    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
