//! Facts about the installed extension.

use pgrx::prelude::*;

/// The version of the installed `triggers` extension, e.g. `0.1.0`.
#[pg_extern(immutable, parallel_safe)]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers.version IS 'Version of the triggers extension.';",
    name = "comment_version",
    requires = [version]
);
