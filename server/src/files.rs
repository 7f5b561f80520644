//! Files that hold secrets (the key webhook secrets are sealed with, the embedded
//! cluster's password): made only where nothing is (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode
//! 0600), so a file or symlink placed there beforehand can neither read a secret nor
//! redirect where it is written; read only from a regular file that no one but its
//! owner can read (a symlink is refused, not followed).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a private file could not be made or read. The `Display` is a whole sentence
/// naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    /// Something is already at the path a new file was to be made at.
    #[error("{0} exists already (a file or link placed there beforehand is never written through); remove it if it is yours")]
    Exists(String),
    /// The path is a symbolic link (or not a regular file).
    #[error("{0} is a symbolic link or not a regular file; give the file itself")]
    NotAFile(String),
    /// The file can be read or written by others than its owner.
    #[error("{0} has mode {1:o}, open to others than its owner; chmod 600 it")]
    Open(String, u32),
    /// Any other failure of the system call.
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

/// Makes `path` with `contents`, mode 0600, failing if anything is at `path` already
/// (a symlink included: it is not followed).
pub fn create_new(path: &Path, contents: &[u8]) -> Result<(), PrivateFileError> {
    let shown = path.display().to_string();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => PrivateFileError::Exists(shown.clone()),
            _ => PrivateFileError::Io(shown.clone(), e),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| PrivateFileError::Io(shown, e))
}

/// Replaces whatever is at `path` (a file it made before, say) with a new file: the
/// old entry is unlinked (a symlink itself, never its target), then [`create_new`].
pub fn replace(path: &Path, contents: &[u8]) -> Result<(), PrivateFileError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PrivateFileError::Io(path.display().to_string(), e)),
    }
    create_new(path, contents)
}

/// The text of `path`, `None` when there is no such file; refused when it is a
/// symlink, not a regular file, or open to others than its owner.
pub fn read(path: &Path) -> Result<Option<String>, PrivateFileError> {
    let shown = path.display().to_string();
    let mut file = match open_no_follow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink fails with ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PrivateFileError::NotAFile(shown))
        }
        Err(e) => return Err(PrivateFileError::Io(shown, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| PrivateFileError::Io(shown.clone(), e))?;
    if !meta.is_file() {
        return Err(PrivateFileError::NotAFile(shown));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Open(shown, mode));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| PrivateFileError::Io(shown, e))?;
    Ok(Some(text))
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("triggers-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_file_is_private_and_never_made_over_anything() {
        let dir = scratch("new");
        let path = dir.join("key");
        create_new(&path, b"secret").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read(&path).unwrap().as_deref(), Some("secret"));
        assert!(matches!(
            create_new(&path, b"other"),
            Err(PrivateFileError::Exists(_))
        ));
        // A symlink placed where the file is to be made is not written through.
        let target = dir.join("target");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            create_new(&link, b"secret"),
            Err(PrivateFileError::Exists(_))
        ));
        assert!(!target.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_refuses_links_and_files_others_can_read() {
        let dir = scratch("read");
        assert!(read(&dir.join("missing")).unwrap().is_none());
        let open = dir.join("open");
        fs::write(&open, "k").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&open).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let private = dir.join("private");
        create_new(&private, b"k").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(matches!(read(&link), Err(PrivateFileError::NotAFile(_))));
        // replace unlinks the link itself and leaves its target alone.
        replace(&link, b"new").unwrap();
        assert_eq!(read(&private).unwrap().as_deref(), Some("k"));
        assert_eq!(read(&link).unwrap().as_deref(), Some("new"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
