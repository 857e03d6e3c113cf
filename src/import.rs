//! Moving from the Go dovecot-xaps-daemon: its JSON registrations and its
//! YAML config.
//!
//! A site switching daemons should not have to wait a day for every phone
//! to register again, nor translate a config by hand. Both readers here are
//! pure functions over the file's text: the registrations go through the
//! same validation as a live `/register` and are then stored in one
//! transaction by the caller, so a bad file changes nothing; the config is
//! translated key by key, and whatever has no xapsd equivalent is listed
//! rather than dropped silently.
//!
//! The Go daemon also kept in `database.json` the push certificates it got
//! from Apple's XServer service. Apple no longer issues them, so a site
//! moving over must keep the one it has: its mail certificate names the
//! topic every registered phone already uses. [`go_database`] picks that
//! certificate and its key out of the file and checks that they belong
//! together; the caller writes them as PEM files for `cert_file` and
//! `key_file`. The shape read is the Go daemon's `DbCerts`, as Go's
//! `encoding/json` writes it (`[]byte` as padded standard base64):
//!
//! ```text
//! "AppleCerts": {
//!   "Signature": [ {"Certificate": ["<DER>", ...], ...}, ... ],   // []tls.Certificate
//!   "Keys": [ "<PKCS#1 RSA key DER>", ... ]                       // [][]byte, same order
//! }
//! ```
//!
//! One entry per service it asked Apple for, in its order: calendar,
//! contact, mail, mgmt, alerts. The mail one is the entry whose certificate
//! subject UID (the topic) starts with `com.apple.mail.`; if several do,
//! the one at index 2 (where the Go daemon looks) wins. Other fields of a
//! `tls.Certificate` (`PrivateKey`, `Leaf`, `OCSPStaple`, ...) are ignored.
//! `AppleCerts` absent, `null`, or with `Signature` null or empty (a Go
//! daemon that never got certificates) means there is nothing to import.

use std::fmt;

use miniserde::json::{Number, Object, Value};

use miniserde::json::Array;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::pem::{certificate_facts, CertificateFacts};
use crate::limits::Limits;
use crate::privacy::Short;
use crate::service::{device_from, RegisterRequest, MAIL_SUBTOPIC};
use crate::store::Device;

/// Why a Go file could not be imported; says where.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportError {
    NotJson,
    /// `at` names the place, e.g. `Users["alice"].Accounts[0715…982E].DeviceToken`.
    Invalid {
        at: String,
        reason: String,
    },
    /// A YAML line that is not `key: value`.
    Yaml {
        line: usize,
        reason: &'static str,
    },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotJson => f.write_str("the file is not valid JSON"),
            ImportError::Invalid { at, reason } => write!(f, "{at}: {reason}"),
            ImportError::Yaml { line, reason } => write!(f, "line {line}: {reason}"),
        }
    }
}

impl std::error::Error for ImportError {}

fn invalid(at: &str, reason: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        at: at.to_owned(),
        reason: reason.into(),
    }
}

/// What the Go daemon's `database.json` holds that xapsd takes.
#[derive(Debug)]
pub struct GoDatabase {
    pub devices: Vec<Device>,
    /// The mail push certificate from `AppleCerts`, if the file has one.
    pub mail_cert: Option<GoCertificate>,
}

/// The Go daemon's mail push certificate and its key, checked to belong
/// together. `Debug` leaves the key out.
pub struct GoCertificate {
    /// Where in the file it was, e.g. `AppleCerts.Signature[2]`.
    pub at: String,
    /// DER certificates, the push certificate first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#1 DER.
    key: Vec<u8>,
    pub facts: CertificateFacts,
}

impl fmt::Debug for GoCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoCertificate")
            .field("at", &self.at)
            .field("chain", &self.chain.len())
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

impl GoCertificate {
    /// The chain as PEM, for `cert_file`.
    pub fn cert_pem(&self) -> String {
        self.chain
            .iter()
            .map(|der| pem("CERTIFICATE", der))
            .collect()
    }

    /// The key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), for `key_file`.
    /// Secret: write it to a private file, never to a log or a terminal.
    pub fn key_pem(&self) -> String {
        pem("RSA PRIVATE KEY", &self.key)
    }
}

