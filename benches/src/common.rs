//! What both harnesses need: the `--seconds` argument and a private cluster.

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

#[allow(dead_code)] // triggers-load has no --only
/// Whether the measurement `name` runs: all do, unless `--only a,b` names some.
pub fn selected(name: &str) -> bool {
    arg("--only").is_none_or(|only| only.split(',').any(|o| o == name))
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
