//! Moving from the Go dovecot-xaps-daemon: its JSON registrations and its
//! YAML config.
//!
//! A site switching daemons should not have to wait a day for every phone
//! to register again, nor translate a config by hand. Both readers here are
//! pure functions over the file's text: the registrations go through the
//! same validation as a live `/register` and are then stored in one
//! transaction by the caller, so a bad file changes nothing; the config is
//! translated key by key, and whatever has no xapsd equivalent is listed
//! rather than dropped silently. The Go daemon's `AppleCerts` (certificates
//! from Apple's XServer service) are not imported here.

use std::fmt;

use miniserde::json::{Number, Object, Value};

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
    /// The file also holds certificates from Apple (not imported here).
    pub apple_certs: bool,
}

/// Reads the Go daemon's `database.json`:
/// `{"Users": {user: {"Accounts": {account id: {"DeviceToken", "Mailboxes",
/// "RegistrationTime"}}}}}`. Other top-level keys (`AppleCerts`) are ignored.
pub fn go_database(text: &str, limits: &Limits) -> Result<GoDatabase, ImportError> {
    let Ok(Value::Object(mut top)) = miniserde::json::from_str::<Value>(text) else {
        return Err(ImportError::NotJson);
    };
    let apple_certs = !matches!(top.remove("AppleCerts"), None | Some(Value::Null));
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
        apple_certs,
    })
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
            "databaseFile: xapsd keeps its own store (`db`); import the registrations with `xapsd import-go {db}`"
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
                "{key}: Apple's XServer certificate service is gone (2024); use a certificate file instead"
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
        "AppleCerts":{"Mail":{"Certificate":"ignored"}}}"#;

    #[test]
    fn reads_the_go_database() {
        let db = go_database(DB, &Limits::default()).unwrap();
        assert!(db.apple_certs);
        let mut devices = db.devices;
        devices.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].user, "alice");
        assert_eq!(devices[0].mailboxes, ["INBOX", "Sent Messages"]);
        assert_eq!(devices[0].registered_at, 1_714_551_630);
        assert_eq!(devices[1].token, "abab");
        assert_eq!(devices[1].registered_at, 0, "Go's zero time");
        let empty = go_database(r#"{"Users":null}"#, &Limits::default()).unwrap();
        assert!(empty.devices.is_empty() && !empty.apple_certs);
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
