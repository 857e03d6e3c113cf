//! A local stand-in for Apple's push certificate service
//! (`https://identity.apple.com/pushcert/caservice/{new,renew}`).
//!
//! It checks each request the way the real service would have to: the
//! HTTP headers macOS Server sent, the outer plist, the vendor chain and
//! its SHA-1 RSA signature over the inner plist (verified with ring), the
//! account, and the five CSRs (subjects, RSA-2048 keys, SHA1-with-RSA
//! self-signatures). Whatever is wrong goes into the request's `problems`,
//! which tests assert empty. It then answers as scripted: certificates
//! issued by the test CA (so the mock APNs accepts them) with a UID topic
//! in the subject, an Apple `ErrorCode`, an HTTP error, or no answer at
//! all until released. HTTPS with a certificate from the same test CA the
//! daemon trusts through `apns_ca_file`; one thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use plist::{Dictionary, Value};
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY};
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

use super::certs::{PushCertSpec, TestCa};

/// The five services, their CSR common names, in request order.
pub const SERVICES: [(&str, &str); 5] = [
    ("Service_Calendar", "com.apple.servermgrd.apns.calendar"),
    ("Service_Contact", "com.apple.servermgrd.apns.contact"),
    ("Service_Mail", "com.apple.servermgrd.apns.mail"),
    ("Service_Mgmt", "com.apple.servermgrd.apns.mgmt"),
    ("Service_Alerts", "com.apple.server.apns.alerts"),
];

pub const USER_AGENT: &str = "Servermgrd%20Plugin/6.0 CFNetwork/811.11 Darwin/16.7.0 (x86_64)";

/// What the mock answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Five certificates; the mail one has subject UID `mail_topic`.
    Issue {
        mail_topic: String,
        not_after: SystemTime,
    },
    /// `ErrorCode` / `ErrorMessage` in an otherwise well-formed answer.
    Refuse { code: i64, message: String },
    /// An HTTP status with a body that is no plist.
    Http(u16),
}

/// One request as received and checked.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// What does not match protocols.md / the expected account and vendor.
    pub problems: Vec<String>,
    /// `CertificateSerialNumber` of each entry, in order.
    pub serials: Vec<Option<String>>,
    /// DER of the mail certificate issued in answer, if any.
    pub issued_mail_der: Option<Vec<u8>>,
    pub received_at: Instant,
}

struct State {
    reply: Reply,
    hold: bool,
    requests: Vec<Received>,
    /// Serial (upper-case hex) of the last certificate issued per service.
    issued_serials: Vec<Option<String>>,
    next_serial: u8,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    ca: Arc<TestCa>,
    tls: Arc<rustls::ServerConfig>,
    account: String,
    password_hash: String,
    vendor_cert_der: Vec<u8>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running mock; stops accepting when dropped.
pub struct MockCaService {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl MockCaService {
    /// Serves on 127.0.0.1:0, issuing from `ca`, expecting `account`,
    /// `password_hash` and requests signed by `vendor_cert_der`'s key.
    pub fn start(
        ca: Arc<TestCa>,
        account: &str,
        password_hash: &str,
        vendor_cert_der: &[u8],
        reply: Reply,
    ) -> MockCaService {
        let server = ca.server_cert();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![server.rustls_cert()], server.rustls_key())
            .expect("mock certificate service TLS config");
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind mock caservice");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                reply,
                hold: false,
                requests: Vec::new(),
                issued_serials: vec![None; 5],
                next_serial: 1,
                closing: false,
            }),
            changed: Condvar::new(),
            ca,
            tls: Arc::new(tls),
            account: account.to_string(),
            password_hash: password_hash.to_string(),
            vendor_cert_der: vendor_cert_der.to_vec(),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("mock-caservice".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.lock().closing {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = accept_shared.clone();
                    std::thread::spawn(move || serve(&shared, stream));
                }
            })
            .expect("spawn mock caservice");
        MockCaService { shared, addr }
    }

    /// The daemon's `apple_cert_service_url`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/pushcert/caservice", self.addr.port())
    }

    pub fn set_reply(&self, reply: Reply) {
        self.shared.lock().reply = reply;
    }

    /// While on, requests are recorded but not answered.
    pub fn set_hold(&self, on: bool) {
        self.shared.lock().hold = on;
        self.shared.changed.notify_all();
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().requests.clone()
    }

    /// Waits for the `n`th request (1-based) and returns all so far.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.requests.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "mock caservice: {} request(s) within {timeout:?}, wanted {n}",
                st.requests.len()
            );
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.requests.clone()
    }
}

