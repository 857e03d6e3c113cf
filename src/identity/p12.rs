//! A push certificate and its key in one PKCS#12 bundle (`.p12`, `.pfx`).
//!
//! That is what Keychain Access exports when an admin saves the push
//! certificate from a Mac, usually with an empty password (3DES and RC2
//! encryption), and what `openssl pkcs12 -export` writes (AES-256 with
//! PBKDF2 since OpenSSL 3). The password comes from a file so it never sits
//! in the JSON config or on a command line; a missing file means the empty
//! password. Once opened, the bundle is the same kind of identity as PEM
//! files: the certificate's subject UID is the topic.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::pem::{certificate_facts, read, PemIdentity};
use super::IdentityError;

/// What reports call a PKCS#12 identity.
pub const KIND: &str = "PKCS#12 certificate";

/// Reads the password file: its first line, without the line ending, so an
/// `echo secret > file` works. `None` means the empty password.
pub fn read_password(path: Option<&Path>) -> Result<String, IdentityError> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    let bytes = read(path, "PKCS#12 password file")?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} can be read by other users: chmod 600 it",
                path.display()
            );
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| IdentityError::P12 {
        path: path.display().to_string(),
        reason: "the password file is not UTF-8 text".into(),
    })?;
    let line = text.split('\n').next().unwrap_or("");
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Opens `p12_path` with the password in `password_path` (empty if `None`).
pub fn load(p12_path: &Path, password_path: Option<&Path>) -> Result<PemIdentity, IdentityError> {
    let password = read_password(password_path)?;
    let der = read(p12_path, "PKCS#12 file")?;
    from_der(&der, &password, &p12_path.display().to_string())
}

/// Opens a PKCS#12 bundle held in memory; `name` is used in errors.
pub fn from_der(der: &[u8], password: &str, name: &str) -> Result<PemIdentity, IdentityError> {
    let bad = |reason: String| IdentityError::P12 {
        path: name.to_owned(),
        reason,
    };
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der, password).map_err(|e| {
        match e {
            // A MAC that does not verify is, in practice, a wrong password.
            p12_keystore::error::Error::MacError(_) => {
                bad("wrong password (the integrity check failed); check p12_password_file".into())
            }
            other => bad(other.to_string()),
        }
    })?;
    if archive.keys.is_empty() {
        return Err(IdentityError::NoKey {
            path: name.to_owned(),
        });
    }
    if archive.certs.is_empty() {
        return Err(IdentityError::NoCertificate {
            path: name.to_owned(),
        });
    }
    // Try certificates that name the key (localKeyId) first, then the rest:
    // the first certificate with a topic whose public key matches wins.
    let mut last_error = None;
    for key in &archive.keys {
        let mut order: Vec<usize> = (0..archive.certs.len()).collect();
        order.sort_by_key(|&i| {
            let linked = match (&key.local_key_id, &archive.certs[i].local_key_id) {
                (Some(k), Some(c)) => k.0 == *c,
                _ => false,
            };
            !linked
        });
        for i in order {
            let leaf = archive.certs[i].cert.as_der();
            let facts = match certificate_facts(leaf, name) {
                Ok(facts) => facts,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let mut chain = vec![CertificateDer::from(leaf.to_vec())];
            chain.extend(
                archive
                    .certs
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, c)| CertificateDer::from(c.cert.as_der().to_vec())),
            );
            let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key.as_der().to_vec()));
            match PemIdentity::from_parts(KIND, chain, key_der, facts, name) {
                Ok(identity) => return Ok(identity),
                Err(e) => last_error = Some(e),
            }
        }
    }
    Err(last_error.unwrap_or_else(|| bad("no certificate matches the private key".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PushIdentity;

    /// Made by `openssl pkcs12 -export -legacy -passout pass:` (3DES and
    /// RC2, as Keychain Access writes) from the RSA test key in
    /// tests/fixtures/keys and a self-signed certificate whose UID is the topic.
    const LEGACY_EMPTY: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa-legacy-empty.p12");
    /// The same with OpenSSL 3's defaults (AES-256-CBC, PBKDF2) and password `secret`.
    const MODERN_SECRET: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa-aes-secret.p12");
    const TOPIC: &str = "com.apple.mail.XServer.11111111-2222-3333-4444-555555555555";

    #[test]
    fn opens_keychain_style_bundles_with_an_empty_password() {
        let id = from_der(LEGACY_EMPTY, "", "legacy.p12").unwrap();
        assert_eq!(id.topic(), TOPIC);
        assert_eq!(id.kind(), KIND);
        assert!(id.client_certificate().is_some());
        assert!(id.not_after().is_some());
    }

    #[test]
    fn opens_openssl3_bundles_and_names_a_wrong_password() {
        let id = from_der(MODERN_SECRET, "secret", "modern.p12").unwrap();
        assert_eq!(id.topic(), TOPIC);
        let err = match from_der(MODERN_SECRET, "wrong", "modern.p12") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a wrong password must be refused"),
        };
        assert!(err.contains("wrong password"), "{err}");
        assert!(err.contains("modern.p12"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [&b""[..], b"\x30\x03\x02\x01\x03", &LEGACY_EMPTY[..100]] {
            assert!(from_der(input, "", "x.p12").is_err());
        }
    }

    #[test]
    fn every_truncation_of_a_bundle_is_an_error_not_a_panic() {
        for len in 0..LEGACY_EMPTY.len() {
            assert!(
                from_der(&LEGACY_EMPTY[..len], "", "cut.p12").is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn password_file_takes_the_first_line() {
        let dir = std::env::temp_dir().join(format!("xapsd-p12pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\r\nignored\n").unwrap();
        assert_eq!(read_password(Some(&file)).unwrap(), "s3cret");
        std::fs::write(&file, "").unwrap();
        assert_eq!(read_password(Some(&file)).unwrap(), "");
        assert_eq!(read_password(None).unwrap(), "");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
