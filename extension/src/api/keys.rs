//! API-key support.

use pgrx::prelude::*;

/// Whether two hashes are equal, compared in constant time.
#[pg_extern(immutable, parallel_safe)]
pub fn _bytes_equal(a: &[u8], b: &[u8]) -> bool {
    triggers_core::constant_time_eq(a, b)
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._bytes_equal IS 'Internal: constant-time comparison of two byte strings.';",
    name = "comment_bytes_equal",
    requires = [_bytes_equal]
);

/// The prefix of every API key, `triggers_core::KEY_PREFIX`: sql/keys.sql makes and
/// parses keys with it, so SQL and Rust cannot disagree on it.
#[pg_extern(immutable, parallel_safe)]
pub fn _key_prefix() -> &'static str {
    triggers_core::KEY_PREFIX
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._key_prefix IS 'Internal: the prefix of every API key (triggers-core''s KEY_PREFIX).';",
    name = "comment_key_prefix",
    requires = [_key_prefix]
);
