//! Identifiers and secrets.

use pgrx::prelude::*;

/// A new UUIDv7: time-ordered, so event ids sort roughly by creation.
#[pg_extern(volatile, parallel_safe)]
pub fn _uuid_v7() -> pgrx::datum::Uuid {
    pgrx::datum::Uuid::from_bytes(*uuid::Uuid::now_v7().as_bytes())
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._uuid_v7 IS 'Internal: a new UUIDv7 (time-ordered).';",
    name = "comment_uuid_v7",
    requires = [_uuid_v7]
);

/// Fills `buf` from Postgres's strong random source (an ERROR if it fails).
pub fn strong_random(buf: &mut [u8]) {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let ok = unsafe { pgrx::pg_sys::pg_strong_random(buf.as_mut_ptr().cast(), buf.len()) };
    if !ok {
        error!("could not generate random bytes");
    }
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random characters from [0-9A-Za-z], drawn from Postgres's strong random source.
#[pg_extern(volatile, parallel_safe)]
pub fn _random_token(len: i32) -> String {
    let len = len.clamp(1, 256) as usize;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut buf = [0u8; 64];
        strong_random(&mut buf);
        // 248 = 4 * 62: rejecting larger bytes keeps every character equally likely.
        for b in buf.into_iter().filter(|b| *b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    out
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._random_token IS 'Internal: len random characters from [0-9A-Za-z], from Postgres''s strong random source.';",
    name = "comment_random_token",
    requires = [_random_token]
);

/// The retry backoff of triggers-core: `min(cap, base * 2^(attempt-1))` milliseconds.
#[pg_extern(immutable, parallel_safe)]
pub fn _backoff_ms(attempt: i32, base_ms: i32, cap_ms: i32) -> i64 {
    let ms = triggers_core::backoff_ms(
        attempt.max(0) as u32,
        base_ms.max(0) as u64,
        cap_ms.max(0) as u64,
    );
    i64::try_from(ms).unwrap_or(i64::MAX)
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._backoff_ms IS 'Internal: min(cap, base * 2^(attempt-1)) in milliseconds.';",
    name = "comment_backoff_ms",
    requires = [_backoff_ms]
);
