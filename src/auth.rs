//! HTTP Basic authentication of the plugin.
//!
//! A listener that other hosts (or other local users) can reach should not
//! let anyone register devices or trigger pushes. The Dovecot plugin sends
//! `Authorization: Basic` when its URL carries `user:password@`, so the
//! daemon can demand exactly that. The secret is held only as the SHA-256 of
//! `user:password`; a request's credentials are hashed the same way and the
//! two digests are compared in constant time, so neither the content nor
//! the length of the secret leaks through timing. Nothing here ever logs or
//! prints a credential.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use data_encoding::BASE64;
use ring::digest::{digest, SHA256};

use crate::limits::MAX_SECRET_FILE;

/// Where `plugin_auth` comes from: inline in the config, or `@/path`.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthSetting {
    Inline(String),
    File(PathBuf),
}

impl fmt::Debug for AuthSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSetting::Inline(_) => f.write_str("Inline(<redacted>)"),
            AuthSetting::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl AuthSetting {
    /// `user:password`, or `@` followed by the path of a file holding that line.
    pub fn parse(s: &str) -> Result<AuthSetting, AuthError> {
        match s.strip_prefix('@') {
            Some("") => Err(AuthError::Malformed {
                source: Source::Inline,
            }),
            Some(path) => Ok(AuthSetting::File(PathBuf::from(path))),
            None => {
                check_line(s, Source::Inline)?;
                Ok(AuthSetting::Inline(s.to_owned()))
            }
        }
    }
}

/// Where a malformed credential was found (never the credential itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Inline,
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Inline => f.write_str("the inline value"),
            Source::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Why `plugin_auth` could not be used.
#[derive(Debug)]
pub enum AuthError {
    Read(PathBuf, std::io::Error),
    TooLarge(PathBuf),
    Malformed { source: Source },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            AuthError::TooLarge(path) => write!(
                f,
                "{} is over {MAX_SECRET_FILE} bytes; it must hold one user:password line",
                path.display()
            ),
            AuthError::Malformed { source } => write!(
                f,
                "{source} is not user:password (a non-empty user without `:`, printable characters only)"
            ),
        }
    }
}

impl std::error::Error for AuthError {}

fn check_line(line: &str, source: Source) -> Result<(), AuthError> {
    let ok = match line.split_once(':') {
        Some((user, _)) => !user.is_empty() && !line.chars().any(char::is_control),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::Malformed { source })
    }
}

/// The credentials in force: only their digest is kept.
#[derive(Clone)]
pub struct PluginAuth {
    expected: [u8; 32],
}

impl fmt::Debug for PluginAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginAuth(<redacted>)")
    }
}

/// What an `Authorization` header amounted to; logged instead of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Missing,
    NotBasic,
    Undecodable,
    Wrong,
}

impl Verdict {
    /// Why a request was refused, for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Missing => "no credentials",
            Verdict::NotBasic => "credentials not of the Basic scheme",
            Verdict::Undecodable => "Basic credentials that are not base64",
            Verdict::Wrong => "wrong user or password",
        }
    }
}

impl PluginAuth {
    /// Reads the setting (the file's first line for `@/path`).
    pub fn load(setting: &AuthSetting) -> Result<PluginAuth, AuthError> {
        match setting {
            AuthSetting::Inline(line) => Ok(PluginAuth::from_line(line)),
            AuthSetting::File(path) => {
                let read = |e| AuthError::Read(path.clone(), e);
                let file = std::fs::File::open(path).map_err(read)?;
                let mut text = String::new();
                file.take(MAX_SECRET_FILE as u64 + 1)
                    .read_to_string(&mut text)
                    .map_err(read)?;
                if text.len() > MAX_SECRET_FILE {
                    return Err(AuthError::TooLarge(path.clone()));
                }
                let line = text.lines().next().unwrap_or_default();
                check_line(line, Source::File(path.clone()))?;
                Ok(PluginAuth::from_line(line))
            }
        }
    }

    fn from_line(line: &str) -> PluginAuth {
        let mut expected = [0u8; 32];
        expected.copy_from_slice(digest(&SHA256, line.as_bytes()).as_ref());
        PluginAuth { expected }
    }

    /// Checks the value of a request's `Authorization` header, if any.
    pub fn verify(&self, header: Option<&[u8]>) -> Verdict {
        let Some(value) = header else {
            return Verdict::Missing;
        };
        let value = value.trim_ascii();
        let Some(scheme) = value.get(..6) else {
            return Verdict::NotBasic;
        };
        if !scheme.eq_ignore_ascii_case(b"basic ") {
            return Verdict::NotBasic;
        }
        let Ok(decoded) = BASE64.decode(value[6..].trim_ascii()) else {
            return Verdict::Undecodable;
        };
        if same_digest(digest(&SHA256, &decoded).as_ref(), &self.expected) {
            Verdict::Accepted
        } else {
            Verdict::Wrong
        }
    }
}

