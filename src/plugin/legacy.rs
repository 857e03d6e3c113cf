//! The line protocol of the pre-2021 dovecot-xaps plugin, on a Unix socket.
//!
//! Dovecot 2.2 installs (and plugins built before the HTTP API) connect to a
//! Unix socket, write one `REGISTER` or `NOTIFY` line of TAB-separated
//! `key=value` fields, read one `OK …` / `ERROR …` line and close, all under
//! a one-second alarm. Serving it here lets such servers switch daemons
//! without touching Dovecot. Only the framing lives in this module: the
//! parser is a pure function over the peer's bytes (it never panics, so it
//! can be fuzzed), and the meaning of a request is [`Service`]'s, exactly as
//! for the HTTP front end.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::FrontEndStats;
use crate::clock::within;
use crate::limits::Limits;
use crate::service::{NotifyRequest, RegisterRequest, Service, ServiceError};

/// One parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Register(RegisterRequest),
    Notify(NotifyRequest),
}

/// Why a line was refused; sent back as `ERROR <this>` and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    NotUtf8,
    Empty,
    /// The first word; shortened and escaped, since it is peer input.
    UnknownCommand(String),
    /// The line does not follow `key="value"` / `key=("a","b")` at byte `at`.
    Syntax {
        at: usize,
        expected: &'static str,
    },
    Missing(&'static str),
    Duplicate(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NotUtf8 => f.write_str("request is not UTF-8"),
            LineError::Empty => f.write_str("empty request"),
            LineError::UnknownCommand(c) => {
                write!(f, "unknown command `{c}` (expected REGISTER or NOTIFY)")
            }
            LineError::Syntax { at, expected } => {
                write!(f, "malformed request at byte {at}: expected {expected}")
            }
            LineError::Missing(field) => write!(f, "field `{field}` is missing"),
            LineError::Duplicate(field) => write!(f, "field `{field}` is given twice"),
            LineError::WrongType { field, expected } => {
                write!(f, "field `{field}` must be {expected}")
            }
        }
    }
}

impl std::error::Error for LineError {}

/// A field's value as written on the line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Str(String),
    List(Vec<String>),
}

/// The fields each command reads; anything else on the line is ignored, as
/// the HTTP API ignores unknown JSON keys.
const REGISTER_FIELDS: [&str; 5] = [
    "aps-account-id",
    "aps-device-token",
    "aps-subtopic",
    "dovecot-username",
    "dovecot-mailboxes",
];
const NOTIFY_FIELDS: [&str; 3] = ["dovecot-username", "dovecot-mailbox", "events"];

/// Parses one request line, with or without its `\r\n`.
pub fn parse(line: &[u8]) -> Result<Request, LineError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    if text.is_empty() {
        return Err(LineError::Empty);
    }
    let (command, rest, offset) = match text.find(' ') {
        Some(i) => (&text[..i], &text[i + 1..], i + 1),
        None => (text, "", text.len()),
    };
    match command {
        "REGISTER" => {
            let mut fields = Fields::parse(rest, offset, &REGISTER_FIELDS)?;
            Ok(Request::Register(RegisterRequest {
                account_id: fields.string("aps-account-id")?,
                device_token: fields.string("aps-device-token")?,
                subtopic: fields.string("aps-subtopic")?,
                username: fields.string("dovecot-username")?,
                mailboxes: fields
                    .list("dovecot-mailboxes")?
                    .ok_or(LineError::Missing("dovecot-mailboxes"))?,
            }))
        }
        "NOTIFY" => {
            let mut fields = Fields::parse(rest, offset, &NOTIFY_FIELDS)?;
            Ok(Request::Notify(NotifyRequest {
                username: fields.string("dovecot-username")?,
                mailbox: fields.string("dovecot-mailbox")?,
                // Very old plugins send no events: that was new mail.
                events: fields
                    .list("events")?
                    .unwrap_or_else(|| vec!["MessageNew".to_owned()]),
            }))
        }
        other => Err(LineError::UnknownCommand(
            other
                .chars()
                .take(16)
                .flat_map(char::escape_debug)
                .collect(),
        )),
    }
}

