//! # triggers-server
//!
//! The `triggers` binary: an axum HTTP server over the `triggers` Postgres extension,
//! with an embedded Postgres cluster as the default database.
//!
//! ```text
//! triggers serve                        # embedded cluster in ./.triggers
//! DATABASE_URL=postgres://… triggers serve
//! curl http://127.0.0.1:8080/health     # {"status":"ok"}
//! ```

pub mod cli;
pub mod commands;
pub mod db;
pub mod embedded;
pub mod error;
pub mod files;
pub mod guard;
pub mod http;
pub mod partitions;
pub mod render;
pub mod schema;
pub mod serve;
pub mod services;
pub mod shards;
pub mod workers;