/// Compares two digests in time independent of where they differ. (ring's
/// `verify_slices_are_equal` is deprecated and disclaims side-channel
/// promises.) Both sides are SHA-256 outputs, so the length is fixed and the
/// attacker does not choose the bytes compared.
fn same_digest(got: &[u8], expected: &[u8; 32]) -> bool {
    if got.len() != expected.len() {
        return false;
    }
    let mut diff = 0u8;
    for (a, b) in got.iter().zip(expected) {
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

/// `Basic <base64>` for a setting: what `xapsd devices|remove|push` send.
pub fn authorization_header(setting: &AuthSetting) -> Result<String, AuthError> {
    let line = match setting {
        AuthSetting::Inline(line) => line.clone(),
        AuthSetting::File(path) => {
            // Reuse the loader's checks, then read the line again for its bytes.
            PluginAuth::load(setting)?;
            let text =
                std::fs::read_to_string(path).map_err(|e| AuthError::Read(path.clone(), e))?;
            text.lines().next().unwrap_or_default().to_owned()
        }
    };
    Ok(format!("Basic {}", BASE64.encode(line.as_bytes())))
}

/// Is this path served without credentials? Only the read-only status
/// endpoints, and only to loopback peers (a local monitor needs no secret).
pub fn open_path(path: &str, peer_is_loopback: bool) -> bool {
    peer_is_loopback && matches!(path, "/health" | "/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> Vec<u8> {
        format!("Basic {}", BASE64.encode(s.as_bytes())).into_bytes()
    }

    #[test]
    fn accepts_only_the_exact_credentials() {
        let auth = PluginAuth::load(&AuthSetting::parse("xapsd:s3cret").unwrap()).unwrap();
        assert_eq!(
            auth.verify(Some(b"Basic eGFwc2Q6czNjcmV0")),
            Verdict::Accepted
        );
        assert_eq!(
            auth.verify(Some(b"basic  eGFwc2Q6czNjcmV0 ")),
            Verdict::Accepted
        );
        assert_eq!(auth.verify(Some(&basic("xapsd:s3cre"))), Verdict::Wrong);
        assert_eq!(auth.verify(Some(&basic("xapsd:s3cret2"))), Verdict::Wrong);
        assert_eq!(auth.verify(Some(&basic("Xapsd:s3cret"))), Verdict::Wrong);
        assert_eq!(auth.verify(Some(&basic(":"))), Verdict::Wrong);
        assert_eq!(auth.verify(None), Verdict::Missing);
        assert_eq!(auth.verify(Some(b"Bearer abc")), Verdict::NotBasic);
        assert_eq!(auth.verify(Some(b"Basic")), Verdict::NotBasic);
        assert_eq!(auth.verify(Some(b"Basic ***")), Verdict::Undecodable);
    }

    #[test]
    fn settings_are_checked_and_never_shown() {
        assert!(AuthSetting::parse("nocolon").is_err());
        assert!(AuthSetting::parse(":pw").is_err());
        assert!(AuthSetting::parse("u:p\nx").is_err());
        assert!(AuthSetting::parse("@").is_err());
        assert_eq!(
            AuthSetting::parse("@/etc/xapsd/auth").unwrap(),
            AuthSetting::File("/etc/xapsd/auth".into())
        );
        let inline = AuthSetting::parse("u:topsecret").unwrap();
        assert!(!format!("{inline:?}").contains("topsecret"));
        let err = AuthSetting::parse("topsecret").unwrap_err().to_string();
        assert!(!err.contains("topsecret"), "{err}");
        assert_eq!(
            authorization_header(&inline).unwrap(),
            format!("Basic {}", BASE64.encode(b"u:topsecret"))
        );
    }

    #[test]
    fn reads_the_first_line_of_a_file() {
        let dir = std::env::temp_dir().join(format!("xapsd-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("auth");
        std::fs::write(&file, "xapsd:s3cret\r\nignored\n").unwrap();
        let setting = AuthSetting::File(file.clone());
        let auth = PluginAuth::load(&setting).unwrap();
        assert_eq!(
            auth.verify(Some(b"Basic eGFwc2Q6czNjcmV0")),
            Verdict::Accepted
        );
        assert_eq!(
            authorization_header(&setting).unwrap(),
            "Basic eGFwc2Q6czNjcmV0"
        );
        std::fs::write(&file, "x".repeat(MAX_SECRET_FILE + 1)).unwrap();
        assert!(matches!(
            PluginAuth::load(&setting),
            Err(AuthError::TooLarge(_))
        ));
        std::fs::write(&file, "no colon\n").unwrap();
        let err = PluginAuth::load(&setting).unwrap_err().to_string();
        assert!(err.contains("auth") && !err.contains("no colon"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_status_endpoints_on_loopback_are_open() {
        assert!(open_path("/health", true));
        assert!(open_path("/metrics", true));
        assert!(!open_path("/health", false));
        assert!(!open_path("/register", true));
        assert!(!open_path("/admin/devices", true));
    }
}
