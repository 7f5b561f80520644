//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): what a delivery
//! carries in `webhook-signature`, and a verifier written from the spec's text, for
//! receivers and for the tests that hold the sender to it.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed with
//! the secret's decoded bytes; a signature is `v1,` + its base64. A header may carry
//! several, space-separated (one per active secret while a rotation overlaps).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::constant_time_eq;

/// Every endpoint secret starts with this.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far `webhook-timestamp` may be from the receiver's clock, either way (seconds).
pub const TOLERANCE_S: i64 = 300;

/// An endpoint's signing secret: 24 to 64 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Why a text is not a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// It does not start with `whsec_`.
    Prefix,
    /// What follows is not base64.
    Base64,
    /// It decodes to fewer than 24 or more than 64 bytes.
    Length(usize),
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::Prefix => write!(f, "a secret starts with {SECRET_PREFIX}"),
            SecretError::Base64 => write!(f, "a secret is {SECRET_PREFIX} and base64"),
            SecretError::Length(n) => write!(f, "a secret has 24 to 64 bytes, not {n}"),
        }
    }
}

impl std::error::Error for SecretError {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)") // never in a log
    }
}

impl Secret {
    /// The secret of these bytes (24 to 64 of them, from a good random source).
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, SecretError> {
        if !(24..=64).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Secret(bytes.to_vec()))
    }

    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?;
        Secret::from_bytes(&bytes)
    }

    /// `whsec_<base64>`, as shown to the endpoint's owner.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The raw HMAC of `id.timestamp.body`.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The signature entry `v1,<base64>` of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }
}

/// Seals `plaintext` (an endpoint secret) for storage: AES-256-GCM under the SHA-256 of
/// `key`, with `nonce` (12 random bytes, never reused with one key) in front of the
/// ciphertext. A dump of the database holds only this; signing needs `key`, which the
/// server keeps outside the database.
pub fn seal(key: &str, nonce: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
    use aes_gcm::aead::{Aead, KeyInit as _};
    let cipher = aes_gcm::Aes256Gcm::new(&sealing_key(key));
    let sealed = cipher
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), plaintext)
        .expect("AES-GCM seals any plaintext that fits in memory");
    [nonce.as_slice(), &sealed].concat()
}

/// Opens what [`seal`] sealed under the same `key`; `None` for another key or
/// altered bytes.
pub fn open(key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    use aes_gcm::aead::{Aead, KeyInit as _};
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(12);
    aes_gcm::Aes256Gcm::new(&sealing_key(key))
        .decrypt(aes_gcm::Nonce::from_slice(nonce), ciphertext)
        .ok()
}

fn sealing_key(key: &str) -> aes_gcm::Key<aes_gcm::Aes256Gcm> {
    use sha2::Digest;
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    digest.into()
}

/// Whether a webhook may be sent to `ip` without `--webhook-allow-private`: not
/// loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10),
/// link-local (169.254/16, fe80::/10), site-local (fec0::/10), multicast, broadcast,
/// unspecified, reserved (0/8, 240/4), IETF protocol assignments (192.0.0/24),
/// benchmarking (198.18/15), or an IPv6 address that carries an IPv4 one or reaches
/// one through a translator (IPv4-mapped and -compatible, NAT64 64:ff9b::/96 and
/// 64:ff9b:1::/48, 6to4 2002::/16).
pub fn is_public_address(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_address(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96 and the
                // local-use 64:ff9b:1::/48) carry IPv4; 6to4 (2002::/16) relays to it.
                || s[..6] == [0; 6]
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || s[..3] == [0x64, 0xff9b, 1]
                || s[0] == 0x2002)
        }
    }
}

/// `text` with every IP address in it, other than `keep` (the address the user wrote
/// in the endpoint's URL, if they wrote one), replaced by `<address>`: what a stored
/// delivery error tells a tenant must not name the internal addresses a host resolves
/// to or a connection reached.
pub fn redact_addresses(text: &str, keep: Option<std::net::IpAddr>) -> String {
    use std::net::{IpAddr, SocketAddr};
    let is_part = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '[' | ']');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_part) {
        out.push_str(&rest[..start]);
        let word = &rest[start..];
        let end = word.find(|c: char| !is_part(c)).unwrap_or(word.len());
        let token = &word[..end];
        // "10.0.0.5." at the end of a sentence, "[fe80::1]:443", "10.0.0.5:80".
        let bare = token.trim_end_matches('.');
        let ip = bare
            .parse::<IpAddr>()
            .ok()
            .or_else(|| bare.parse::<SocketAddr>().ok().map(|a| a.ip()))
            .or_else(|| {
                bare.trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .ok()
            });
        match ip {
            Some(ip) if Some(ip) != keep => {
                out.push_str("<address>");
                out.push_str(&token[bare.len()..]);
            }
            _ => out.push_str(token),
        }
        rest = &word[end..];
    }
    out.push_str(rest);
    out
}

/// The `webhook-signature` header for a message: one entry per secret, space-separated.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is missing or empty.
    Missing(&'static str),
    /// `webhook-timestamp` is not an integer.
    BadTimestamp,
    /// `webhook-timestamp` is more than [`TOLERANCE_S`] from now (a replay, or a clock off).
    OutsideTolerance,
    /// No `v1` entry is the signature of this message under this secret.
    NoMatch,
}

