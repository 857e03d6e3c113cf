//! The certificate service's wire format: XML property lists.
//!
//! Pure functions from values to bytes and back, so the request can be
//! checked byte for byte in tests and the response parser can be fuzzed
//! ([`parse_response`] takes whatever Apple, or an attacker in its place,
//! sends). The layout is the one protocols.md section 4 describes.

use std::fmt;

use plist::{Dictionary, Value};

/// The five certificates macOS Server asks for, in Apple's order: service
/// type, the common name of its CSR, and the service's name in the
/// request's Description.
pub const SERVICES: [(&str, &str, &str); 5] = [
    (
        "Service_Calendar",
        "com.apple.servermgrd.apns.calendar",
        "calendar",
    ),
    (
        "Service_Contact",
        "com.apple.servermgrd.apns.contact",
        "contact",
    ),
    ("Service_Mail", "com.apple.servermgrd.apns.mail", "mail"),
    ("Service_Mgmt", "com.apple.servermgrd.apns.mgmt", "mgmt"),
    ("Service_Alerts", "com.apple.server.apns.alerts", "alerts"),
];

/// The service type of the certificate iOS Mail pushes need.
pub const MAIL_SERVICE: &str = "Service_Mail";

/// One entry of `CertRequestList`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    pub number: u64,
    pub service_type: String,
    /// The CSR as PEM text.
    pub csr_pem: String,
    /// `<hostname> - apns:com.apple.<svc>`.
    pub description: String,
    /// Hex serial of the certificate being renewed; `None` for a first request.
    pub serial: Option<String>,
}

/// Who asks: the Apple ID and the SHA-256 of its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account<'a> {
    pub name: &'a str,
    pub password_hash: &'a str,
}

/// One certificate of a successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    pub number: Option<u64>,
    pub service_type: Option<String>,
    pub cert_pem: String,
}

/// What the service said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAnswer {
    Issued(Vec<IssuedCert>),
    /// A non-zero `ErrorCode`, with Apple's texts (possibly empty).
    Refused {
        code: i64,
        message: String,
        description: String,
    },
}

/// Why an answer could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum PlistError {
    /// Not an XML property list (or nested deeper than any answer is).
    NotPlist(String),
    /// A property list, but not shaped like the service's answer.
    Shape(&'static str),
}

impl fmt::Display for PlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlistError::NotPlist(why) => write!(f, "answer is not an XML property list: {why}"),
            PlistError::Shape(what) => write!(f, "answer property list lacks {what}"),
        }
    }
}

impl std::error::Error for PlistError {}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    let mut d = Dictionary::new();
    for (k, v) in entries {
        d.insert(k.to_owned(), v);
    }
    Value::Dictionary(d)
}

fn xml(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail; an error here would be a plist bug.
    if value.to_writer_xml(&mut out).is_err() {
        out.clear();
    }
    out
}

/// The inner plist (`PushCertRequestPlist`): the bytes the vendor key signs.
pub fn inner_request(account: &Account<'_>, requests: &[CertRequest]) -> Vec<u8> {
    let header = dict(vec![
        ("ClientApplicationCredential", string("1")),
        ("ClientApplicationName", string("XServer")),
        ("ClientIPAddress", string("1")),
        ("ClientOSName", string("MAC OSX")),
        ("ClientOSVersion", string("2.1")),
        ("LanguagePreference", string("1")),
        ("TransactionId", string("1")),
        ("Version", string("1")),
    ]);
    let list = requests
        .iter()
        .map(|r| {
            let mut entries = vec![
                ("CSR", string(&r.csr_pem)),
                ("CertRequestNo", Value::Integer(r.number.into())),
                ("Description", string(&r.description)),
                ("ServiceType", string(&r.service_type)),
            ];
            if let Some(serial) = &r.serial {
                entries.push(("CertificateSerialNumber", string(serial)));
            }
            dict(entries)
        })
        .collect();
    let request = dict(vec![
        ("CertRequestList", Value::Array(list)),
        ("ProfileType", string("Production")),
        ("RequesterType", string("XServer")),
        (
            "User",
            dict(vec![
                ("AccountName", string(account.name)),
                ("PasswordHash", string(account.password_hash)),
            ]),
        ),
    ]);
    xml(&dict(vec![("Header", header), ("Request", request)]))
}

