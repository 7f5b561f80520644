//! What the harnesses share: their arguments, a private cluster, connections.

use std::path::PathBuf;

use triggers_server::embedded::{Cluster, ClusterOptions};

/// The value after `flag` on the command line, if any.
pub fn arg(flag: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != flag).nth(1)
}

/// `--seconds N` from the command line, or `default`.
pub fn seconds_arg(default: f64) -> f64 {
    arg("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Whether the measurement `name` runs: all do, unless `--only a,b` names some.
#[allow(dead_code)] // the reliability soak has one measurement
pub fn selected(name: &str) -> bool {
    arg("--only").is_none_or(|only| only.split(',').any(|o| o == name))
}

/// Whether `--only` names the measurement `name` (for the long ones, which run only
/// when asked for).
#[allow(dead_code)] // only triggers-load has such measurements
pub fn named(name: &str) -> bool {
    arg("--only").is_some_and(|only| only.split(',').any(|o| o == name))
}

/// A fresh private cluster (the embedded default's code) in a temporary directory.
pub async fn private_cluster(name: &str) -> (Cluster, PathBuf) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = ClusterOptions {
        data_dir: dir.clone(),
        pg_config: None,
    };
    let cluster = Cluster::start(&options)
        .await
        .expect("start a private cluster");
    (cluster, dir)
}

/// A connection whose driver runs on the current runtime.
pub async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A private cluster (see [`private_cluster`]) with the raw pgmq queue `bench_raw`, the
/// baseline's; returns a connection to it too.
#[allow(dead_code)] // triggers-http-load measures raw pgmq.send on its own queue
pub async fn cluster_with_raw_queue(name: &str) -> (Cluster, PathBuf, tokio_postgres::Client) {
    let (cluster, dir) = private_cluster(name).await;
    let admin = connect(&cluster.config()).await;
    admin
        .batch_execute("SELECT pgmq.create('bench_raw')")
        .await
        .expect("raw queue");
    (cluster, dir, admin)
}
