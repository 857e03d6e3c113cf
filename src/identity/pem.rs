//! A push certificate and its key as PEM files.
//!
//! The topic is the certificate subject's UID attribute: that is how Apple
//! names the topic a certificate may push to.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{IdentityError, PushIdentity};

/// The X.500 UID attribute (0.9.2342.19200300.100.1.1).
const UID_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];

/// Facts read out of a push certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    pub topic: String,
    pub not_after: i64,
}

/// Reads the topic (subject UID) and notAfter from a DER certificate.
pub fn certificate_facts(der: &[u8], path: &str) -> Result<CertificateFacts, IdentityError> {
    let bad = |reason: String| IdentityError::BadCertificate {
        path: path.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let oid =
        x509_parser::der_parser::oid::Oid::from(UID_OID).map_err(|_| bad("bad OID".into()))?;
    let topic = cert
        .subject()
        .iter_by_oid(&oid)
        .next()
        .and_then(|attr| attr.as_str().ok())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| IdentityError::NoTopic {
            path: path.to_owned(),
        })?;
    Ok(CertificateFacts {
        topic: topic.to_owned(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// A certificate identity: loaded from PEM here, or from PKCS#12 by
/// [`super::p12`]; only the kind shown in reports differs.
pub struct PemIdentity {
    kind: &'static str,
    facts: CertificateFacts,
    key: Arc<CertifiedKey>,
}

impl PemIdentity {
    /// Loads `cert_path` (the push certificate first, then any chain) and the
    /// private key from `key_path` (which may be the same file).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<PemIdentity, IdentityError> {
        let cert_name = cert_path.display().to_string();
        let key_name = key_path.display().to_string();
        let cert_pem = read(cert_path, "certificate file")?;
        let key_pem = if key_path == cert_path {
            cert_pem.clone()
        } else {
            read(key_path, "key file")?
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| IdentityError::BadCertificate {
                path: cert_name.clone(),
                reason: e.to_string(),
            })?;
        let first = chain.first().ok_or_else(|| IdentityError::NoCertificate {
            path: cert_name.clone(),
        })?;
        let facts = certificate_facts(first, &cert_name)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| IdentityError::NoKey {
            path: key_name.clone(),
        })?;
        Self::from_parts("PEM certificate", chain, key, facts, &key_name)
    }

    /// Builds the identity from DER parts (also used by other loaders).
    pub fn from_parts(
        kind: &'static str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        facts: CertificateFacts,
        key_name: &str,
    ) -> Result<PemIdentity, IdentityError> {
        let rejected = |e: rustls::Error| IdentityError::KeyRejected {
            path: key_name.to_owned(),
            reason: e.to_string(),
        };
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(rejected)?;
        let certified = CertifiedKey::new(chain, signing);
        // Refuse a key that does not belong to the certificate now, not at
        // the first TLS handshake with Apple.
        certified.keys_match().map_err(rejected)?;
        Ok(PemIdentity {
            kind,
            facts,
            key: Arc::new(certified),
        })
    }
}

pub(crate) fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl PushIdentity for PemIdentity {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn topic(&self) -> &str {
        &self.facts.topic
    }

    fn not_after(&self) -> Option<i64> {
        Some(self.facts.not_after)
    }

    fn client_certificate(&self) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.key))
    }
}
