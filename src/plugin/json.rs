//! The JSON bodies of the HTTP plugin API.
//!
//! Parsed through miniserde's generic `Value` rather than derived structs so
//! that a bad body gets a reason naming the field, and any key order or
//! spacing the plugin (or a future one) writes is accepted. Unknown keys are
//! ignored: newer plugins may add some.

use miniserde::json::{Object, Value};

use crate::service::{NotifyRequest, RegisterRequest};

/// Why a body was refused; shown to the plugin and logged.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    NotUtf8,
    NotJson,
    NotAnObject,
    Missing(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::NotUtf8 => f.write_str("body is not UTF-8"),
            BodyError::NotJson => f.write_str("body is not valid JSON"),
            BodyError::NotAnObject => f.write_str("body is not a JSON object"),
            BodyError::Missing(field) => write!(f, "field `{field}` is missing"),
            BodyError::WrongType { field, expected } => {
                write!(f, "field `{field}` must be {expected}")
            }
        }
    }
}

impl std::error::Error for BodyError {}

fn object(body: &[u8]) -> Result<Object, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    match miniserde::json::from_str(text).map_err(|_| BodyError::NotJson)? {
        Value::Object(o) => Ok(o),
        _ => Err(BodyError::NotAnObject),
    }
}

fn take_string(o: &mut Object, field: &'static str) -> Result<String, BodyError> {
    match o.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(BodyError::WrongType {
            field,
            expected: "a string",
        }),
        None => Err(BodyError::Missing(field)),
    }
}

fn take_strings(o: &mut Object, field: &'static str) -> Result<Option<Vec<String>>, BodyError> {
    let wrong = BodyError::WrongType {
        field,
        expected: "a list of strings",
    };
    match o.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(BodyError::WrongType {
                    field,
                    expected: "a list of strings",
                }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong),
    }
}

/// `POST /register` body.
pub fn register(body: &[u8]) -> Result<RegisterRequest, BodyError> {
    let mut o = object(body)?;
    Ok(RegisterRequest {
        account_id: take_string(&mut o, "ApsAccountId")?,
        device_token: take_string(&mut o, "ApsDeviceToken")?,
        subtopic: take_string(&mut o, "ApsSubtopic")?,
        username: take_string(&mut o, "Username")?,
        mailboxes: take_strings(&mut o, "Mailboxes")?.ok_or(BodyError::Missing("Mailboxes"))?,
    })
}

/// `POST /notify` body. A missing `Events` means new mail, as with the
/// oldest plugins.
pub fn notify(body: &[u8]) -> Result<NotifyRequest, BodyError> {
    let mut o = object(body)?;
    Ok(NotifyRequest {
        username: take_string(&mut o, "Username")?,
        mailbox: take_string(&mut o, "Mailbox")?,
        events: take_strings(&mut o, "Events")?.unwrap_or_else(|| vec!["MessageNew".to_owned()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plugins_exact_bytes() {
        let r = register(br#"{"ApsAccountId":"A","ApsDeviceToken":"ab","ApsSubtopic":"com.apple.mobilemail","Username":"alice","Mailboxes": ["INBOX","Sent Messages"]}"#).unwrap();
        assert_eq!(r.mailboxes, ["INBOX", "Sent Messages"]);
        assert_eq!(r.username, "alice");
        let n = notify(
            br#"{"Username":"alice","Mailbox":"INBOX","Events": ["FlagsClear","FlagsSet"]}"#,
        )
        .unwrap();
        assert_eq!(n.events, ["FlagsClear", "FlagsSet"]);
    }

    #[test]
    fn any_order_and_spacing() {
        let n = notify(
            b"{ \"Events\" : [ ] ,\n \"Mailbox\":\"Notes\", \"Username\":\"Bob\", \"Extra\": 1 }",
        )
        .unwrap();
        assert_eq!((n.username.as_str(), n.mailbox.as_str()), ("Bob", "Notes"));
        assert!(n.events.is_empty());
        let n = notify(br#"{"Username":"a","Mailbox":"INBOX"}"#).unwrap();
        assert_eq!(n.events, ["MessageNew"]);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            notify(b"{\"Username\":\"a\"").unwrap_err(),
            BodyError::NotJson
        );
        assert_eq!(notify(b"[]").unwrap_err(), BodyError::NotAnObject);
        assert_eq!(notify(b"\xff").unwrap_err(), BodyError::NotUtf8);
        assert_eq!(
            notify(br#"{"Username":"a"}"#).unwrap_err(),
            BodyError::Missing("Mailbox")
        );
        assert_eq!(
            notify(br#"{"Username":1,"Mailbox":"x"}"#)
                .unwrap_err()
                .to_string(),
            "field `Username` must be a string"
        );
        assert_eq!(
            register(br#"{"ApsAccountId":"A","ApsDeviceToken":"ab","ApsSubtopic":"s","Username":"u","Mailboxes":"INBOX"}"#)
                .unwrap_err()
                .to_string(),
            "field `Mailboxes` must be a list of strings"
        );
        assert_eq!(
            register(
                br#"{"ApsAccountId":"A","ApsDeviceToken":"ab","ApsSubtopic":"s","Username":"u"}"#
            )
            .unwrap_err(),
            BodyError::Missing("Mailboxes")
        );
    }
}
