//! What both harnesses need: the `--seconds` argument and a private cluster.

use std::path::PathBuf;

use triggers_server::embedded::{Cluster, ClusterOptions};

/// `--seconds N` from the command line, or `default`.
pub fn seconds_arg(default: f64) -> f64 {
    std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
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
