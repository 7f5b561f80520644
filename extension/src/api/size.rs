//! How big a value is, for the byte budgets of pages (sql/inbox.sql, sql/live.sql).

use pgrx::prelude::*;
use pgrx::AnyElement;

/// The size in bytes a value has uncompressed, read from its header without fetching or
/// decompressing it (a TOASTed payload of 1 MiB that compresses to 10 KiB counts 1 MiB:
/// what a page would send); a fixed-size value's size; NULL counts 0.
#[pg_extern(immutable, parallel_safe)]
pub fn _size(value: Option<AnyElement>) -> i64 {
    let Some(value) = value else {
        return 0;
    };
    // SAFETY: the type is the value's own (Postgres passes it with the datum), and a
    // varlena datum's header is valid for toast_raw_datum_size, which reads only it.
    unsafe {
        match pg_sys::get_typlen(value.oid()) {
            -1 => pg_sys::toast_raw_datum_size(value.datum()) as i64,
            n if n > 0 => i64::from(n),
            _ => 0,
        }
    }
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._size IS 'Internal: a value''s size uncompressed, in bytes, from its header (what a page''s byte budget counts).';",
    name = "comment_size",
    requires = [_size]
);
