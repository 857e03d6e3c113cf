//! Files that hold secrets must not be readable by anyone but their owner.
//!
//! A push key or the plugin's password in a world-readable file is as good
//! as published on a shared router. Rather than warn (and be ignored), the
//! daemon refuses to start and names the file, its mode and the fix. The
//! files that count are those holding a private key or a password: the
//! `plugin_auth` file, `p12_password_file`, `p12_file` (the key is inside),
//! `key_file` (or `cert_file` when the key is in it), `p8_file`,
//! `tls_key_file`, `vendor_key_file`, and the JSON config itself when it
//! holds `plugin_auth` inline or `apple_id_hashed_password` (which
//! Apple's service takes in place of the password). Certificates,
//! trust anchors and a config without secrets may be readable by all.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::auth::AuthSetting;
use crate::config::Config;

/// Permission bits that make a secret readable by the group or others.
const EXPOSING: u32 = 0o044;

/// Why a secret file was refused.
#[derive(Debug)]
pub enum SecretFileError {
    Readable {
        key: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFileError::Readable { key, path, mode } => write!(
                f,
                "{key} {} holds a secret but is readable by {} (mode {mode:04o}): run `chmod 600 {}`",
                path.display(),
                match (mode & 0o040 != 0, mode & 0o004 != 0) {
                    (true, true) => "its group and others",
                    (true, false) => "its group",
                    _ => "others",
                },
                path.display()
            ),
        }
    }
}

impl std::error::Error for SecretFileError {}

/// The files of this config that hold secrets, each with the key naming it.
pub fn secret_files(config: &Config) -> Vec<(&'static str, &Path)> {
    let mut files = Vec::new();
    if let Some(path) = &config.secret_config_file {
        files.push(("config file", path.as_path()));
    }
    if let Some(AuthSetting::File(path)) = &config.plugin_auth {
        files.push(("plugin_auth", path.as_path()));
    }
    if let Some(path) = &config.key_file {
        files.push(("key_file", path.as_path()));
    } else if let Some(path) = &config.cert_file {
        files.push(("cert_file (holding the key)", path.as_path()));
    }
    for (key, path) in [
        ("p12_file", &config.p12_file),
        ("p12_password_file", &config.p12_password_file),
        ("p8_file", &config.p8_file),
        ("tls_key_file", &config.tls_key_file),
        ("vendor_key_file", &config.vendor_key_file),
    ] {
        if let Some(path) = path {
            files.push((key, path.as_path()));
        }
    }
    files
}

/// Refuses the first secret file readable by group or others. A file that
/// cannot be examined (missing, say) is left to the code that reads it,
/// whose error says more.
pub fn check(config: &Config) -> Result<(), SecretFileError> {
    for (key, path) in secret_files(config) {
        check_file(key, path)?;
    }
    Ok(())
}

fn check_file(key: &'static str, path: &Path) -> Result<(), SecretFileError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & EXPOSING != 0 {
        return Err(SecretFileError::Readable {
            key,
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_owner_readable_secrets_pass_and_errors_say_how_to_fix() {
        let dir = std::env::temp_dir().join(format!("xapsd-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config {
            key_file: Some(file(&dir, "k.pem", 0o600)),
            cert_file: Some(file(&dir, "c.pem", 0o644)),
            p8_file: Some(file(&dir, "a.p8", 0o400)),
            ..Config::default()
        };
        check(&config).unwrap();

        let exposed = file(&dir, "pw", 0o640);
        let config = Config {
            p12_file: Some(file(&dir, "b.p12", 0o600)),
            p12_password_file: Some(exposed.clone()),
            ..Config::default()
        };
        let err = check(&config).unwrap_err().to_string();
        let want = format!(
            "p12_password_file {} holds a secret but is readable by its group (mode 0640): run `chmod 600 {}`",
            exposed.display(),
            exposed.display()
        );
        assert_eq!(err, want);

        // The macOS Server vendor key is a secret too.
        let config = Config {
            vendor_key_file: Some(file(&dir, "vendor.key", 0o644)),
            ..Config::default()
        };
        let err = check(&config).unwrap_err().to_string();
        assert!(err.starts_with("vendor_key_file "), "{err}");

        // The certificate counts when it carries the key.
        let config = Config {
            cert_file: Some(file(&dir, "both.pem", 0o604)),
            ..Config::default()
        };
        let err = check(&config).unwrap_err().to_string();
        assert!(
            err.contains("cert_file (holding the key)") && err.contains("by others (mode 0604)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_config_file_counts_only_with_an_inline_password() {
        let config = Config {
            plugin_auth: Some(AuthSetting::File("/etc/xapsd/auth".into())),
            ..Config::default()
        };
        assert_eq!(
            secret_files(&config),
            vec![("plugin_auth", Path::new("/etc/xapsd/auth"))]
        );
        let config = Config {
            secret_config_file: Some("/etc/xapsd/xapsd.json".into()),
            ..Config::default()
        };
        assert_eq!(
            secret_files(&config),
            vec![("config file", Path::new("/etc/xapsd/xapsd.json"))]
        );
    }
}