impl Drop for MockCaService {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        // Wake the accept loop so it sees `closing`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(shared: &Shared, tcp: TcpStream) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let conn = match rustls::ServerConnection::new(shared.tls.clone()) {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let Some((path, headers, body)) = read_request(&mut tls) else {
        return;
    };
    let mut received = check(shared, &path, &headers, &body);
    let index = {
        let mut st = shared.lock();
        st.requests.push(received.clone());
        shared.changed.notify_all();
        st.requests.len() - 1
    };
    // Held: wait for release (or the mock's end, or the client's).
    {
        let mut st = shared.lock();
        while st.hold && !st.closing {
            st = shared
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if st.closing {
            return;
        }
    }
    let reply = shared.lock().reply.clone();
    let (status, answer) = match reply {
        Reply::Http(status) => (status, b"<html>no</html>".to_vec()),
        Reply::Refuse { code, message } => (200, answer_plist(code, &message, Vec::new())),
        Reply::Issue {
            mail_topic,
            not_after,
        } => match issue(shared, &body, &mail_topic, not_after) {
            Ok((certs, mail_der)) => {
                received.issued_mail_der = Some(mail_der.clone());
                shared.lock().requests[index].issued_mail_der = Some(mail_der);
                (200, answer_plist(0, "", certs))
            }
            Err(why) => {
                shared.lock().requests[index].problems.push(why.clone());
                (200, answer_plist(-1, &why, Vec::new()))
            }
        },
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/x-xml-plist\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(&answer);
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

type Head = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(stream: &mut impl Read) -> Option<Head> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    (method == "POST").then_some((path, headers, body))
}

fn dict<'a>(
    value: Option<&'a Value>,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<&'a Dictionary> {
    let d = value.and_then(Value::as_dictionary);
    if d.is_none() {
        problems.push(format!("{what} is not a dictionary"));
    }
    d
}

fn expect_str(d: &Dictionary, key: &str, want: &str, problems: &mut Vec<String>) {
    let got = d.get(key).and_then(Value::as_string);
    if got != Some(want) {
        problems.push(format!("{key} = {got:?}, want {want:?}"));
    }
}

/// Checks everything about a request; returns it with its problems.
fn check(shared: &Shared, path: &str, headers: &[(String, String)], body: &[u8]) -> Received {
    let mut problems = Vec::new();
    let mut serials = Vec::new();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    for (name, want) in [
        ("Content-Type", "text/x-xml-plist"),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Accept-Language", "en-us"),
    ] {
        if header(name) != Some(want) {
            problems.push(format!("header {name} = {:?}, want {want:?}", header(name)));
        }
    }
    let renew = match path {
        "/pushcert/caservice/new" => false,
        "/pushcert/caservice/renew" => true,
        other => {
            problems.push(format!("path {other}"));
            false
        }
    };
    let outer = Value::from_reader_xml(body);
    let outer = match &outer {
        Ok(v) => v.as_dictionary(),
        Err(e) => {
            problems.push(format!("outer plist: {e}"));
            None
        }
    };
    if let Some(outer) = outer {
        if outer
            .get("PushCertSignedRequest")
            .and_then(Value::as_boolean)
            != Some(true)
        {
            problems.push("PushCertSignedRequest is not true".into());
        }
        let chain = outer
            .get("PushCertCertificateChain")
            .and_then(Value::as_data)
            .unwrap_or_default();
        let inner = outer
            .get("PushCertRequestPlist")
            .and_then(Value::as_data)
            .unwrap_or_default();
        let signature = outer
            .get("PushCertSignature")
            .and_then(Value::as_data)
            .unwrap_or_default();
        // The chain is DER certificates back to back; the first signs.
        match x509_parser::parse_x509_certificate(chain) {
            Ok((_, first)) => {
                if !chain.starts_with(&shared.vendor_cert_der) {
                    problems.push("chain does not start with the vendor certificate".into());
                }
                let key = &first.public_key().subject_public_key.data;
                if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, key)
                    .verify(inner, signature)
                    .is_err()
                {
                    problems
                        .push("PushCertSignature does not verify (RSA PKCS#1 v1.5 SHA-1)".into());
                }
            }
            Err(e) => problems.push(format!("PushCertCertificateChain: {e}")),
        }
        check_inner(shared, inner, renew, &mut problems, &mut serials);
    } else if outer.is_none() {
        problems.push("outer plist is not a dictionary".into());
    }
    Received {
        path: path.to_string(),
        headers: headers.to_vec(),
        problems,
        serials,
        issued_mail_der: None,
        received_at: Instant::now(),
    }
}