/// The body POSTed to the service: the vendor chain, the inner plist and
/// the vendor key's SHA-1 RSA signature over it.
pub fn outer_request(chain_der: &[u8], inner: &[u8], signature: &[u8]) -> Vec<u8> {
    xml(&dict(vec![
        ("PushCertCertificateChain", Value::Data(chain_der.to_vec())),
        ("PushCertRequestPlist", Value::Data(inner.to_vec())),
        ("PushCertSignature", Value::Data(signature.to_vec())),
        ("PushCertSignedRequest", Value::Boolean(true)),
    ]))
}

/// Deepest `<dict>`/`<array>` nesting accepted. The answer needs three
/// levels; refusing deeper input up front keeps a hostile answer from
/// making the (recursive) drop of a parsed value overflow the stack.
const MAX_DEPTH: usize = 8;

fn nesting_within(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(pos) = bytes[i..].iter().position(|&b| b == b'<') {
        let tag = &bytes[i + pos + 1..];
        let opens = tag.starts_with(b"dict") || tag.starts_with(b"array");
        let closes = tag.starts_with(b"/dict") || tag.starts_with(b"/array");
        if opens {
            let end = tag.iter().position(|&b| b == b'>').unwrap_or(tag.len());
            // `<array/>` opens and closes at once.
            if end == 0 || tag[end - 1] != b'/' {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
        } else if closes {
            depth = depth.saturating_sub(1);
        }
        i += pos + 1;
    }
    true
}

/// Reads the service's answer: five certificates, or Apple's error.
pub fn parse_response(bytes: &[u8]) -> Result<ServiceAnswer, PlistError> {
    if !nesting_within(bytes, MAX_DEPTH) {
        return Err(PlistError::NotPlist(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let value = Value::from_reader_xml(bytes).map_err(|e| PlistError::NotPlist(e.to_string()))?;
    let root = value
        .as_dictionary()
        .ok_or(PlistError::Shape("a top-level dictionary"))?;
    let response = root
        .get("Response")
        .and_then(Value::as_dictionary)
        .ok_or(PlistError::Shape("a Response dictionary"))?;
    let status = response
        .get("Status")
        .and_then(Value::as_dictionary)
        .ok_or(PlistError::Shape("Response.Status"))?;
    let code = status
        .get("ErrorCode")
        .and_then(integer)
        .ok_or(PlistError::Shape("Response.Status.ErrorCode"))?;
    let text = |key: &str| {
        status
            .get(key)
            .and_then(Value::as_string)
            .unwrap_or_default()
            .to_owned()
    };
    if code != 0 {
        return Ok(ServiceAnswer::Refused {
            code,
            message: text("ErrorMessage"),
            description: text("ErrorDescription"),
        });
    }
    let list = response
        .get("Certificates")
        .and_then(Value::as_array)
        .ok_or(PlistError::Shape("Response.Certificates"))?;
    let mut issued = Vec::with_capacity(list.len());
    for entry in list {
        let entry = entry
            .as_dictionary()
            .ok_or(PlistError::Shape("a dictionary per certificate"))?;
        let cert_pem = entry
            .get("Certificate")
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Data(d) => String::from_utf8(d.clone()).ok(),
                _ => None,
            })
            .ok_or(PlistError::Shape("a Certificate in every entry"))?;
        issued.push(IssuedCert {
            number: entry
                .get("CertRequestNo")
                .and_then(integer)
                .and_then(|n| u64::try_from(n).ok()),
            service_type: entry
                .get("ServiceType")
                .and_then(Value::as_string)
                .map(str::to_owned),
            cert_pem,
        });
    }
    Ok(ServiceAnswer::Issued(issued))
}

/// Apple writes numbers as `<integer>`, sometimes as `<string>`.
fn integer(value: &Value) -> Option<i64> {
    value
        .as_signed_integer()
        .or_else(|| value.as_string().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(serial: bool) -> Vec<CertRequest> {
        SERVICES
            .iter()
            .enumerate()
            .map(|(i, (service, cn, _))| CertRequest {
                number: i as u64,
                service_type: (*service).into(),
                csr_pem: format!("-----BEGIN CERTIFICATE REQUEST-----\n{cn}\n"),
                description: format!("box - apns:{cn}"),
                serial: serial.then(|| format!("0{i}ab")),
            })
            .collect()
    }

    #[test]
    fn inner_request_has_the_header_and_five_entries() {
        let account = Account {
            name: "admin@example.com",
            password_hash: "00ff",
        };
        let bytes = inner_request(&account, &requests(true));
        let value = Value::from_reader_xml(&bytes[..]).unwrap();
        let root = value.as_dictionary().unwrap();
        let header = root["Header"].as_dictionary().unwrap();
        assert_eq!(header["ClientApplicationName"].as_string(), Some("XServer"));
        assert_eq!(header["ClientOSName"].as_string(), Some("MAC OSX"));
        let request = root["Request"].as_dictionary().unwrap();
        assert_eq!(request["ProfileType"].as_string(), Some("Production"));
        let user = request["User"].as_dictionary().unwrap();
        assert_eq!(user["AccountName"].as_string(), Some("admin@example.com"));
        assert_eq!(user["PasswordHash"].as_string(), Some("00ff"));
        let list = request["CertRequestList"].as_array().unwrap();
        assert_eq!(list.len(), 5);
        let mail = list[2].as_dictionary().unwrap();
        assert_eq!(mail["ServiceType"].as_string(), Some("Service_Mail"));
        assert_eq!(mail["CertRequestNo"].as_signed_integer(), Some(2));
        assert_eq!(mail["CertificateSerialNumber"].as_string(), Some("02ab"));
        let first = inner_request(&account, &requests(false));
        assert!(!String::from_utf8_lossy(&first).contains("CertificateSerialNumber"));
    }

    #[test]
    fn outer_request_carries_the_parts_as_data() {
        let bytes = outer_request(b"chain", b"inner", b"sig");
        let value = Value::from_reader_xml(&bytes[..]).unwrap();
        let root = value.as_dictionary().unwrap();
        assert_eq!(
            root["PushCertCertificateChain"].as_data(),
            Some(&b"chain"[..])
        );
        assert_eq!(root["PushCertRequestPlist"].as_data(), Some(&b"inner"[..]));
        assert_eq!(root["PushCertSignature"].as_data(), Some(&b"sig"[..]));
        assert_eq!(root["PushCertSignedRequest"].as_boolean(), Some(true));
    }

    fn answer(status: &str, certs: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Header</key><dict/><key>Response</key><dict>
<key>Status</key><dict>{status}</dict>{certs}</dict></dict></plist>"#
        )
        .into_bytes()
    }

    #[test]
    fn reads_certificates_and_refusals() {
        let ok = answer(
            "<key>ErrorCode</key><integer>0</integer>",
            "<key>Certificates</key><array><dict><key>Certificate</key><string>PEM</string>\
             <key>CertRequestNo</key><integer>2</integer><key>ServiceType</key>\
             <string>Service_Mail</string></dict></array>",
        );
        assert_eq!(
            parse_response(&ok).unwrap(),
            ServiceAnswer::Issued(vec![IssuedCert {
                number: Some(2),
                service_type: Some("Service_Mail".into()),
                cert_pem: "PEM".into()
            }])
        );
        let refused = answer(
            "<key>ErrorCode</key><integer>-80010</integer><key>ErrorMessage</key>\
             <string>ServiceType is Invalid</string>",
            "",
        );
        assert_eq!(
            parse_response(&refused).unwrap(),
            ServiceAnswer::Refused {
                code: -80010,
                message: "ServiceType is Invalid".into(),
                description: String::new()
            }
        );
    }

    #[test]
    fn hostile_or_broken_answers_are_errors() {
        let deep = format!(
            "<plist><dict><key>Response</key>{}{}</dict></plist>",
            "<array>".repeat(100_000),
            "</array>".repeat(100_000)
        );
        for bad in [
            &b""[..],
            b"not xml",
            b"<plist><array/></plist>",
            &answer("", "")[..],
            &answer("<key>ErrorCode</key><integer>0</integer>", "")[..],
            deep.as_bytes(),
            &answer(
                "<key>ErrorCode</key><integer>0</integer>",
                "<key>Certificates</key><array><string>x</string></array>",
            )[..],
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(nesting_within(b"<dict><array/><array></array></dict>", 2));
        assert!(!nesting_within(b"<dict><array><dict>", 2));
    }
}
