//! One push: the request APNs expects and what its answer means.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use miniserde::json::Value;

/// Seconds APNs keeps trying to deliver a push to an offline phone.
const EXPIRATION_SECS: u64 = 24 * 3600;

/// What to send and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// Lower-case hex device token.
    pub token: String,
    pub account_id: String,
}

/// `{"aps":{"account-id":"..."}}`, the whole payload iOS Mail needs.
/// Written by hand: it is one string, and the serializer's generic path
/// cost as much as the rest of the request.
pub fn body(account_id: &str) -> Bytes {
    const HEAD: &str = r#"{"aps":{"account-id":""#;
    const TAIL: &str = r#""}}"#;
    let mut out = String::with_capacity(HEAD.len() + account_id.len() + TAIL.len());
    out.push_str(HEAD);
    for c in account_id.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push_str(TAIL);
    Bytes::from(out)
}

/// The request head for a push; the body is [`body`].
pub fn request(
    authority: &str,
    topic: &str,
    authorization: Option<&str>,
    push: &Push,
    now_unix: u64,
) -> Result<http::Request<()>, http::Error> {
    // Names and constant values are built once at compile time: parsing
    // them per push showed up in the profile.
    const TOPIC: HeaderName = HeaderName::from_static("apns-topic");
    const PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
    const PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
    const EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
    // Filled in place: the builder moves the whole request through a
    // Result at every header, which showed up in the profile.
    let uri = http::Uri::try_from(format!("https://{authority}/3/device/{}", push.token))?;
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.reserve(5);
    headers.insert(TOPIC, HeaderValue::from_str(topic)?);
    headers.insert(PUSH_TYPE, HeaderValue::from_static("background"));
    headers.insert(PRIORITY, HeaderValue::from_static("5"));
    headers.insert(EXPIRATION, HeaderValue::from(now_unix + EXPIRATION_SECS));
    if let Some(auth) = authorization {
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(auth)?);
    }
    Ok(request)
}

/// What Apple's answer means for this push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by APNs.
    Delivered,
    /// The token is dead: its registration should go. `since` is Apple's
    /// timestamp (unix seconds) when it says when the token stopped working.
    DeviceGone {
        status: u16,
        reason: String,
        since: Option<u64>,
    },
    /// Our own certificate/token/topic is wrong: keep the device, fix the
    /// credentials, retry later.
    CredentialsRejected { status: u16, reason: String },
    /// A passing problem (rate limit, server error, lost connection): retry.
    Retry {
        status: Option<u16>,
        reason: String,
        after: Option<Duration>,
    },
    /// Apple will never accept this push as it is; drop it.
    Rejected { status: u16, reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("delivered"),
            Outcome::DeviceGone { status, reason, .. } => {
                write!(f, "device gone ({status} {reason})")
            }
            Outcome::CredentialsRejected { status, reason } => {
                write!(f, "credentials rejected ({status} {reason})")
            }
            Outcome::Retry {
                status: Some(s),
                reason,
                ..
            } => write!(f, "retry ({s} {reason})"),
            Outcome::Retry {
                status: None,
                reason,
                ..
            } => write!(f, "retry ({reason})"),
            Outcome::Rejected { status, reason } => write!(f, "rejected ({status} {reason})"),
        }
    }
}

impl Outcome {
    /// A short label for metrics and device listings.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::DeviceGone { .. } => "device_gone",
            Outcome::CredentialsRejected { .. } => "credentials_rejected",
            Outcome::Retry { .. } => "retry",
            Outcome::Rejected { .. } => "rejected",
        }
    }
}

/// Classifies an APNs answer (status, `retry-after` seconds, JSON body).
pub fn classify(status: u16, retry_after: Option<u64>, body: &[u8]) -> Outcome {
    if status == 200 {
        return Outcome::Delivered;
    }
    let (reason, timestamp_ms) = parse_error_body(body);
    match (status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Outcome::DeviceGone {
            status,
            reason,
            since: timestamp_ms.map(|ms| ms / 1000),
        },
        (403, _) | (400, "BadTopic" | "TopicDisallowed" | "MissingTopic") => {
            Outcome::CredentialsRejected { status, reason }
        }
        (429, _) | (500..=599, _) => Outcome::Retry {
            status: Some(status),
            reason,
            after: retry_after.map(Duration::from_secs),
        },
        _ => Outcome::Rejected { status, reason },
    }
}