/// RFC 7468 text: base64 in 64-column lines between the labels.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads the Go daemon's `database.json`:
/// `{"Users": {user: {"Accounts": {account id: {"DeviceToken", "Mailboxes",
/// "RegistrationTime"}}}}, "AppleCerts": ...}` (see the module docs for
/// `AppleCerts`). Other top-level keys are ignored.
pub fn go_database(text: &str, limits: &Limits) -> Result<GoDatabase, ImportError> {
    let Ok(Value::Object(mut top)) = miniserde::json::from_str::<Value>(text) else {
        return Err(ImportError::NotJson);
    };
    let mail_cert = match top.remove("AppleCerts") {
        None | Some(Value::Null) => None,
        Some(Value::Object(certs)) => apple_certs(certs)?,
        Some(_) => return Err(invalid("AppleCerts", "must be an object")),
    };
    let users = match top.remove("Users") {
        Some(Value::Object(users)) => users,
        Some(Value::Null) | None => Object::new(),
        Some(_) => return Err(invalid("Users", "must be an object")),
    };
    let mut out = Vec::new();
    for (user, value) in users {
        let at_user = format!("Users[{user:?}]");
        let Value::Object(mut u) = value else {
            return Err(invalid(&at_user, "must be an object"));
        };
        let accounts = match u.remove("Accounts") {
            Some(Value::Object(a)) => a,
            Some(Value::Null) | None => Object::new(),
            Some(_) => return Err(invalid(&format!("{at_user}.Accounts"), "must be an object")),
        };
        for (account, value) in accounts {
            let at = format!("{at_user}.Accounts[{}]", Short(&account));
            let Value::Object(mut a) = value else {
                return Err(invalid(&at, "must be an object"));
            };
            let token = match a.remove("DeviceToken") {
                Some(Value::String(t)) => t,
                _ => return Err(invalid(&format!("{at}.DeviceToken"), "must be a string")),
            };
            let mailboxes = match a.remove("Mailboxes") {
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|m| match m {
                        Value::String(s) => Ok(s),
                        _ => Err(invalid(
                            &format!("{at}.Mailboxes"),
                            "must be a list of strings",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => {
                    return Err(invalid(
                        &format!("{at}.Mailboxes"),
                        "must be a list of strings",
                    ))
                }
            };
            let registered_at = match a.remove("RegistrationTime") {
                Some(Value::String(t)) => rfc3339(&t).ok_or_else(|| {
                    invalid(
                        &format!("{at}.RegistrationTime"),
                        format!("`{t}` is not an RFC 3339 time"),
                    )
                })?,
                None | Some(Value::Null) => crate::clock::unix_now(),
                Some(_) => {
                    return Err(invalid(
                        &format!("{at}.RegistrationTime"),
                        "must be a string",
                    ))
                }
            };
            let request = RegisterRequest {
                account_id: account.clone(),
                device_token: token,
                subtopic: MAIL_SUBTOPIC.to_owned(),
                username: user.clone(),
                mailboxes,
            };
            let mut device =
                device_from(request, limits).map_err(|e| invalid(&at, e.to_string()))?;
            device.registered_at = registered_at;
            out.push(device);
        }
    }
    Ok(GoDatabase {
        devices: out,
        mail_cert,
    })
}

/// Where the Go daemon keeps the mail certificate among the five.
const GO_MAIL_INDEX: usize = 2;
/// Topics of mail push certificates (`com.apple.mail.XServer.<uuid>`).
const MAIL_TOPIC_PREFIX: &str = "com.apple.mail.";

/// Picks the mail certificate out of the Go daemon's `DbCerts`.
fn apple_certs(mut certs: Object) -> Result<Option<GoCertificate>, ImportError> {
    let signature = list(certs.remove("Signature"), "AppleCerts.Signature")?;
    let keys = list(certs.remove("Keys"), "AppleCerts.Keys")?;
    if signature.is_empty() {
        if !keys.is_empty() {
            return Err(invalid(
                "AppleCerts.Keys",
                "holds keys but `Signature` holds no certificates",
            ));
        }
        if let Some(field) = certs.keys().next() {
            return Err(invalid(
                "AppleCerts",
                format!(
                    "unexpected field `{field}`; expected the Go daemon's `Signature` and `Keys`"
                ),
            ));
        }
        return Ok(None);
    }
    // Every entry is read, so a damaged file is refused rather than half used.
    let mut entries = Vec::with_capacity(signature.len());
    for (i, entry) in signature.into_iter().enumerate() {
        let at = format!("AppleCerts.Signature[{i}]");
        let Value::Object(mut entry) = entry else {
            return Err(invalid(&at, "must be an object"));
        };
        let at = format!("{at}.Certificate");
        let chain = list(entry.remove("Certificate"), &at)?
            .into_iter()
            .enumerate()
            .map(|(j, der)| base64_field(der, &format!("{at}[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let first = chain
            .first()
            .ok_or_else(|| invalid(&at, "holds no certificate"))?;
        let at = format!("{at}[0]");
        let topic = match certificate_facts(first, &at) {
            Ok(facts) => Some(facts),
            Err(crate::identity::IdentityError::NoTopic { .. }) => None,
            Err(_) => return Err(invalid(&at, "not a DER X.509 certificate")),
        };
        entries.push((chain, topic));
    }
    let is_mail = |i: &usize| {
        entries[*i]
            .1
            .as_ref()
            .is_some_and(|f| f.topic.starts_with(MAIL_TOPIC_PREFIX))
    };
    let mail: Vec<usize> = (0..entries.len()).filter(is_mail).collect();
    let index = match mail.as_slice() {
        [] => {
            return Err(invalid(
                "AppleCerts.Signature",
                format!("none of its {} certificates has a mail topic (subject UID starting `{MAIL_TOPIC_PREFIX}`)", entries.len()),
            ))
        }
        [one] => *one,
        several if several.contains(&GO_MAIL_INDEX) => GO_MAIL_INDEX,
        several => {
            return Err(invalid(
                "AppleCerts.Signature",
                format!("entries {several:?} all have mail topics; cannot tell which one the Go daemon used"),
            ))
        }
    };
    let at_key = format!("AppleCerts.Keys[{index}]");
    let key = keys
        .into_iter()
        .nth(index)
        .ok_or_else(|| invalid(&at_key, "missing: there is no key for the mail certificate"))?;
    let key = base64_field(key, &at_key)?;
    let at = format!("AppleCerts.Signature[{index}]");
    let (chain, facts) = entries.swap_remove(index);
    // Only entries with a topic can be mail entries.
    let facts = facts.ok_or_else(|| invalid(&at, "no topic"))?;
    key_matches(&chain, &key, &at, &at_key)?;
    Ok(Some(GoCertificate {
        at,
        chain,
        key,
        facts,
    }))
}

/// Checks that the PKCS#1 `key` is an RSA key rustls can sign with and the
/// public half of the first certificate in `chain`, as the daemon will.
fn key_matches(chain: &[Vec<u8>], key: &[u8], at: &str, at_key: &str) -> Result<(), ImportError> {
    let der = PrivateKeyDer::Pkcs1(key.to_vec().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| invalid(at_key, "not a PKCS#1 RSA private key (2048 to 8192 bits)"))?;
    let chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    rustls::sign::CertifiedKey::new(chain, signing)
        .keys_match()
        .map_err(|_| invalid(at_key, format!("is not the key of the certificate in {at}")))
}

/// A JSON list, with `null` or absence read as empty (Go's nil slice).
fn list(value: Option<Value>, at: &str) -> Result<Array, ImportError> {
    match value {
        None | Some(Value::Null) => Ok(Array::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(at, "must be a list")),
    }
}

/// A Go `[]byte` field: standard padded base64 (line breaks tolerated, as
/// Go's decoder does).
fn base64_field(value: Value, at: &str) -> Result<Vec<u8>, ImportError> {
    let Value::String(s) = value else {
        return Err(invalid(at, "must be a base64 string"));
    };
    let s: Vec<u8> = s.bytes().filter(|b| !matches!(b, b'\r' | b'\n')).collect();
    match data_encoding::BASE64.decode(&s) {
        Ok(der) if der.is_empty() => Err(invalid(at, "is empty")),
        Ok(der) => Ok(der),
        Err(_) => Err(invalid(at, "not base64")),
    }
}

/// Unix seconds of a Go `time.Time` as JSON writes it (RFC 3339, optional
/// fraction, `Z` or `±hh:mm`). Times before 1970 (Go's zero time) give 0.
fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = num(0..4)? as i32;
    let month = time::Month::try_from(num(5..7)? as u8).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(8..10)? as u8).ok()?;
    let clock =
        time::Time::from_hms(num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8).ok()?;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => time::UtcOffset::UTC,
        _ => {
            let sign: i8 = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = rest.as_bytes();
            if r.len() != 6 || r[3] != b':' {
                return None;
            }
            let h: i8 = rest.get(1..3)?.parse().ok()?;
            let m: i8 = rest.get(4..6)?.parse().ok()?;
            time::UtcOffset::from_hms(sign * h, sign * m, 0).ok()?
        }
    };
    let unix = time::PrimitiveDateTime::new(date, clock)
        .assume_offset(offset)
        .unix_timestamp();
    Some(u64::try_from(unix).unwrap_or(0))
}

/// What a Go `xapsd.yaml` becomes.
#[derive(Debug, PartialEq, Eq)]
pub struct GoConfig {
    /// The xapsd JSON config, one key per line, ready for `--config`.
    pub json: String,
    /// Keys that were understood but have no (or a different) xapsd
    /// equivalent, with what to do instead.
    pub notes: Vec<String>,
    /// Keys the Go daemon does not have either (typos, newer versions).
    pub unknown: Vec<String>,
}

/// Translates the Go daemon's flat YAML config.
pub fn go_config(text: &str) -> Result<GoConfig, ImportError> {
    let pairs = flat_yaml(text)?;
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let mut keys: Vec<(&str, Value)> = Vec::new();
    let mut notes = Vec::new();
    let mut unknown = Vec::new();
    let s = |v: &str| Value::String(v.to_owned());

    if let Some(level) = get("loglevel") {
        let level = match level.to_ascii_lowercase().as_str() {
            "fatal" | "panic" => "error".to_owned(),
            "warning" => "warn".to_owned(),
            other => other.to_owned(),
        };
        keys.push(("log_level", s(&level)));
    }
    if get("listenAddr").is_some() || get("port").is_some() {
        let addr = get("listenAddr").unwrap_or("127.0.0.1");
        let port = get("port").unwrap_or("11619");
        let host = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr.to_owned()
        };
        keys.push((
            "listen",
            Value::Array(std::iter::once(s(&format!("{host}:{port}"))).collect()),
        ));
        if get("listenAddr").is_none() {
            notes.push(
                "listenAddr is empty (all interfaces in the Go daemon): xapsd will listen on 127.0.0.1 only; change `listen` if Dovecot runs elsewhere".to_owned(),
            );
        }
    }
    if let Some(delay) = get("delay") {
        match delay.parse::<u64>() {
            Ok(n) => keys.push(("delay_secs", Value::Number(Number::U64(n)))),
            Err(_) => notes.push(format!("delay `{delay}` is not whole seconds; left out")),
        }
    }
    if let Some(cert) = get("certificateFilePem") {
        keys.push(("cert_file", s(cert)));
    }
    if let Some(key) = get("certificateFilePemKey") {
        keys.push(("key_file", s(key)));
    }
    if let Some(db) = get("databaseFile") {
        notes.push(format!(
            "databaseFile: xapsd keeps its own store (`db`); import the registrations and the mail push certificate with `xapsd import-go {db}`"
        ));
    }
    for key in ["tlsCertfile", "tlsKeyfile", "tlsListenAddr", "tlsPort"] {
        if get(key).is_some() {
            notes.push(format!(
                "{key}: xapsd has no TLS listener; keep it on loopback or put a TLS proxy in front"
            ));
        }
    }
    if get("checkInterval").is_some() {
        notes.push(
            "checkInterval: xapsd does not renew certificates from Apple; not needed".to_owned(),
        );
    }
    for key in ["appleId", "appleIdHashedPassword"] {
        if get(key).is_some() {
            notes.push(format!(
                "{key}: Apple's XServer certificate service is gone (2024); `xapsd import-go` writes the certificate the Go daemon got as files for cert_file/key_file"
            ));
        }
    }
    for key in [
        "certificateFileP12",
        "keyFileP8",
        "keyFileTopic",
        "keyFileKeyId",
        "keyFileTeamId",
    ] {
        if get(key).is_some() {
            notes.push(format!(
                "{key}: not supported by this build (PEM certificate files only); convert to PEM for cert_file/key_file"
            ));
        }
    }
    const KNOWN: [&str; 19] = [
        "loglevel",
        "databaseFile",
        "listenAddr",
        "port",
        "tlsCertfile",
        "tlsKeyfile",
        "tlsListenAddr",
        "tlsPort",
        "checkInterval",
        "delay",
        "appleId",
        "appleIdHashedPassword",
        "certificateFilePem",
        "certificateFilePemKey",
        "certificateFileP12",
        "keyFileP8",
        "keyFileTopic",
        "keyFileKeyId",
        "keyFileTeamId",
    ];
    for (key, _) in &pairs {
        if !KNOWN.contains(&key.as_str()) && !unknown.contains(key) {
            unknown.push(key.clone());
        }
    }
    let mut json = String::from("{\n");
    for (i, (key, value)) in keys.iter().enumerate() {
        let comma = if i + 1 < keys.len() { "," } else { "" };
        json.push_str(&format!(
            "  \"{key}\": {}{comma}\n",
            miniserde::json::to_string(value)
        ));
    }
    json.push_str("}\n");
    Ok(GoConfig {
        json,
        notes,
        unknown,
    })
}

/// `key: value` lines; `#` comments, blank lines and `---` skipped; values
/// may be quoted. Anything nested is refused: the Go config is flat.
fn flat_yaml(text: &str) -> Result<Vec<(String, String)>, ImportError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim_end();
        let content = trimmed.trim_start();
        if content.is_empty() || content.starts_with('#') || content == "---" {
            continue;
        }
        if trimmed.len() != content.len() || content.starts_with('-') {
            return Err(ImportError::Yaml {
                line,
                reason: "nested YAML or a list; the Go config has only top-level keys",
            });
        }
        let (key, value) = content.split_once(':').ok_or(ImportError::Yaml {
            line,
            reason: "expected `key: value`",
        })?;
        let value = value.trim();
        let value = if let Some(q) = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        {
            q.to_owned()
        } else {
            // An unquoted value ends at a comment.
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_owned(),
                None => value.to_owned(),
            }
        };
        out.push((key.trim().to_owned(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = r#"{"Users":{"Alice":{"Accounts":{
        "0715A26B-CA09-4730-A419-793000CA982E":{"DeviceToken":"2918390218931890821908309283098109381029309829018310983092892829",
            "Mailboxes":["INBOX","Sent Messages"],"RegistrationTime":"2024-05-01T10:20:30.123456789+02:00"}}},
        "bob":{"Accounts":{"B0B00000-0000-0000-0000-000000000001":{"DeviceToken":"ABAB","Mailboxes":["INBOX"],
            "RegistrationTime":"0001-01-01T00:00:00Z"}}}},
        "AppleCerts":{"Signature":null,"Keys":null}}"#;

    #[test]
    fn reads_the_go_database() {
        let db = go_database(DB, &Limits::default()).unwrap();
        assert!(db.mail_cert.is_none(), "the Go daemon's empty DbCerts");
        let mut devices = db.devices;
        devices.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].user, "alice");
        assert_eq!(devices[0].mailboxes, ["INBOX", "Sent Messages"]);
        assert_eq!(devices[0].registered_at, 1_714_551_630);
        assert_eq!(devices[1].token, "abab");
        assert_eq!(devices[1].registered_at, 0, "Go's zero time");
        let empty = go_database(r#"{"Users":null}"#, &Limits::default()).unwrap();
        assert!(empty.devices.is_empty() && empty.mail_cert.is_none());
    }

    #[test]
    fn invalid_databases_say_where() {
        let l = Limits::default();
        let err = |t: &str| go_database(t, &l).unwrap_err().to_string();
        assert_eq!(err("{"), "the file is not valid JSON");
        assert_eq!(err(r#"{"Users":[]}"#), "Users: must be an object");
        assert_eq!(
            err(r#"{"Users":{"a":{"Accounts":{"ACCOUNT-0001":{"Mailboxes":["INBOX"]}}}}}"#),
            "Users[\"a\"].Accounts[ACCO…0001].DeviceToken: must be a string"
        );
        assert_eq!(
            err(
                r#"{"Users":{"a":{"Accounts":{"ACCOUNT-0001":{"DeviceToken":"zz","Mailboxes":["INBOX"]}}}}}"#
            ),
            "Users[\"a\"].Accounts[ACCO…0001]: field `ApsDeviceToken` is not a hex string"
        );
        assert_eq!(
            err(r#"{"Users":{"a":{"Accounts":{"ACCOUNT-0001":{"DeviceToken":"ab","Mailboxes":["INBOX"],"RegistrationTime":"yesterday"}}}}}"#),
            "Users[\"a\"].Accounts[ACCO…0001].RegistrationTime: `yesterday` is not an RFC 3339 time"
        );
    }

    /// A certificate for `key` with subject UID `uid`, as Apple's are shaped.
    fn cert(uid: &str, key: &rcgen::KeyPair) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
            uid,
        );
        params.self_signed(key).unwrap().der().to_vec()
    }

    const RSA_PKCS8: &str = include_str!("../tests/fixtures/keys/rsa2048-test.pkcs8.pem");
    const RSA_PKCS1: &str = include_str!("../tests/fixtures/keys/rsa2048-test.pkcs1.pem");
    const MAIL: &str = "com.apple.mail.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab";

    fn b64(der: &[u8]) -> String {
        data_encoding::BASE64.encode(der)
    }

    /// `AppleCerts` as the Go daemon writes it: five services, mail at 2,
    /// the mail key the committed RSA test key, the others ECDSA (unused).
    fn go_certs(mail_key: &str) -> (String, Vec<u8>) {
        let rsa = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(RSA_PKCS8, &rcgen::PKCS_RSA_SHA256)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let mail = cert(MAIL, &rsa);
        let certs = [
            cert("com.apple.calendar.XServer.1", &other),
            cert("com.apple.contact.XServer.1", &other),
            mail.clone(),
            cert("com.apple.mgmt.XServer.1", &other),
            cert("com.apple.alerts.XServer.1", &other),
        ];
        let signature: Vec<String> = certs
            .iter()
            .map(|c| format!(r#"{{"Certificate":["{}"],"PrivateKey":null,"SupportedSignatureAlgorithms":null,"OCSPStaple":null,"SignedCertificateTimestamps":null,"Leaf":null}}"#, b64(c)))
            .collect();
        let other_key = b64(&other.serialize_der());
        let keys = [&*other_key, &other_key, mail_key, &other_key, &other_key];
        (
            format!(
                r#"{{"Users":{{}},"AppleCerts":{{"Signature":[{}],"Keys":["{}"]}}}}"#,
                signature.join(","),
                keys.join(r#"",""#)
            ),
            mail,
        )
    }

    fn pkcs1_der() -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        match PrivateKeyDer::from_pem_slice(RSA_PKCS1.as_bytes()).unwrap() {
            PrivateKeyDer::Pkcs1(k) => k.secret_pkcs1_der().to_vec(),
            _ => panic!("the fixture is PKCS#1"),
        }
    }

    #[test]
    fn picks_the_mail_certificate_and_its_key() {
        let (text, mail) = go_certs(&b64(&pkcs1_der()));
        let cert = go_database(&text, &Limits::default())
            .unwrap()
            .mail_cert
            .unwrap();
        assert_eq!(cert.at, "AppleCerts.Signature[2]");
        assert_eq!(cert.facts.topic, MAIL);
        assert_eq!(cert.chain, [mail]);
        assert_eq!(cert.key_pem(), RSA_PKCS1.replace("\r\n", "\n"));
        assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(cert.cert_pem().lines().all(|l| l.len() <= 64));
        let debug = format!("{cert:?}");
        assert!(!debug.contains(&b64(&pkcs1_der())[..40]) && !debug.contains("key"));
    }

    #[test]
    fn invalid_certificates_say_where() {
        let l = Limits::default();
        let err = |t: &str| go_database(t, &l).unwrap_err().to_string();
        let (text, _) = go_certs("not base64!");
        assert_eq!(err(&text), "AppleCerts.Keys[2]: not base64");
        // A key, but not the mail certificate's (the ECDSA one is not PKCS#1 RSA).
        let (text, _) = go_certs(&b64(&[0x30, 0x03, 0x02, 0x01, 0x00]));
        assert_eq!(
            err(&text),
            "AppleCerts.Keys[2]: not a PKCS#1 RSA private key (2048 to 8192 bits)"
        );
        let (good, mail) = go_certs(&b64(&pkcs1_der()));
        let other_rsa = good.replace(
            &b64(&mail),
            &b64(&cert(MAIL, &rcgen::KeyPair::generate().unwrap())),
        );
        assert_eq!(
            err(&other_rsa),
            "AppleCerts.Keys[2]: is not the key of the certificate in AppleCerts.Signature[2]"
        );
        let no_mail = good.replace(
            &b64(&mail),
            &b64(&cert(
                "com.example.other",
                &rcgen::KeyPair::generate().unwrap(),
            )),
        );
        assert!(err(&no_mail)
            .starts_with("AppleCerts.Signature: none of its 5 certificates has a mail topic"));
        let garbage = good.replace(&b64(&mail), &b64(b"not DER"));
        assert_eq!(
            err(&garbage),
            "AppleCerts.Signature[2].Certificate[0]: not a DER X.509 certificate"
        );
        assert_eq!(
            err(r#"{"AppleCerts":{"Signature":[{"Certificate":[]}]}}"#),
            "AppleCerts.Signature[0].Certificate: holds no certificate"
        );
        assert_eq!(
            err(r#"{"AppleCerts":{"Mail":{"Certificate":"x"}}}"#),
            "AppleCerts: unexpected field `Mail`; expected the Go daemon's `Signature` and `Keys`"
        );
        assert_eq!(err(r#"{"AppleCerts":[]}"#), "AppleCerts: must be an object");
        // Without its keys list.
        let cut = good.split(r#","Keys""#).next().unwrap().to_owned() + "}}";
        assert_eq!(
            err(&cut),
            "AppleCerts.Keys[2]: missing: there is no key for the mail certificate"
        );
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("2026-11-29T12:00:30Z"), Some(1_795_953_630));
        assert_eq!(rfc3339("2026-11-29T13:00:30.5+01:00"), Some(1_795_953_630));
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-29T12:00:30",
            "2026-11-29T12:00:30.Z",
            "2026-11-29T12:00:30+0100",
            "2026-11-29",
            "",
            "2026-11-29T1é:00:30Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn translates_the_go_config() {
        let yaml = "---\n# Go daemon\nloglevel: warning\ndatabaseFile: /var/lib/xapsd/database.json\nlistenAddr: \"::1\"\nport: 11619 # plugin\ndelay: 15\ncertificateFilePem: '/etc/xapsd/cert.pem'\ncertificateFilePemKey: /etc/xapsd/key.pem\ntlsPort: 11620\nappleId: me@example.com\nkeyFileP8: /etc/k.p8\nfrobnicate: yes\n";
        let c = go_config(yaml).unwrap();
        assert_eq!(
            c.json,
            "{\n  \"log_level\": \"warn\",\n  \"listen\": [\"[::1]:11619\"],\n  \"delay_secs\": 15,\n  \"cert_file\": \"/etc/xapsd/cert.pem\",\n  \"key_file\": \"/etc/xapsd/key.pem\"\n}\n"
        );
        // What it prints is a config xapsd accepts.
        let mut config = crate::config::Config::default();
        config
            .apply_json(&c.json, std::path::Path::new("out.json"))
            .unwrap();
        assert_eq!(config.delay_secs, 15);
        assert_eq!(c.unknown, ["frobnicate"]);
        let notes = c.notes.join("\n");
        for key in ["databaseFile", "tlsPort", "appleId", "keyFileP8"] {
            assert!(notes.contains(key), "{key} not noted:\n{notes}");
        }
        assert!(notes.contains("xapsd import-go /var/lib/xapsd/database.json"));
    }

    #[test]
    fn never_panics_on_prefixes() {
        let time = "2026-11-29T13:00:30.5+01:00";
        for end in 0..=time.len() {
            let _ = rfc3339(&time[..end]);
        }
        let yaml = "a: 'x'\nb: \"é\" # c\n  d:\n- e\n";
        for end in (0..=yaml.len()).filter(|&e| yaml.is_char_boundary(e)) {
            let _ = go_config(&yaml[..end]);
        }
        for end in (0..=DB.len()).filter(|&e| DB.is_char_boundary(e)) {
            let _ = go_database(&DB[..end], &Limits::default());
        }
    }

    #[test]
    fn nested_yaml_is_refused_with_its_line() {
        assert_eq!(
            go_config("port: 1\nnested:\n  key: 2\n").unwrap_err(),
            ImportError::Yaml {
                line: 3,
                reason: "nested YAML or a list; the Go config has only top-level keys"
            }
        );
        assert_eq!(
            go_config("just words\n").unwrap_err().to_string(),
            "line 1: expected `key: value`"
        );
    }
}