fn check_inner(
    shared: &Shared,
    inner: &[u8],
    renew: bool,
    problems: &mut Vec<String>,
    serials: &mut Vec<Option<String>>,
) {
    let value = match Value::from_reader_xml(inner) {
        Ok(v) => v,
        Err(e) => return problems.push(format!("inner plist: {e}")),
    };
    let Some(root) = dict(Some(&value), "inner plist", problems) else {
        return;
    };
    if let Some(header) = dict(root.get("Header"), "Header", problems) {
        for (k, v) in [
            ("ClientApplicationCredential", "1"),
            ("ClientApplicationName", "XServer"),
            ("ClientIPAddress", "1"),
            ("ClientOSName", "MAC OSX"),
            ("ClientOSVersion", "2.1"),
            ("LanguagePreference", "1"),
            ("TransactionId", "1"),
            ("Version", "1"),
        ] {
            expect_str(header, k, v, problems);
        }
    }
    let Some(request) = dict(root.get("Request"), "Request", problems) else {
        return;
    };
    expect_str(request, "ProfileType", "Production", problems);
    expect_str(request, "RequesterType", "XServer", problems);
    if let Some(user) = dict(request.get("User"), "User", problems) {
        expect_str(user, "AccountName", &shared.account, problems);
        expect_str(user, "PasswordHash", &shared.password_hash, problems);
    }
    let list = request
        .get("CertRequestList")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.len() != 5 {
        problems.push(format!("CertRequestList has {} entries", list.len()));
    }
    let previous = shared.lock().issued_serials.clone();
    for (i, (entry, (service, cn))) in list.iter().zip(SERVICES).enumerate() {
        let Some(entry) = dict(Some(entry), "CertRequestList entry", problems) else {
            continue;
        };
        expect_str(entry, "ServiceType", service, problems);
        if entry
            .get("CertRequestNo")
            .and_then(Value::as_signed_integer)
            != Some(i as i64)
        {
            problems.push(format!("entry {i}: CertRequestNo"));
        }
        let description = entry
            .get("Description")
            .and_then(Value::as_string)
            .unwrap_or_default();
        if !description.contains(" - apns:com.apple.") {
            problems.push(format!("entry {i}: Description {description:?}"));
        }
        let serial = entry
            .get("CertificateSerialNumber")
            .and_then(Value::as_string)
            .map(str::to_string);
        if renew && serial.as_deref().map(str::to_ascii_uppercase) != previous[i] {
            problems.push(format!(
                "entry {i}: serial {serial:?}, issued {:?}",
                previous[i]
            ));
        }
        if !renew && serial.is_some() {
            problems.push(format!("entry {i}: a first request carries a serial"));
        }
        serials.push(serial);
        let csr = entry
            .get("CSR")
            .and_then(Value::as_string)
            .unwrap_or_default();
        if let Err(why) = check_csr(csr, cn) {
            problems.push(format!("entry {i} CSR: {why}"));
        }
    }
}

