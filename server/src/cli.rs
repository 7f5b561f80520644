//! The command line: `triggers serve` and its settings, each also read from the
//! environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Postgres-native event ingestion and delivery.
#[derive(Debug, Parser)]
#[command(name = "triggers", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server. Without DATABASE_URL it creates (first time) and starts a
    /// private Postgres cluster under --data-dir and stops it on exit.
    Serve(ServeArgs),
}

/// Settings of `triggers serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on (host:port).
    #[arg(long, env = "TRIGGERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Data directory of the embedded Postgres cluster (ignored with DATABASE_URL).
    #[arg(long, env = "TRIGGERS_DATA_DIR", default_value = "./.triggers")]
    pub data_dir: PathBuf,

    /// Use this existing database instead of the embedded cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Worker tasks looping on process_batch (0: this server only serves HTTP).
    #[arg(long, env = "TRIGGERS_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub workers: u16,

    /// pg_config of the Postgres whose binaries run the embedded cluster
    /// [default: the pg_config on PATH].
    #[arg(long, env = "TRIGGERS_PG_CONFIG")]
    pub pg_config: Option<PathBuf>,
}
