//! API keys: their format (`trg_<id>_<secret>`), their hash, and comparing secrets in
//! constant time.

/// Every API key starts with this, so secret scanners can recognise a leaked one.
pub const KEY_PREFIX: &str = "trg_";

/// The longest API key accepted (the SQL API refuses longer ones too).
pub const MAX_KEY_LEN: usize = 200;

/// The public id of a well-formed API key, `trg_<id>_<secret>` with id and secret
/// ASCII letters and digits, at most [`MAX_KEY_LEN`] bytes in all (the rule
/// `triggers.authenticate_key` applies); `None` for anything else, which no key in any
/// database can be, so it is refused without asking one.
pub fn key_id(token: &str) -> Option<&str> {
    if token.len() > MAX_KEY_LEN {
        return None;
    }
    let (id, secret) = token.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (word(id) && word(secret)).then_some(id)
}

/// The SHA-256 of a key, as `triggers.api_keys.key_hash` stores it.
pub fn key_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Compares two byte strings in time that depends only on their lengths, not on where
/// they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_trg_id_secret_in_letters_and_digits() {
        assert_eq!(key_id("trg_abc123_S3cret"), Some("abc123"));
        for bad in [
            "",
            "trg_",
            "trg__secret",
            "trg_id_",
            "trg_id",
            "tr_id_secret",
            "trg_id_sec_ret",
            "trg_i-d_secret",
            "trg_id_secret ",
            "trg_\u{e9}_secret",
        ] {
            assert_eq!(key_id(bad), None, "{bad:?}");
        }
        let long = format!("trg_id_{}", "a".repeat(MAX_KEY_LEN));
        assert_eq!(key_id(&long), None);
    }

    #[test]
    fn the_hash_is_sha256_of_the_whole_key() {
        // sha256("trg_a_b"), as Postgres's sha256(convert_to('trg_a_b', 'UTF8')) has it.
        let hex: String = key_hash("trg_a_b")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "40c21964c0dd92c2d15d17f94fe00dd8d74c1103fe171d6cc435fdb3b73e97c7"
        );
    }

    #[test]
    fn equal_only_when_every_byte_matches() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
