//! Writing files that hold secrets: a private key must never be readable
//! by others, not even for the moment between creating and chmod-ing it,
//! and an admin's existing file must never be overwritten by a migration.
//!
//! [`place`] writes a complete file under a temporary name created with
//! `O_EXCL` and its final mode, then links it to the real name, which fails
//! if that name exists. So the real name either does not exist or holds the
//! whole content, and a file that appeared meanwhile is kept. Re-running is
//! idempotent: the same bytes already in place are left alone.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What [`check`] found at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing there: [`place`] will create it.
    Absent,
    /// The same bytes: nothing to do.
    Same,
}

/// Why a file cannot be placed.
#[derive(Debug)]
pub enum PlaceError {
    /// Something else is already there; it is left untouched.
    Differs(PathBuf),
    /// The directory to write into does not exist.
    NoDirectory(PathBuf),
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for PlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaceError::Differs(p) => write!(
                f,
                "{} already exists with other contents; not overwriting it (move it away, or choose another directory with --out-dir)",
                p.display()
            ),
            PlaceError::NoDirectory(p) => write!(f, "directory {} does not exist", p.display()),
            PlaceError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PlaceError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PlaceError + '_ {
    move |source| PlaceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `contents` can be placed at `path`: absent, or already there.
/// Never reads more than `contents.len() + 1` bytes of an existing file.
pub fn check(path: &Path, contents: &[u8]) -> Result<Found, PlaceError> {
    let dir = parent(path);
    if !dir.is_dir() {
        return Err(PlaceError::NoDirectory(dir.to_owned()));
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink is "something else", not room for a file.
            return match std::fs::symlink_metadata(path) {
                Ok(_) => Err(PlaceError::Differs(path.to_owned())),
                Err(_) => Ok(Found::Absent),
            };
        }
        Err(e) => return Err(io(path)(e)),
    };
    let mut existing = Vec::with_capacity(contents.len() + 1);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, contents.len() as u64 + 1),
        &mut existing,
    )
    .map_err(io(path))?;
    if existing == contents {
        Ok(Found::Same)
    } else {
        Err(PlaceError::Differs(path.to_owned()))
    }
}

/// Writes `contents` to `path` with permission bits `mode` unless the same
/// bytes are already there; refuses to replace anything else.
pub fn place(path: &Path, contents: &[u8], mode: u32) -> Result<Found, PlaceError> {
    if check(path, contents)? == Found::Same {
        return Ok(Found::Same);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = parent(path).join(format!(
        ".{}.{}.tmp",
        name.as_deref().unwrap_or("xapsd"),
        std::process::id()
    ));
    let result = write_new(&temp, contents, mode).and_then(|()| {
        std::fs::hard_link(&temp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PlaceError::Differs(path.to_owned())
            } else {
                io(path)(e)
            }
        })
    });
    let _ = std::fs::remove_file(&temp);
    result.map(|()| Found::Absent)
}

/// Creates `path` (which must not exist) with `mode` from the start.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PlaceError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xapsd-files-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn places_once_with_its_mode_and_never_overwrites() {
        let d = dir("place");
        let key = d.join("k.pem");
        assert_eq!(place(&key, b"secret", 0o600).unwrap(), Found::Absent);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(place(&key, b"secret", 0o600).unwrap(), Found::Same);
        assert!(matches!(
            place(&key, b"other", 0o600),
            Err(PlaceError::Differs(_))
        ));
        assert!(matches!(
            place(&key, b"secretX", 0o600),
            Err(PlaceError::Differs(_))
        ));
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert!(matches!(
            check(&d.join("missing/k.pem"), b"x"),
            Err(PlaceError::NoDirectory(_))
        ));
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        assert!(matches!(
            check(&d.join("dangling"), b"x"),
            Err(PlaceError::Differs(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
