//! The data directory: the files triggers keeps in it, what a directory found there is
//! (absent, empty, a cluster) and whether it is ours to use, and whether a postgres
//! already serves it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::os_user::{user_name, RunAs};
use crate::error::StartupError;

/// Where the cluster keeps the `triggers` role's password.
pub(super) const AUTH_FILE: &str = "triggers.auth";
/// The port of the last start.
pub(super) const PORT_FILE: &str = "triggers.port";
/// Postgres's own output, appended across starts.
pub(super) const LOG_FILE: &str = "postgres.log";

/// What the data directory holds.
pub(super) enum DataDir {
    Absent,
    Empty,
    Cluster,
}

/// Decides what `dir` is and refuses anything that is not ours to use.
pub(super) fn inspect(dir: &Path, run_as: RunAs) -> Result<DataDir, StartupError> {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Absent),
        Err(e) => return Err(StartupError::DataDir(format!("{}: {e}", dir.display()))),
    };
    if !meta.is_dir() {
        return Err(StartupError::DataDir(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != run_as.uid && meta.uid() != me {
        return Err(StartupError::DataDir(format!(
            "{} is owned by {}, not by {} who runs the cluster",
            dir.display(),
            user_name(meta.uid()),
            user_name(run_as.uid)
        )));
    }
    let mut entries =
        fs::read_dir(dir).map_err(|e| StartupError::DataDir(format!("{}: {e}", dir.display())))?;
    if entries.next().is_none() {
        return Ok(DataDir::Empty);
    }
    if !dir.join("PG_VERSION").is_file() {
        return Err(StartupError::DataDir(format!(
            "{} is not empty and not a Postgres cluster (no PG_VERSION); choose another --data-dir",
            dir.display()
        )));
    }
    if meta.uid() != run_as.uid {
        return Err(StartupError::DataDir(format!(
            "{} is owned by {}, not by {} who runs the cluster",
            dir.display(),
            user_name(meta.uid()),
            user_name(run_as.uid)
        )));
    }
    Ok(DataDir::Cluster)
}

/// Refuses to start a second postmaster on a directory one is already serving.
pub(super) fn refuse_if_running(dir: &Path) -> Result<(), StartupError> {
    match live_postmaster(dir) {
        Some((pid, _)) => Err(StartupError::DataDir(format!(
            "{} is in use by a running postgres (pid {pid}); stop it first",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// The pid and port of the postgres serving `dir`, from its postmaster.pid, if alive.
pub(super) fn live_postmaster(dir: &Path) -> Option<(libc::pid_t, u16)> {
    let text = fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<libc::pid_t>().ok()?;
    let port = lines
        .nth(2)
        .and_then(|l| l.trim().parse::<u16>().ok())
        .unwrap_or(0);
    // SAFETY: signal 0 only checks that the process exists.
    let alive = pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    (alive && process_is_postgres(pid)).then_some((pid, port))
}

fn process_is_postgres(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "postgres")
        .unwrap_or(true)
}

/// Fails early with a clear message when the cluster's user cannot enter a directory on
/// the way to the data directory (e.g. a data directory under /root, run as root).
pub(super) fn check_reachable(dir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    if run_as.uid == 0 {
        return Ok(());
    }
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let can_enter = if meta.uid() == run_as.uid {
            mode & 0o100 != 0
        } else if meta.gid() == run_as.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            return Err(StartupError::DataDir(format!(
                "{} cannot enter {}, so it cannot use a data directory below it; choose another --data-dir",
                user_name(run_as.uid),
                ancestor.display()
            )));
        }
    }
    Ok(())
}
