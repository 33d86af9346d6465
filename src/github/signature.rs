//! `X-Hub-Signature-256`: the HMAC-SHA256 of the raw request body, keyed with the webhook
//! secret, written `sha256=<hex>`. The comparison is constant-time (`Mac::verify_slice`), so
//! response timing does not reveal how much of a forged signature was right.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a delivery's signature was refused. The messages are safe to send back: they never
/// contain the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the delivery has no `X-Hub-Signature-256` header; set a secret on the GitHub hook")]
    Missing,
    #[error("the `X-Hub-Signature-256` header is not `sha256=` followed by 64 hex digits")]
    Malformed,
    #[error(
        "the `X-Hub-Signature-256` signature does not match the body and the configured secret"
    )]
    Mismatch,
}

/// Checks `header` (the `X-Hub-Signature-256` value, if any) against `body` and `secret`.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = hmac(secret);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` (senders and tests sign with it).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn hmac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_example_verifies() {
        // The example from GitHub's "Validating webhook deliveries" page.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            header
        );
        assert_eq!(
            verify_signature(
                b"It's a Secret to Everybody",
                b"Hello, World!",
                Some(header)
            ),
            Ok(())
        );
    }

    #[test]
    fn every_kind_of_bad_signature_is_refused() {
        let body = br#"{"zen":"x"}"#;
        let good = sign(b"s3cret", body);
        assert_eq!(
            verify_signature(b"s3cret", body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, Some("sha256=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"other", body, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", br#"{"zen":"y"}"#, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        let upper = format!("sha256={}", good["sha256=".len()..].to_uppercase());
        assert_eq!(
            verify_signature(b"s3cret", body, Some(&upper)),
            Ok(()),
            "hex case does not matter"
        );
    }
}