/// The known fields of one line, by name.
struct Fields {
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    /// Reads `key=value` fields separated by TAB; `offset` is where `text`
    /// starts in the line, for error positions.
    fn parse(text: &str, offset: usize, known: &[&'static str]) -> Result<Fields, LineError> {
        let mut values: Vec<(&'static str, Value)> = Vec::new();
        let mut cursor = Cursor {
            bytes: text.as_bytes(),
            pos: 0,
            offset,
        };
        while !cursor.at_end() {
            let key = cursor.key()?;
            let value = cursor.value()?;
            if !cursor.at_end() {
                cursor.expect(b'\t', "a TAB between fields")?;
            }
            let Some(name) = known.iter().copied().find(|k| *k == key) else {
                continue;
            };
            if values.iter().any(|(n, _)| *n == name) {
                return Err(LineError::Duplicate(name));
            }
            values.push((name, value));
        }
        Ok(Fields { values })
    }

    fn take(&mut self, field: &'static str) -> Option<Value> {
        let i = self.values.iter().position(|(n, _)| *n == field)?;
        Some(self.values.swap_remove(i).1)
    }

    fn string(&mut self, field: &'static str) -> Result<String, LineError> {
        match self.take(field) {
            Some(Value::Str(s)) => Ok(s),
            Some(Value::List(_)) => Err(LineError::WrongType {
                field,
                expected: "a quoted string",
            }),
            None => Err(LineError::Missing(field)),
        }
    }

    fn list(&mut self, field: &'static str) -> Result<Option<Vec<String>>, LineError> {
        match self.take(field) {
            Some(Value::List(items)) => Ok(Some(items)),
            Some(Value::Str(_)) => Err(LineError::WrongType {
                field,
                expected: "a list like (\"a\",\"b\")",
            }),
            None => Ok(None),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, expected: &'static str) -> LineError {
        LineError::Syntax {
            at: self.offset + self.pos,
            expected,
        }
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), LineError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// A field name up to `=`.
    fn key(&mut self) -> Result<&'a str, LineError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return Err(self.error("a field name"));
        }
        // Only ASCII was consumed, so this slice is on char boundaries.
        let bytes: &'a [u8] = self.bytes;
        let key = std::str::from_utf8(&bytes[start..self.pos]).unwrap_or_default();
        self.expect(b'=', "`=` after the field name")?;
        Ok(key)
    }

    fn value(&mut self) -> Result<Value, LineError> {
        match self.peek() {
            Some(b'"') => Ok(Value::Str(self.quoted()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b')') {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.quoted()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return Err(self.error("`,` or `)` in a list")),
                    }
                }
            }
            _ => Err(self.error("a quoted string or a list")),
        }
    }

    /// A `"…"` string; `\x` stands for `x` (the plugin escapes `"` and `\`).
    fn quoted(&mut self) -> Result<String, LineError> {
        self.expect(b'"', "`\"`")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("a closing `\"`")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) => out.push(b),
                        None => return Err(self.error("a character after `\\`")),
                    }
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        // The line was valid UTF-8 and only ASCII escapes were dropped.
        String::from_utf8(out).map_err(|_| LineError::NotUtf8)
    }
}

/// The reply line for a request's result. Never more than one line: any CR
/// or LF in a message becomes a space.
pub fn reply(result: Result<Option<String>, String>) -> Vec<u8> {
    let (word, text) = match result {
        Ok(topic) => ("OK", topic.unwrap_or_default()),
        Err(message) => ("ERROR", message),
    };
    let text: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    format!("{word} {text}\r\n").into_bytes()
}

/// Why the legacy socket could not be set up.
#[derive(Debug)]
pub enum SocketError {
    /// Something that is not a socket sits at the path; it is left alone.
    NotASocket(PathBuf),
    /// Another process answers on the socket: probably a running xapsd.
    InUse(PathBuf),
    NoSuchGroup(String),
    Io(PathBuf, &'static str, std::io::Error),
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::NotASocket(p) => {
                write!(
                    f,
                    "{} exists and is not a socket; not replacing it",
                    p.display()
                )
            }
            SocketError::InUse(p) => write!(
                f,
                "{} is in use by another process (is another xapsd running?)",
                p.display()
            ),
            SocketError::NoSuchGroup(g) => write!(f, "group `{g}` does not exist"),
            SocketError::Io(p, what, e) => write!(f, "{} {}: {e}", what, p.display()),
        }
    }
}

impl std::error::Error for SocketError {}

