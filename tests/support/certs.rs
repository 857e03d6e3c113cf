//! Certificates made at test time: a throwaway CA, a server certificate for
//! the mock APNs and push client certificates shaped like Apple's.
//!
//! The daemon reads its APNs topic from the push certificate's subject UID
//! (OID 0.9.2342.19200300.100.1.1) and authenticates to APNs with that
//! certificate, so tests need certificates whose subject and chain they
//! control, including broken ones (no UID, expired). Everything is signed by
//! one [`TestCa`], which the mock APNs trusts for client certificates and the
//! daemon trusts (via `apns_ca_file`) for the mock's server certificate.
//! Keys are ECDSA P-256: ring cannot generate RSA keys, and the daemon must
//! not care which key type a PEM file holds.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::tempdir::TempDir;

/// The topic a macOS-Server-issued mail push certificate carries.
pub const TEST_TOPIC: &str = "com.apple.mail.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab";

/// OID of the subject attribute that carries the APNs topic (`UID`).
pub const UID_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];
/// Dotted form of [`UID_OID`], as x509-parser prints it.
pub const UID_OID_STR: &str = "0.9.2342.19200300.100.1.1";
/// An RSA-2048 key made once with `openssl genpkey` for these tests (ring,
/// rcgen's backend here, cannot generate RSA keys; Apple's push
/// certificates are RSA). Test-only: it protects nothing.
pub const RSA_KEY_PKCS8_PEM: &str = include_str!("../fixtures/keys/rsa2048-test.pkcs8.pem");
/// The same key as PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`).
pub const RSA_KEY_PKCS1_PEM: &str = include_str!("../fixtures/keys/rsa2048-test.pkcs1.pem");

/// Apple's "production push" certificate extension.
pub const APPLE_PRODUCTION_EXT_OID: &[u64] = &[1, 2, 840, 113635, 100, 6, 3, 2];

/// A certificate, its private key, and both in PEM and DER.
#[derive(Clone, Debug)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

/// Where [`CertAndKey::write_to`] put the files.
#[derive(Clone, Debug)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertAndKey {
    /// Writes `<stem>.crt.pem` and `<stem>.key.pem` into `dir`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> PemFiles {
        let cert = dir.join(format!("{stem}.crt.pem"));
        let key = dir.join(format!("{stem}.key.pem"));
        write_file(&cert, self.cert_pem.as_bytes());
        write_file(&key, self.key_pem.as_bytes());
        PemFiles { cert, key }
    }

    /// Certificate and key in one PEM file (cert first), as some tools expect.
    pub fn write_combined(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        write_file(
            &path,
            format!("{}{}", self.cert_pem, self.key_pem).as_bytes(),
        );
        path
    }

    /// The certificate as rustls wants it.
    pub fn rustls_cert(&self) -> rustls::pki_types::CertificateDer<'static> {
        rustls::pki_types::CertificateDer::from(self.cert_der.clone())
    }

    /// The key as rustls wants it.
    pub fn rustls_key(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

/// What goes into a push certificate; [`PushCertSpec::new`] gives Apple's shape.
#[derive(Clone, Debug)]
pub struct PushCertSpec {
    /// Subject UID = the APNs topic; `None` makes a certificate the daemon must refuse.
    pub uid: Option<String>,
    pub common_name: String,
    /// Adds Apple's production-push extension (1.2.840.113635.100.6.3.2).
    pub production: bool,
    /// Validity; `None` keeps rcgen's wide default (1975..4096).
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
}

impl PushCertSpec {
    pub fn new(topic: &str) -> PushCertSpec {
        PushCertSpec {
            uid: Some(topic.to_string()),
            common_name: format!("Apple Push Services: {topic}"),
            production: true,
            not_before: None,
            not_after: None,
        }
    }
}

/// A CA made for one test. Its PEM is written to a temp dir it owns.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    dir: TempDir,
    pem_path: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "xapsd test CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "xapsd tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = TempDir::new("ca");
        let pem_path = dir.write("ca.pem", cert.pem());
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            dir,
            pem_path,
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate as a PEM file (lives as long as this `TestCa`).
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// Writes the CA certificate into another directory, for files that must
    /// outlive this `TestCa`.
    pub fn write_pem_to(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        write_file(&path, self.cert_pem.as_bytes());
        path
    }

    /// A root store holding only this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                self.cert_der.clone(),
            ))
            .expect("add test CA to root store");
        roots
    }

    /// Server certificate for `localhost` and `127.0.0.1` (the mock APNs').
    pub fn server_cert(&self) -> CertAndKey {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server cert params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "mock APNs");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// Push certificate whose subject UID is `topic`.
    pub fn push_cert(&self, topic: &str) -> CertAndKey {
        self.push_cert_with(PushCertSpec::new(topic))
    }

    /// Push certificate with a CN but no UID: no topic, so the daemon must refuse it.
    pub fn push_cert_without_uid(&self) -> CertAndKey {
        self.push_cert_with(PushCertSpec {
            uid: None,
            ..PushCertSpec::new(TEST_TOPIC)
        })
    }

    pub fn push_cert_with(&self, spec: PushCertSpec) -> CertAndKey {
        let key = KeyPair::generate().expect("generate leaf key");
        self.push_cert_with_key(spec, key)
    }

    /// Push certificate for `topic` with the committed RSA-2048 test key, as
    /// Apple issues them. The key PEM is PKCS#1 (`BEGIN RSA PRIVATE KEY`),
    /// what `openssl pkcs12 -nodes -traditional` gives admins; `key_der`
    /// stays PKCS#8.
    pub fn push_cert_rsa(&self, topic: &str) -> CertAndKey {
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(RSA_KEY_PKCS8_PEM, &rcgen::PKCS_RSA_SHA256)
            .expect("load the RSA test key");
        let mut cert = self.push_cert_with_key(PushCertSpec::new(topic), key);
        cert.key_pem = RSA_KEY_PKCS1_PEM.to_string();
        cert
    }

    pub fn push_cert_with_key(&self, spec: PushCertSpec, key: KeyPair) -> CertAndKey {
        let params = push_params(&spec);
        self.sign_with(params, key)
    }

    /// Issues a push certificate for someone else's public key (a CSR's
    /// SubjectPublicKeyInfo, DER), as Apple's certificate service does;
    /// returns the certificate as PEM and DER.
    pub fn issue_for_public_key(
        &self,
        spki_der: &[u8],
        spec: PushCertSpec,
        serial: &[u8],
    ) -> (String, Vec<u8>) {
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).expect("CSR public key");
        let mut params = push_params(&spec);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        let cert = params
            .signed_by(&public, &self.issuer)
            .expect("sign the issued certificate");
        (cert.pem(), cert.der().to_vec())
    }

    /// An RSA certificate for the committed test key, shaped like the
    /// macOS Server vendor certificate (for the Apple-ID tests; the
    /// project ships no Apple keys). Key PEM: PKCS#1.
    pub fn vendor_cert_rsa(&self) -> CertAndKey {
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(RSA_KEY_PKCS8_PEM, &rcgen::PKCS_RSA_SHA256)
            .expect("load the RSA test key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "xapsd test vendor (not Apple)");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut cert = self.sign_with(params, key);
        cert.key_pem = RSA_KEY_PKCS1_PEM.to_string();
        cert
    }
}