/// `{"reason":"...","timestamp":123}`; tolerant of anything else.
fn parse_error_body(body: &[u8]) -> (String, Option<u64>) {
    let value = std::str::from_utf8(body)
        .ok()
        .and_then(|t| miniserde::json::from_str::<Value>(t).ok());
    let Some(Value::Object(o)) = value else {
        return ("(no reason given)".to_owned(), None);
    };
    let reason = match o.get("reason") {
        // Bound what goes into logs: Apple's reasons are short words.
        Some(Value::String(s)) => s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect(),
        _ => "(no reason given)".to_owned(),
    };
    let timestamp = match o.get("timestamp") {
        Some(Value::Number(miniserde::json::Number::U64(n))) => Some(*n),
        _ => None,
    };
    (reason, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_exactly_what_ios_mail_expects() {
        assert_eq!(
            &body("0715A26B")[..],
            br#"{"aps":{"account-id":"0715A26B"}}"#
        );
        assert_eq!(&body("a\"b")[..], br#"{"aps":{"account-id":"a\"b"}}"#);
        // Same escaping as a JSON serializer: quotes, backslashes, controls.
        for id in ["a\\b", "tab\there", "\u{1}", "ünï"] {
            let text = String::from_utf8(body(id).to_vec()).unwrap();
            let parsed: Value = miniserde::json::from_str(&text).unwrap();
            let Value::Object(o) = parsed else {
                panic!("not an object: {text}")
            };
            let Some(Value::Object(aps)) = o.get("aps") else {
                panic!("no aps: {text}")
            };
            assert!(
                matches!(aps.get("account-id"), Some(Value::String(s)) if s == id),
                "{text}"
            );
        }
    }

    #[test]
    fn request_headers() {
        let push = Push {
            token: "abcd".into(),
            account_id: "x".into(),
        };
        let req = request(
            "api.push.apple.com:443",
            "com.apple.mail.X",
            None,
            &push,
            1000,
        )
        .unwrap();
        assert_eq!(req.uri(), "https://api.push.apple.com:443/3/device/abcd");
        assert_eq!(req.method(), http::Method::POST);
        let h = req.headers();
        assert_eq!(h["apns-topic"], "com.apple.mail.X");
        assert_eq!(h["apns-push-type"], "background");
        assert_eq!(h["apns-priority"], "5");
        assert_eq!(h["apns-expiration"], "87400");
        assert!(h.get("authorization").is_none());
        let req = request("h:1", "t", Some("bearer abc"), &push, 0).unwrap();
        assert_eq!(req.headers()["authorization"], "bearer abc");
    }

    #[test]
    fn classifies_apples_answers() {
        assert_eq!(classify(200, None, b""), Outcome::Delivered);
        assert_eq!(
            classify(
                410,
                None,
                br#"{"reason":"Unregistered","timestamp":1700000000123}"#
            ),
            Outcome::DeviceGone {
                status: 410,
                reason: "Unregistered".into(),
                since: Some(1_700_000_000)
            }
        );
        assert!(matches!(
            classify(400, None, br#"{"reason":"BadDeviceToken"}"#),
            Outcome::DeviceGone { .. }
        ));
        assert!(matches!(
            classify(400, None, br#"{"reason":"DeviceTokenNotForTopic"}"#),
            Outcome::DeviceGone { .. }
        ));
        assert!(matches!(
            classify(403, None, br#"{"reason":"BadCertificate"}"#),
            Outcome::CredentialsRejected { .. }
        ));
        assert!(matches!(
            classify(400, None, br#"{"reason":"TopicDisallowed"}"#),
            Outcome::CredentialsRejected { .. }
        ));
        assert_eq!(
            classify(429, Some(7), br#"{"reason":"TooManyRequests"}"#),
            Outcome::Retry {
                status: Some(429),
                reason: "TooManyRequests".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            classify(503, None, b"garbage"),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(413, None, br#"{"reason":"PayloadTooLarge"}"#),
            Outcome::Rejected { .. }
        ));
    }
}