/// The socket file; removed when dropped (at exit, or if start-up fails
/// after it was made).
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket at `path` with `mode` and, if given, `group`. A stale
/// socket left by a crash is replaced; a live one or any other file is not.
pub fn bind(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<(Async<UnixListener>, SocketFile), SocketError> {
    let io = |what| move |e| SocketError::Io(path.to_owned(), what, e);
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(|e| io("cannot look up the group of")(e.into()))?
                .ok_or_else(|| SocketError::NoSuchGroup(name.to_owned()))?
                .gid,
        ),
        None => None,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            log::info!("replacing stale legacy socket {}", path.display());
            std::fs::remove_file(path).map_err(io("cannot remove stale socket"))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot inspect")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io("cannot bind"))?;
    let file = SocketFile {
        path: path.to_owned(),
    };
    // Group first, then mode: the socket is never open to a wider group.
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| io("cannot change the group of")(e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set the mode of"))?;
    let listener = Async::new(listener).map_err(io("cannot watch"))?;
    Ok((listener, file))
}

/// What the legacy listener needs.
pub struct LegacyFrontEnd {
    pub service: Arc<Service>,
    pub limits: Arc<Limits>,
    pub stats: Arc<FrontEndStats>,
    pub executor: Arc<Executor<'static>>,
}

impl LegacyFrontEnd {
    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: Async<UnixListener>) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("legacy socket: accept failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = self.stats.admit(
                self.limits.max_legacy_connections,
                &"legacy plugin connection",
            ) else {
                continue;
            };
            let this = Arc::clone(&self);
            self.executor
                .spawn(async move {
                    this.connection(stream).await;
                    drop(slot);
                })
                .detach();
        }
    }

    /// One request: read a line, answer it, close.
    async fn connection(&self, mut stream: Async<UnixStream>) {
        let limits = &self.limits;
        let deadline = Instant::now() + limits.legacy_read_timeout;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let line_end = loop {
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                break i + 1;
            }
            if buf.len() >= limits.max_legacy_line {
                let reason = format!("request line over {} bytes", limits.max_legacy_line);
                self.refuse(&mut stream, &reason).await;
                // Closing with unread input resets the connection, and the
                // peer would lose the answer: read (a bounded amount of) the
                // rest first.
                let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
                let mut left = 4 * limits.max_legacy_line;
                while left > 0 {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match within(wait, stream.read(&mut chunk)).await {
                        Some(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                        _ => break,
                    }
                }
                return;
            }
            // Never read past the bound, so a found line is within it.
            let room = (limits.max_legacy_line - buf.len()).min(chunk.len());
            let wait = deadline.saturating_duration_since(Instant::now());
            match within(wait, stream.read(&mut chunk[..room])).await {
                // End of input without a newline: take what came as the line.
                Some(Ok(0)) | Some(Err(_)) if !buf.is_empty() => break buf.len(),
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                None => {
                    if !buf.is_empty() {
                        self.refuse(&mut stream, "request not received in time")
                            .await;
                    }
                    return;
                }
            }
        };
        buf.truncate(line_end);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let answer = match parse(&buf) {
            Ok(Request::Register(request)) => match self.service.register(request).await {
                Ok(topic) => Ok(Some(topic)),
                Err(e) => Err(e),
            },
            Ok(Request::Notify(request)) => self.service.notify(request).map(|_| None),
            Err(e) => {
                self.refuse(&mut stream, &e.to_string()).await;
                return;
            }
        };
        match answer {
            Ok(topic) => self.write(&mut stream, &reply(Ok(topic))).await,
            Err(e @ ServiceError::Store(_)) => {
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                let reason = e.to_string();
                self.stats.log_failure(&"legacy plugin request", &reason);
                self.write(&mut stream, &reply(Err(reason))).await;
            }
            Err(e @ ServiceError::Invalid(_)) => self.refuse(&mut stream, &e.to_string()).await,
        }
    }

    async fn refuse(&self, stream: &mut Async<UnixStream>, reason: &str) {
        self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        log::warn!("legacy plugin request refused: {reason}");
        self.write(stream, &reply(Err(reason.to_owned()))).await;
    }

    async fn write(&self, stream: &mut Async<UnixStream>, bytes: &[u8]) {
        let limit = self.limits.legacy_read_timeout;
        if within(limit, stream.write_all(bytes)).await.is_none() {
            log::debug!("legacy plugin did not take its answer within {limit:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER aps-account-id=\"0715A26B-CA09-4730-A419-793000CA982E\"\taps-device-token=\"2918390218931890821908309283098109381029309829018310983092892829\"\taps-subtopic=\"com.apple.mobilemail\"\tdovecot-username=\"alice\"\tdovecot-mailboxes=(\"INBOX\",\"Sent Messages\")\r\n";

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dovecot-xaps-plugin-legacy")
            .join(name);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn reads_the_old_plugins_register_line() {
        assert_eq!(fixture("01-register.line"), REGISTER);
        let Request::Register(r) = parse(REGISTER).unwrap() else {
            panic!("REGISTER expected")
        };
        assert_eq!(r.account_id, "0715A26B-CA09-4730-A419-793000CA982E");
        assert_eq!(r.subtopic, "com.apple.mobilemail");
        assert_eq!(r.username, "alice");
        assert_eq!(r.mailboxes, ["INBOX", "Sent Messages"]);
        assert_eq!(r.device_token.len(), 64);
    }

    #[test]
    fn reads_every_fixture() {
        for (name, user, events) in [
            ("03-notify.line", "alice", vec!["MessageNew"]),
            ("04-notify.line", "Bob", vec!["MessageNew"]),
            (
                "05-notify.line",
                "alice",
                vec!["FlagsClear", "FlagsSet", "MessageRead"],
            ),
        ] {
            let Request::Notify(n) = parse(&fixture(name)).unwrap() else {
                panic!("{name}: NOTIFY expected")
            };
            assert_eq!(n.username, user, "{name}");
            assert_eq!(n.mailbox, "INBOX", "{name}");
            assert_eq!(n.events, events, "{name}");
        }
        let Request::Register(r) = parse(&fixture("02-register.line")).unwrap() else {
            panic!("REGISTER expected")
        };
        assert_eq!((r.username.as_str(), r.mailboxes.len()), ("Bob", 1));
    }

    #[test]
    fn escapes_missing_events_and_unknown_fields() {
        let line = b"NOTIFY dovecot-username=\"a\\\"b\\\\c\"\tx-new=(\"ignored\")\tdovecot-mailbox=\"Q \\\"x\\\"\"";
        let Request::Notify(n) = parse(line).unwrap() else {
            panic!("NOTIFY expected")
        };
        assert_eq!(n.username, "a\"b\\c");
        assert_eq!(n.mailbox, "Q \"x\"");
        assert_eq!(n.events, ["MessageNew"], "no events= means new mail");
        let Request::Notify(n) =
            parse(b"NOTIFY dovecot-username=\"\xc3\xa9\"\tdovecot-mailbox=\"I\"\tevents=()\n")
                .unwrap()
        else {
            panic!("NOTIFY expected")
        };
        assert_eq!(n.username, "é");
        assert!(n.events.is_empty());
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty request"),
            (b"\r\n", "empty request"),
            (b"\xff\r\n", "not UTF-8"),
            (b"HELLO x=\"y\"", "unknown command `HELLO`"),
            (b"NOTIFY", "field `dovecot-username` is missing"),
            (
                b"NOTIFY dovecot-username=alice",
                "at byte 24: expected a quoted string or a list",
            ),
            (
                b"NOTIFY dovecot-username=\"alice",
                "expected a closing `\"`",
            ),
            (
                b"NOTIFY dovecot-username=\"a\" dovecot-mailbox=\"I\"",
                "at byte 27: expected a TAB between fields",
            ),
            (
                b"NOTIFY dovecot-username=\"a\"\tdovecot-username=\"b\"",
                "`dovecot-username` is given twice",
            ),
            (
                b"NOTIFY dovecot-username=(\"a\")\tdovecot-mailbox=\"I\"",
                "`dovecot-username` must be a quoted string",
            ),
            (
                b"NOTIFY dovecot-username=\"a\"\tdovecot-mailbox=\"I\"\tevents=\"MessageNew\"",
                "`events` must be a list",
            ),
            (
                b"NOTIFY dovecot-username=\"a\"\tdovecot-mailbox=\"I\"\tevents=(\"A\" \"B\")",
                "expected `,` or `)` in a list",
            ),
            (b"NOTIFY =\"a\"", "expected a field name"),
            (b"NOTIFY a\"", "expected `=` after the field name"),
            (b"NOTIFY a=\"\\", "a character after `\\`"),
            (
                b"REGISTER aps-account-id=\"A\"\taps-device-token=\"ab\"\taps-subtopic=\"s\"\tdovecot-username=\"u\"",
                "field `dovecot-mailboxes` is missing",
            ),
        ];
        for (line, want) in cases {
            let got = parse(line).unwrap_err().to_string();
            assert!(
                got.contains(want),
                "{:?}: got `{got}`, want `{want}`",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        // A cheap stand-in for fuzzing: every truncation and every single
        // byte replaced by each interesting byte.
        let special = [b'"', b'\\', b'(', b')', b',', b'\t', b'=', b' ', 0xff, 0xc3];
        for end in 0..=REGISTER.len() {
            let _ = parse(&REGISTER[..end]);
        }
        for i in 0..REGISTER.len() {
            for &b in &special {
                let mut line = REGISTER.to_vec();
                line[i] = b;
                let _ = parse(&line);
            }
        }
    }

    #[test]
    fn replies_are_one_line() {
        assert_eq!(reply(Ok(Some("topic".into()))), b"OK topic\r\n");
        assert_eq!(reply(Ok(None)), b"OK \r\n");
        assert_eq!(reply(Err("bad\r\nthing".into())), b"ERROR bad  thing\r\n");
    }
}
