//! The server's background workers: processing (`processing.rs`: the loop on
//! `triggers.process_batch`), webhook delivery (`delivery.rs`), and the tasks they run
//! as, started and stopped together (`tasks.rs`).

pub mod delivery;
pub mod processing;
pub mod tasks;