/// Certificate parameters of an Apple-style push certificate.
fn push_params(spec: &PushCertSpec) -> CertificateParams {
    {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Apple's order: UID, CN, OU, O, C.
        if let Some(uid) = &spec.uid {
            params
                .distinguished_name
                .push(DnType::CustomDnType(UID_OID.to_vec()), uid.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "XAPSDTEST1");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "xapsd tests");
        params.distinguished_name.push(DnType::CountryName, "US");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if spec.production {
            // Apple's value is an ASN.1 NULL.
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    APPLE_PRODUCTION_EXT_OID,
                    vec![0x05, 0x00],
                ));
        }
        // rcgen's validity fields are `time::OffsetDateTime`, a crate we do
        // not depend on; rcgen's own epoch date plus a std Duration avoids naming it.
        if let Some(t) = spec.not_before {
            params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(t);
        }
        if let Some(t) = spec.not_after {
            params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(t);
        }
        params
    }
}

impl TestCa {
    fn sign(&self, params: CertificateParams) -> CertAndKey {
        let key = KeyPair::generate().expect("generate leaf key");
        self.sign_with(params, key)
    }

    fn sign_with(&self, params: CertificateParams, key: KeyPair) -> CertAndKey {
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        CertAndKey {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes `cert` into this CA's temp dir as `<stem>.crt.pem` / `<stem>.key.pem`.
    pub fn write(&self, cert: &CertAndKey, stem: &str) -> PemFiles {
        cert.write_to(self.dir.path(), stem)
    }

    /// The temp dir this CA writes into; handy for a test's other files too.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// The subject UID of a DER certificate, if it has one.
pub fn subject_uid(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let uid = cert
        .subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == UID_OID_STR)?
        .as_str()
        .ok()?
        .to_string();
    Some(uid)
}

fn since_epoch(t: SystemTime) -> std::time::Duration {
    t.duration_since(UNIX_EPOCH)
        .expect("certificate dates before 1970 are not supported")
}

fn write_file(path: &Path, contents: &[u8]) {
    super::tempdir::write_private(path, contents);
}
