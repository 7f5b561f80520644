//! The Rust side of the SQL surface: helpers the SQL API in `sql/api.sql` calls, each a
//! thin wrapper over `triggers-core`. The SQL functions users call live in that file.

pub mod cursor;
pub mod ids;
pub mod info;
pub mod keys;
