//! The operating-system user that runs `initdb` and `postgres`: ourselves, or, when
//! we run as root (which Postgres refuses), the `postgres` system user, with the files
//! the cluster needs handed over to it.

use std::ffi::CString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::error::StartupError;

/// The operating-system user that runs `initdb` and `postgres`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Whether we switch to this user (we are root) or already are it.
    switch: bool,
}

/// As root, Postgres must run as the `postgres` system user; otherwise as ourselves.
pub(super) fn run_as() -> Result<RunAs, StartupError> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 {
        return Ok(RunAs {
            uid,
            gid,
            switch: false,
        });
    }
    let name = CString::new("postgres").expect("no NUL in a literal");
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once, and
    // nothing else in this process calls getpwnam concurrently during start-up.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(StartupError::DataDir(
            "running as root, but there is no 'postgres' user to run the embedded cluster as"
                .to_string(),
        ));
    }
    // SAFETY: entry is non-null and points to a valid passwd struct.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(RunAs {
        uid,
        gid,
        switch: true,
    })
}

pub(super) fn user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| format!("{name} (uid {uid})"))
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

pub(super) fn as_user(command: &mut Command, run_as: RunAs) {
    if run_as.switch {
        command.uid(run_as.uid).gid(run_as.gid);
    }
}

pub(super) fn chown(path: &Path, run_as: RunAs) -> Result<(), StartupError> {
    if run_as.switch {
        std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid))
            .map_err(|e| StartupError::DataDir(format!("cannot chown {}: {e}", path.display())))?;
    }
    Ok(())
}

pub(super) fn write_private(
    path: &Path,
    contents: &str,
    run_as: RunAs,
) -> Result<(), StartupError> {
    crate::files::create_new(path, contents.as_bytes())
        .map_err(|e| StartupError::DataDir(format!("cannot write a password file: {e}")))?;
    chown(path, run_as)
}
