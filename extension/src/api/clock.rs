//! The test clock's switch: `triggers.test_clock`, a setting only a superuser may change
//! (sql/clock.sql reads `triggers.now` only while it is on). Defined when the library
//! loads, and [`_test_clock`] is what loads it, so a value an ordinary role set before
//! (a placeholder) is refused by Postgres at that moment instead of being believed.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static TEST_CLOCK: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Registers `triggers.test_clock` (called from `_PG_init`).
pub fn define_settings() {
    GucRegistry::define_bool_guc(
        c"triggers.test_clock",
        c"Lets the session setting triggers.now stand in for the clock (tests only).",
        c"Off by default. Only a superuser can turn it on (SET, ALTER DATABASE/ROLE ... SET, or postgresql.conf); while it is off, triggers.now is ignored, so no role can move the time API keys expire by.",
        &TEST_CLOCK,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// Whether `triggers.now` may stand in for the clock in this session.
#[pg_extern(stable, parallel_safe)]
pub fn _test_clock() -> bool {
    TEST_CLOCK.get()
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._test_clock IS 'Internal: whether the superuser-only setting triggers.test_clock lets triggers.now stand in for the clock.';",
    name = "comment_test_clock",
    requires = [_test_clock]
);