/// Checks a delivery as the spec tells a receiver to: all three headers present, the
/// timestamp within [`TOLERANCE_S`] of `now` (Unix seconds), and some `v1,` entry of
/// the signature header equal, in constant time and in full, to the message's
/// signature under `secret`. Entries of other versions are ignored.
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    if id.is_empty() {
        return Err(VerifyError::Missing("webhook-id"));
    }
    if timestamp.is_empty() {
        return Err(VerifyError::Missing("webhook-timestamp"));
    }
    if signature.trim().is_empty() {
        return Err(VerifyError::Missing("webhook-signature"));
    }
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_S {
        return Err(VerifyError::OutsideTolerance);
    }
    let expected = secret.mac(id, ts, body);
    let matched = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|got| constant_time_eq(&got, &expected));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector the spec's reference libraries publish.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn signs_the_published_test_vector() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TS, BODY), SIGNATURE);
        assert_eq!(secret.to_text(), SECRET);
    }

    #[test]
    fn verifies_the_vector_and_refuses_anything_else() {
        let secret = Secret::parse(SECRET).unwrap();
        let ts = TS.to_string();
        assert_eq!(verify(&secret, ID, &ts, SIGNATURE, BODY, TS), Ok(()));
        // Among other entries, other versions and an old secret's signature.
        let several = format!("v1a,abc v1,AAAA {SIGNATURE}");
        assert_eq!(verify(&secret, ID, &ts, &several, BODY, TS + 299), Ok(()));
        let no = Err(VerifyError::NoMatch);
        // A bare or truncated signature (the standardwebhooks crate once took `v1,`).
        assert_eq!(verify(&secret, ID, &ts, "v1,", BODY, TS), no);
        assert_eq!(verify(&secret, ID, &ts, &SIGNATURE[..20], BODY, TS), no);
        assert_eq!(
            verify(
                &secret,
                ID,
                &ts,
                "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                BODY,
                TS
            ),
            no
        );
        // Another body, id or timestamp.
        assert_eq!(verify(&secret, ID, &ts, SIGNATURE, b"{}", TS), no);
        assert_eq!(verify(&secret, "msg_other", &ts, SIGNATURE, BODY, TS), no);
        let later = (TS + 1).to_string();
        assert_eq!(verify(&secret, ID, &later, SIGNATURE, BODY, TS), no);
        // Headers and time.
        assert_eq!(
            verify(&secret, "", &ts, SIGNATURE, BODY, TS),
            Err(VerifyError::Missing("webhook-id"))
        );
        assert_eq!(
            verify(&secret, ID, "", SIGNATURE, BODY, TS),
            Err(VerifyError::Missing("webhook-timestamp"))
        );
        assert_eq!(
            verify(&secret, ID, &ts, " ", BODY, TS),
            Err(VerifyError::Missing("webhook-signature"))
        );
        assert_eq!(
            verify(&secret, ID, "12a", SIGNATURE, BODY, TS),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(&secret, ID, &ts, SIGNATURE, BODY, TS + 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            verify(&secret, ID, &ts, SIGNATURE, BODY, TS - 301),
            Err(VerifyError::OutsideTolerance)
        );
    }

    #[test]
    fn a_header_carries_one_entry_per_secret() {
        let old = Secret::parse(SECRET).unwrap();
        let new = Secret::from_bytes(&[7; 32]).unwrap();
        let header = signature_header(&[new.clone(), old.clone()], ID, TS, BODY);
        assert_eq!(header.split(' ').count(), 2);
        let ts = TS.to_string();
        assert_eq!(verify(&old, ID, &ts, &header, BODY, TS), Ok(()));
        assert_eq!(verify(&new, ID, &ts, &header, BODY, TS), Ok(()));
    }

    #[test]
    fn stored_errors_name_no_address_but_the_one_written() {
        let keep: std::net::IpAddr = "93.184.216.34".parse().unwrap();
        assert_eq!(
            redact_addresses(
                "connect to 10.0.0.5:8080 (fe80::1, [::1]:443) failed.",
                None
            ),
            "connect to <address> (<address>, <address>) failed."
        );
        assert_eq!(
            redact_addresses(
                "refused: 93.184.216.34 is down; tried 10.0.0.5.",
                Some(keep)
            ),
            "refused: 93.184.216.34 is down; tried <address>."
        );
        assert_eq!(
            redact_addresses("HTTP 503 (os error 111) at deadbeef", None),
            "HTTP 503 (os error 111) at deadbeef"
        );
    }

    #[test]
    fn only_public_addresses_are_public() {
        let public = |s: &str| is_public_address(s.parse().unwrap());
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "198.20.0.1",
            "192.0.1.1",
            "2001:4860:4860::8888",
        ] {
            assert!(public(ip), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2002:a00:1::1",
            "fec0::1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
        ] {
            assert!(!public(ip), "{ip}");
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key() {
        let sealed = seal("the server's key", [3; 12], SECRET.as_bytes());
        assert!(!sealed.windows(6).any(|w| w == b"whsec_"), "no plaintext");
        assert_eq!(
            open("the server's key", &sealed).as_deref(),
            Some(SECRET.as_bytes())
        );
        assert_eq!(open("another key", &sealed), None);
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open("the server's key", &altered), None);
        assert_eq!(open("the server's key", &sealed[..11]), None);
        assert_ne!(
            seal("the server's key", [4; 12], SECRET.as_bytes()),
            sealed,
            "the nonce matters"
        );
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes() {
        assert_eq!(
            Secret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
            Err(SecretError::Prefix)
        );
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::Base64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::Length(3)));
        assert!(Secret::from_bytes(&[0; 23]).is_err());
        assert!(Secret::from_bytes(&[0; 65]).is_err());
        let s = Secret::from_bytes(&[1; 64]).unwrap();
        assert_eq!(Secret::parse(&s.to_text()), Ok(s.clone()));
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }
}