/// The CSR's SubjectPublicKeyInfo DER, after checking it.
fn check_csr(pem: &str, cn: &str) -> Result<Vec<u8>, String> {
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not PEM: {e:?}"))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| e.to_string())?;
    let info = &csr.certification_request_info;
    let subject = info.subject.to_string();
    if subject != format!("C=US, CN={cn}") {
        return Err(format!("subject {subject}"));
    }
    if csr.signature_algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.5" {
        return Err("not sha1WithRSAEncryption".into());
    }
    match info.subject_pki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) if rsa.key_size() == 2048 => {}
        other => return Err(format!("not an RSA-2048 key: {other:?}")),
    }
    UnparsedPublicKey::new(
        &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        &info.subject_pki.subject_public_key.data,
    )
    .verify(info.raw, &csr.signature_value.data)
    .map_err(|_| "self-signature does not verify".to_string())?;
    Ok(info.subject_pki.raw.to_vec())
}

/// Issues the five certificates; returns the answer entries and the mail DER.
fn issue(
    shared: &Shared,
    body: &[u8],
    mail_topic: &str,
    not_after: SystemTime,
) -> Result<(Vec<Value>, Vec<u8>), String> {
    let outer = Value::from_reader_xml(body).map_err(|e| e.to_string())?;
    let inner = outer
        .as_dictionary()
        .and_then(|d| d.get("PushCertRequestPlist"))
        .and_then(Value::as_data)
        .ok_or("no inner plist")?;
    let inner = Value::from_reader_xml(inner).map_err(|e| e.to_string())?;
    let list = inner
        .as_dictionary()
        .and_then(|d| d.get("Request"))
        .and_then(Value::as_dictionary)
        .and_then(|d| d.get("CertRequestList"))
        .and_then(Value::as_array)
        .ok_or("no CertRequestList")?;
    let mut entries = Vec::new();
    let mut mail_der = Vec::new();
    let mut st = shared.lock();
    for (i, (entry, (service, cn))) in list.iter().zip(SERVICES).enumerate() {
        let csr = entry
            .as_dictionary()
            .and_then(|d| d.get("CSR"))
            .and_then(Value::as_string)
            .ok_or("no CSR")?;
        let spki = check_csr(csr, cn)?;
        let topic = if service == "Service_Mail" {
            mail_topic.to_string()
        } else {
            format!(
                "com.apple.{}.XServer.test",
                cn.rsplit('.').next().unwrap_or("x")
            )
        };
        let spec = PushCertSpec {
            not_after: Some(not_after),
            not_before: Some(SystemTime::now() - Duration::from_secs(3600)),
            ..PushCertSpec::new(&topic)
        };
        let serial = [0x42, st.next_serial, i as u8];
        st.next_serial = st.next_serial.wrapping_add(1);
        let (pem, der) = shared.ca.issue_for_public_key(&spki, spec, &serial);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
        st.issued_serials[i] = Some(
            parsed
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect(),
        );
        if service == "Service_Mail" {
            mail_der = der.clone();
        }
        let mut d = Dictionary::new();
        d.insert("Certificate".into(), Value::String(pem));
        d.insert("CertRequestNo".into(), Value::Integer((i as i64).into()));
        d.insert("Description".into(), Value::String(format!("apns:{topic}")));
        d.insert("ServiceType".into(), Value::String(service.into()));
        entries.push(Value::Dictionary(d));
    }
    Ok((entries, mail_der))
}

fn answer_plist(code: i64, message: &str, certificates: Vec<Value>) -> Vec<u8> {
    let mut status = Dictionary::new();
    status.insert("ErrorCode".into(), Value::Integer(code.into()));
    status.insert("ErrorMessage".into(), Value::String(message.into()));
    status.insert("ErrorDescription".into(), Value::String(String::new()));
    let mut response = Dictionary::new();
    response.insert("Status".into(), Value::Dictionary(status));
    if code == 0 {
        response.insert("Certificates".into(), Value::Array(certificates));
    }
    let mut header = Dictionary::new();
    header.insert("TransactionId".into(), Value::String("1".into()));
    let mut root = Dictionary::new();
    root.insert("Header".into(), Value::Dictionary(header));
    root.insert("Response".into(), Value::Dictionary(response));
    let mut out = Vec::new();
    Value::Dictionary(root)
        .to_writer_xml(&mut out)
        .expect("write plist");
    out
}
