//! The RSA side of the certificate service: new keys and CSRs for the five
//! certificates, and the vendor identity's SHA-1 signature over a request.
//!
//! Apple's service predates modern algorithms: it wants RSA-2048 keys,
//! SHA1-with-RSA CSRs and a PKCS#1 v1.5 SHA-1 signature by the macOS Server
//! vendor key. ring does neither RSA key generation nor SHA-1 signing, so
//! this module uses RustCrypto's `rsa` and x509-cert's CSR builder. Key
//! generation takes seconds on a router: callers run it off the event loop.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rsa::PrivateKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha1::Sha1;
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::der::{pem::LineEnding, EncodePem};
use x509_cert::name::Name;

/// Key size Apple's service issues push certificates for.
pub const KEY_BITS: usize = 2048;

/// Why a key, CSR or signature could not be made, or the vendor identity
/// could not be read.
#[derive(Debug)]
pub enum CsrError {
    Generate(String),
    Build(String),
    Sign(String),
    VendorRead { path: String, reason: String },
    VendorKey { path: String, reason: String },
    VendorChain { path: String, reason: String },
}

impl fmt::Display for CsrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsrError::Generate(e) => write!(f, "cannot generate an RSA key: {e}"),
            CsrError::Build(e) => write!(f, "cannot build a certificate request: {e}"),
            CsrError::Sign(e) => write!(f, "cannot sign with the vendor key: {e}"),
            CsrError::VendorRead { path, reason } => write!(f, "cannot read {path}: {reason}"),
            CsrError::VendorKey { path, reason } => {
                write!(f, "vendor_key_file {path}: {reason}")
            }
            CsrError::VendorChain { path, reason } => {
                write!(f, "vendor_chain_file {path}: {reason}")
            }
        }
    }
}

impl std::error::Error for CsrError {}

/// A fresh key and the CSR that asks for a certificate for it.
pub struct NewKey {
    /// PKCS#8 DER, as the store keeps it and rustls reads it.
    pub key_pkcs8: Vec<u8>,
    /// The public key as SubjectPublicKeyInfo DER, to match the certificate.
    pub spki_der: Vec<u8>,
    pub csr_pem: String,
}

/// Makes an RSA-2048 key and a SHA1-with-RSA CSR with subject
/// `CN=<common_name>, C=US`.
pub fn new_key(common_name: &str) -> Result<NewKey, CsrError> {
    let mut rng = getrandom::SysRng;
    let key = PrivateKey::new(&mut rng, KEY_BITS).map_err(|e| CsrError::Generate(e.to_string()))?;
    let key_pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| CsrError::Generate(e.to_string()))?
        .as_bytes()
        .to_vec();
    let spki_der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| CsrError::Generate(e.to_string()))?
        .as_bytes()
        .to_vec();
    // RFC 4514 order: the last RDN of the string comes first in the CSR,
    // so this is C=US, CN=... as macOS Server writes it.
    let subject = Name::from_str(&format!("CN={common_name},C=US"))
        .map_err(|e| CsrError::Build(e.to_string()))?;
    let signer = SigningKey::<Sha1>::new(key);
    let csr = RequestBuilder::new(subject)
        .and_then(|b| b.build::<_, Signature>(&signer))
        .map_err(|e| CsrError::Build(e.to_string()))?;
    let csr_pem = csr
        .to_pem(LineEnding::LF)
        .map_err(|e| CsrError::Build(e.to_string()))?;
    Ok(NewKey {
        key_pkcs8,
        spki_der,
        csr_pem,
    })
}

/// The macOS Server signing identity the admin supplies.
pub struct Vendor {
    key: SigningKey<Sha1>,
    /// Every certificate of the chain file, DER, concatenated.
    pub chain_der: Vec<u8>,
}

impl Vendor {
    /// Reads the vendor key (PEM, PKCS#8 or PKCS#1) and its certificate
    /// chain (PEM, the vendor certificate first) and checks they belong
    /// together.
    pub fn load(key_path: &Path, chain_path: &Path) -> Result<Vendor, CsrError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| CsrError::VendorRead {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let key_name = key_path.display().to_string();
        let chain_name = chain_path.display().to_string();
        let key_err = |reason: String| CsrError::VendorKey {
            path: key_name.clone(),
            reason,
        };
        let key = match PrivateKeyDer::from_pem_slice(&read(key_path)?) {
            Ok(PrivateKeyDer::Pkcs8(der)) => PrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|e| key_err(e.to_string()))?,
            Ok(PrivateKeyDer::Pkcs1(der)) => PrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
                .map_err(|e| key_err(e.to_string()))?,
            Ok(_) => return Err(key_err("is not an RSA key".into())),
            Err(_) => return Err(key_err("holds no PEM private key".into())),
        };
        let chain_err = |reason: String| CsrError::VendorChain {
            path: chain_name.clone(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(chain_path)?)
                .collect::<Result<_, _>>()
                .map_err(|e| chain_err(e.to_string()))?;
        let first = certs
            .first()
            .ok_or_else(|| chain_err("holds no PEM certificate".into()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(first).map_err(|e| chain_err(e.to_string()))?;
        let public = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| key_err(e.to_string()))?;
        if cert.public_key().raw != public.as_bytes() {
            return Err(chain_err(format!(
                "its first certificate does not belong to the key in {key_name}"
            )));
        }
        Ok(Vendor {
            key: SigningKey::new(key),
            chain_der: certs.iter().flat_map(|c| c.iter().copied()).collect(),
        })
    }

    /// PKCS#1 v1.5 SHA-1 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CsrError> {
        use rsa::signature::{SignatureEncoding, Signer};
        let signature: Signature = self
            .key
            .try_sign(message)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(signature.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn csr_names_the_service_and_verifies_with_its_own_2048_bit_key() {
        let made = new_key("com.apple.servermgrd.apns.mail").unwrap();
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(
            made.csr_pem.as_bytes(),
        )
        .unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let info = &csr.certification_request_info;
        assert_eq!(
            info.subject.to_string(),
            "C=US, CN=com.apple.servermgrd.apns.mail"
        );
        assert_eq!(
            csr.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.5",
            "sha1WithRSAEncryption"
        );
        let spki = &info.subject_pki;
        match spki.parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
            other => panic!("not RSA: {other:?}"),
        }
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            &spki.subject_public_key.data,
        )
        .verify(info.raw, &csr.signature_value.data)
        .unwrap();
        // rustls (ring) signs TLS handshakes with the stored key.
        let key = PrivateKeyDer::Pkcs8(made.key_pkcs8.into());
        rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    }
}
