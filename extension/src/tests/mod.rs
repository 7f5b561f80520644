//! `#[pg_test]`s, one module per file of `sql/`: each function's happy path and each of
//! its errors, by SQLSTATE. Everything here runs in one backend and one transaction
//! (rolled back after each test), with the clock set through `triggers.now` where time
//! matters; behaviour that needs separate connections (concurrent workers, a killed
//! backend, statement_timeout) is tested from outside, in tests/tests/processing.rs.

mod claim;
mod dlq;
mod enqueue;
mod inbox;
mod keys;
mod live;
mod metrics;
mod partitions;
mod process;
mod retention;
mod schema;
mod streams;
mod validate;
mod webhooks;
