//! Finding the Postgres binaries (`initdb`, `postgres`) through `pg_config --bindir`:
//! the `pg_config` given, or the one on `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::StartupError;

/// The directory holding `initdb` and `postgres`, from `pg_config --bindir`.
pub(super) fn postgres_bindir(explicit: Option<&Path>) -> Result<PathBuf, StartupError> {
    let pg_config = match explicit {
        Some(path) => {
            if !path.is_file() {
                return Err(StartupError::PgConfig(format!(
                    "{} does not exist; set --pg-config / TRIGGERS_PG_CONFIG to the pg_config of an installed Postgres",
                    path.display()
                )));
            }
            path.to_path_buf()
        }
        None => find_on_path("pg_config").ok_or_else(|| {
            StartupError::PgConfig(
                "pg_config not found on PATH; install Postgres (scripts/setup.sh does), set --pg-config, or set DATABASE_URL"
                    .to_string(),
            )
        })?,
    };
    let output = Command::new(&pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StartupError::PgConfig(format!("cannot run {}: {e}", pg_config.display())))?;
    if !output.status.success() {
        return Err(StartupError::PgConfig(format!(
            "{} --bindir failed ({})",
            pg_config.display(),
            output.status
        )));
    }
    let bindir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for tool in ["initdb", "postgres"] {
        if !bindir.join(tool).is_file() {
            return Err(StartupError::PgConfig(format!(
                "{} has no {tool} (from {} --bindir); install the Postgres server",
                bindir.display(),
                pg_config.display()
            )));
        }
    }
    Ok(bindir)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
