//! The Rust side of the SQL surface: helpers the SQL API in `sql/*.sql` calls, each a
//! thin wrapper over `triggers-core`. The SQL functions users call live in those files.

pub mod clock;
pub mod cursor;
pub mod ids;
pub mod info;
pub mod keys;
pub mod roles;
pub mod size;
pub mod webhooks;
