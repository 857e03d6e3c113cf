//! A scratch directory per test, removed when dropped.
//!
//! Tests write certificates, configs and the daemon's database into it, so
//! tests running in parallel never share files. It lives here rather than in a
//! `tempfile` dev-dependency because a unique name and a recursive delete are
//! all we need. Set `XAPSD_KEEP_TMP=1` to keep the directories for a post-mortem.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A uniquely named directory under the system temp dir.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/xapsd-<label>-<pid>-<n>-<nanos>`; panics if it cannot.
    pub fn new(label: &str) -> TempDir {
        // pid + counter keep names unique within and across test binaries; the
        // clock keeps them unique across reruns if an old directory was kept.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("xapsd-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`, for brevity at call sites.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory (mode 0600: test
    /// files are keys and passwords) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        write_private(&path, contents);
        path
    }
}

/// Writes a file readable by its owner only, as the daemon wants secrets.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("XAPSD_KEEP_TMP").is_some() {
            eprintln!("keeping temp dir {}", self.path.display());
            return;
        }
        // Best effort: a failed cleanup must not turn a passing test red.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
