//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256
//! of "id.timestamp.body">`, keyed by the bytes a `whsec_<base64>` secret
//! encodes. Several space-separated signatures may be sent (secret
//! rotation); a receiver accepts the message when any one verifies.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A webhook signing secret. It never prints: `Debug` shows a placeholder
/// and there is no `Display`, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with `whsec_` followed by base64")]
    MissingPrefix,
    #[error("the part after `whsec_` is not valid base64")]
    NotBase64,
    #[error("decodes to {0} bytes; at least 24 are required")]
    TooShort(usize),
    #[error("decodes to {0} bytes; at most 64 are allowed")]
    TooLong(usize),
}

/// A signature being computed over a body fed piece by piece.
pub struct Signer(Hmac<Sha256>);

impl Signer {
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// `v1,<base64 signature>`.
    pub fn finish(self) -> String {
        format!("v1,{}", BASE64.encode(self.0.finalize().into_bytes()))
    }
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        match key.len() {
            n if n < 24 => Err(SecretError::TooShort(n)),
            n if n > 64 => Err(SecretError::TooLong(n)),
            _ => Ok(Self(key)),
        }
    }

    /// A fresh random 32-byte secret.
    pub fn generate() -> Self {
        Self(rand::random::<[u8; 32]>().to_vec())
    }

    /// The `whsec_…` form, for showing once to whoever created it.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.0))
    }

    /// `v1,<base64 signature>` for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signer = self.signer(msg_id, timestamp);
        signer.update(body);
        signer.finish()
    }

    /// Signs a message whose body comes in pieces (a streamed body).
    pub fn signer(&self, msg_id: &str, timestamp: i64) -> Signer {
        Signer(self.mac(msg_id, timestamp, b""))
    }

    /// The HMAC state after absorbing `id.timestamp.body`.
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac
    }

    /// Checks a `webhook-signature` header (one or more `v1,…` entries) in
    /// constant time per entry, and that `timestamp` lies within
    /// `tolerance_secs` of `now`.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
        header: &str,
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), VerifyError> {
        if (now - timestamp).abs() > tolerance_secs {
            return Err(VerifyError::StaleTimestamp);
        }
        let expected = self.mac(msg_id, timestamp, body);
        let found = header
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|sig| BASE64.decode(sig).ok())
            .any(|sig| expected.clone().verify_slice(&sig).is_ok());
        if found {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is too far from the current time")]
    StaleTimestamp,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn signs_the_standard_webhooks_published_example() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(
            secret.sign(MSG_ID, TS, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_any_of_several_signatures() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let other = SigningSecret::generate();
        let header = format!(
            "{} {}",
            other.sign(MSG_ID, TS, BODY),
            secret.sign(MSG_ID, TS, BODY)
        );
        assert_eq!(secret.verify(MSG_ID, TS, BODY, &header, TS, 300), Ok(()));
        assert_eq!(
            secret.verify(MSG_ID, TS, b"tampered", &header, TS, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            secret.verify(MSG_ID, TS, BODY, &header, TS + 301, 300),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn malformed_secrets_are_refused_with_the_reason() {
        assert_eq!(SigningSecret::parse("abc"), Err(SecretError::MissingPrefix));
        assert_eq!(
            SigningSecret::parse("whsec_!!"),
            Err(SecretError::NotBase64)
        );
        assert_eq!(
            SigningSecret::parse("whsec_AAAA"),
            Err(SecretError::TooShort(3))
        );
        let generated = SigningSecret::generate();
        assert_eq!(SigningSecret::parse(&generated.expose()), Ok(generated));
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }
}
