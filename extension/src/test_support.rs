//! Helpers shared by the `#[pg_test]` modules.

use pgrx::prelude::*;

/// The single value `sql` returns; panics (failing the test) on an error or NULL.
pub fn one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: returned NULL"))
}
