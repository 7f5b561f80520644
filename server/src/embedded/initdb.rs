//! `initdb`: the files of a new cluster, with role `triggers`, password
//! authentication and settings for a queue workload.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::data_dir::{check_reachable, AUTH_FILE};
use super::os_user::{as_user, chown, write_private, RunAs};
use crate::error::StartupError;

/// The superuser role of the embedded cluster.
pub(super) const ROLE: &str = "triggers";

/// Creates the cluster's files in `partial`: `initdb` with role [`ROLE`] and a random
/// password (kept in the auth file, readable by the cluster's user only), then the
/// workload settings.
pub(super) fn init(partial: &Path, bindir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    fs::create_dir_all(partial)
        .map_err(|e| StartupError::DataDir(format!("cannot create {}: {e}", partial.display())))?;
    fs::set_permissions(partial, fs::Permissions::from_mode(0o700))
        .map_err(|e| StartupError::DataDir(format!("{}: {e}", partial.display())))?;
    chown(partial, run_as)?;
    check_reachable(partial, run_as)?;

    let password = random_password();
    let pwfile = PathBuf::from(format!("{}.pw", partial.display()));
    write_private(&pwfile, &password, run_as)?;
    let output = {
        let mut command = Command::new(bindir.join("initdb"));
        command
            .arg("-D")
            .arg(partial)
            .args([
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--no-instructions")
            .current_dir("/")
            .stdin(Stdio::null());
        as_user(&mut command, run_as);
        command.output()
    };
    let _ = fs::remove_file(&pwfile);
    let output = output.map_err(|e| {
        StartupError::Postgres(format!(
            "cannot run {}: {e}",
            bindir.join("initdb").display()
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(StartupError::Postgres(format!(
            "initdb failed ({}): {last}",
            output.status
        )));
    }
    write_private(&partial.join(AUTH_FILE), &password, run_as)?;
    tune(partial)?;
    Ok(())
}

/// Settings for a queue workload, appended to the new cluster's postgresql.conf (so
/// `ALTER SYSTEM` still overrides them). Workers delete every message they finish; the
/// dead index entries at the head of the queue are walked by every claim until vacuum
/// removes them, so autovacuum looks at the hot tables every second, not every minute.
/// A `triggers serve` holds up to about 45 connections (the API's 16, key lookups' 4,
/// group commit's 16, the workers, listeners and the live stream's hub): Postgres's
/// default of 100 would leave room for two servers and little else.
const TUNING: &str =
    "\n# triggers: a queue workload\nautovacuum_naptime = 1s\nmax_connections = 300\n";

fn tune(data_dir: &Path) -> Result<(), StartupError> {
    use std::io::Write;
    let conf = data_dir.join("postgresql.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| f.write_all(TUNING.as_bytes()))
        .map_err(|e| StartupError::DataDir(format!("{}: {e}", conf.display())))
}

fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}
