//! Harness for black-box tests: runs the real `triggers` binary (built by
//! `cargo build -p triggers-server`) and inspects what it leaves on the machine.
//!
//! process.rs: the binary as a child process; database.rs: the shared test cluster and
//! a database per test; wait.rs: condition waits and notifications; api.rs: the router
//! driven in process; sse.rs: a Server-Sent Events client; browser.rs: headless Chromium
//! through chromedriver; hooks.rs: what a webhook receiver got, and its signature check;
//! sharded.rs: node databases and a PL/Proxy proxy over them.

pub mod api;
pub mod browser;
mod database;
pub mod hooks;
mod process;
pub mod sharded;
pub mod sse;
mod wait;

pub use database::{
    column, connect, database_url, empty_database, enqueue_many, metrics_are_exact, scalar,
    test_database, ExternalCluster, HungWorker,
};
pub use process::{
    bin, free_port, get_json, is_root, postgres_processes_of, run, send_until_accepted,
    serve_database, serve_loopback, serve_test_database, triggers, Server, TempDir, START_TIMEOUT,
};
pub use wait::{wait_for, wait_until, Notifications, MARKER_CHANNEL, PATIENCE};
