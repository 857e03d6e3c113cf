//! Operator commands (`xapsd devices`, `remove`, `push`) that work whether
//! or not the daemon is running.
//!
//! The store has one writer: the daemon holds redb's exclusive lock for as
//! long as it runs, and only the daemon holds the APNs connection that a
//! test push must use. So while the daemon runs, the commands ask it, over
//! loopback-only `/admin/*` endpoints on its plugin listener, found through
//! the same config file; when nothing answers there, they open the store
//! themselves (safe: the lock tells them if a daemon holds it after all).
//! Both ways run the same functions below and print the same text, so an
//! operator cannot tell (and need not care) which path served them.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use miniserde::json::{Object, Value};

use crate::apns::client::NotReady;
use crate::apns::Outcome;
use crate::clock::{format_utc_minute, within};
use crate::dispatch::Dispatcher;
use crate::privacy::Short;
use crate::store::{Device, RemoveIf, Store, StoreError};

/// Header every admin request must carry. Browsers cannot add it to a
/// cross-site request without a preflight xapsd never answers, so a web
/// page open on the same machine cannot drive the admin endpoints.
pub const ADMIN_HEADER: &str = "x-xapsd-admin";

/// How long the CLI waits for the daemon (a test push waits on Apple).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one test push may wait for a connection and Apple's answer.
const PUSH_TIMEOUT: Duration = Duration::from_secs(25);

/// Why an admin command failed.
#[derive(Debug)]
pub enum AdminError {
    Store(StoreError),
    NoDevices {
        user: String,
    },
    NoMatch {
        user: String,
        prefix: String,
    },
    Invalid(String),
    /// `push` needs the daemon's APNs connection.
    DaemonNeeded,
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Store(e) => write!(f, "{e}"),
            AdminError::NoDevices { user } => write!(f, "user `{user}` has no devices"),
            AdminError::NoMatch { user, prefix } => {
                write!(f, "user `{user}` has no device whose token starts with `{prefix}`")
            }
            AdminError::Invalid(why) => f.write_str(why),
            AdminError::DaemonNeeded => f.write_str(
                "the daemon is not running: a test push goes through its APNs connection; start it first",
            ),
        }
    }
}

impl std::error::Error for AdminError {}

impl AdminError {
    /// The HTTP status the admin endpoint answers with.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::Store(_) => 503,
            AdminError::NoDevices { .. } | AdminError::NoMatch { .. } => 404,
            AdminError::Invalid(_) => 400,
            AdminError::DaemonNeeded => 503,
        }
    }
}

/// Whether an admin request may come from `peer`: loopback only, IPv4
/// addresses mapped into IPv6 included.
pub fn peer_allowed(peer: &SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// `xapsd devices`: users, their devices (tokens shortened), mailboxes and
/// last registration.
pub fn devices(store: &Store, user: Option<&str>) -> Result<String, AdminError> {
    let mut list = match user {
        Some(u) => store.devices_for_user(&u.to_lowercase()),
        None => store.all_devices(),
    }
    .map_err(AdminError::Store)?;
    if list.is_empty() {
        return Ok(match user {
            Some(u) => format!("no devices for user `{}`\n", u.to_lowercase()),
            None => "no devices registered\n".to_owned(),
        });
    }
    list.sort_by(|a, b| (&a.user, &a.token).cmp(&(&b.user, &b.token)));
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for d in &list {
        if current != Some(d.user.as_str()) {
            out.push_str(&format!("{}\n", d.user));
            current = Some(d.user.as_str());
        }
        out.push_str(&format!(
            "  {}  account {}  registered {}  mailboxes: {}\n",
            Short(&d.token),
            Short(&d.account_id),
            format_utc_minute(d.registered_at as i64),
            d.mailboxes.join(", ")
        ));
    }
    let users = list
        .iter()
        .map(|d| d.user.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    out.push_str(&format!("{} device(s), {users} user(s)\n", list.len()));
    Ok(out)
}

/// The user's devices, optionally only those whose token starts with `prefix`.
fn select(store: &Store, user: &str, prefix: Option<&str>) -> Result<Vec<Device>, AdminError> {
    let user = user.to_lowercase();
    if user.is_empty() {
        return Err(AdminError::Invalid("--user must not be empty".into()));
    }
    let all = store.devices_for_user(&user).map_err(AdminError::Store)?;
    if all.is_empty() {
        return Err(AdminError::NoDevices { user });
    }
    let Some(prefix) = prefix else {
        return Ok(all);
    };
    let prefix = prefix.to_ascii_lowercase();
    let chosen: Vec<Device> = all
        .into_iter()
        .filter(|d| d.token.starts_with(&prefix))
        .collect();
    if chosen.is_empty() {
        return Err(AdminError::NoMatch { user, prefix });
    }
    Ok(chosen)
}

/// `xapsd remove`: removes the user's devices (or those matching the prefix).
pub async fn remove(store: &Store, user: &str, prefix: Option<&str>) -> Result<String, AdminError> {
    let chosen = select(store, user, prefix)?;
    let mut out = String::new();
    for d in &chosen {
        store
            .remove(&d.token, RemoveIf::Always)
            .await
            .map_err(AdminError::Store)?;
        out.push_str(&format!("removed {} of {}\n", Short(&d.token), d.user));
    }
    log::info!("admin: removed {} device(s)", chosen.len());
    Ok(out)
}

/// `xapsd push`: one test push to each of the user's devices, through the
/// daemon's dispatcher and APNs client; prints what Apple answered.
pub async fn push(
    store: &Store,
    dispatcher: &Dispatcher,
    user: &str,
    prefix: Option<&str>,
) -> Result<String, AdminError> {
    let chosen = select(store, user, prefix)?;
    let mut out = String::new();
    for d in &chosen {
        let answer = match within(PUSH_TIMEOUT, dispatcher.push_and_wait(d)).await {
            None => format!("no answer from APNs within {PUSH_TIMEOUT:?} (is it reachable?)"),
            Some(Ok(Outcome::Delivered)) => "delivered (APNs 200)".to_owned(),
            Some(Ok(Outcome::DeviceGone { status, reason, .. })) => {
                format!("APNs {status} {reason}: device gone, registration removed")
            }
            Some(Ok(other)) => format!("APNs: {other}"),
            Some(Err(NotReady::NoIdentity)) => "not sent: dry run (no push identity)".to_owned(),
            Some(Err(NotReady::Closed)) => "not sent: the daemon is shutting down".to_owned(),
        };
        out.push_str(&format!("{} of {}: {answer}\n", Short(&d.token), d.user));
    }
    log::info!("admin: test push to {} device(s)", chosen.len());
    Ok(out)
}

/// An admin request as the CLI sends it and the daemon reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Devices { user: Option<String> },
    Remove { user: String, token: Option<String> },
    Push { user: String, token: Option<String> },
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Devices { .. } => "/admin/devices",
            Request::Remove { .. } => "/admin/remove",
            Request::Push { .. } => "/admin/push",
        }
    }

    /// The JSON body: `{"user": ..., "token": ...}`.
    pub fn body(&self) -> String {
        let (user, token) = match self {
            Request::Devices { user } => (user.clone(), None),
            Request::Remove { user, token } | Request::Push { user, token } => {
                (Some(user.clone()), token.clone())
            }
        };
        let mut o = Object::new();
        if let Some(u) = user {
            o.insert("user".into(), Value::String(u));
        }
        if let Some(t) = token {
            o.insert("token".into(), Value::String(t));
        }
        miniserde::json::to_string(&Value::Object(o))
    }

    /// Reads a request from the endpoint's path and JSON body.
    pub fn parse(path: &str, body: &[u8]) -> Result<Request, AdminError> {
        let invalid = |s: &str| AdminError::Invalid(s.to_owned());
        let text = std::str::from_utf8(body).map_err(|_| invalid("body is not UTF-8"))?;
        let text = if text.trim().is_empty() { "{}" } else { text };
        let Ok(Value::Object(mut o)) = miniserde::json::from_str::<Value>(text) else {
            return Err(invalid("body is not a JSON object"));
        };
        let mut field = |name: &str| match o.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AdminError::Invalid(format!("`{name}` must be a string"))),
        };
        let user = field("user")?;
        let token = field("token")?;
        let need = |user: Option<String>| user.ok_or_else(|| invalid("`user` is required"));
        match path {
            "/admin/devices" => Ok(Request::Devices { user }),
            "/admin/remove" => Ok(Request::Remove {
                user: need(user)?,
                token,
            }),
            "/admin/push" => Ok(Request::Push {
                user: need(user)?,
                token,
            }),
            _ => Err(invalid("no such admin endpoint")),
        }
    }
}

/// Runs a request against a store (and, in the daemon, its dispatcher).
pub async fn serve(
    request: Request,
    store: &Store,
    dispatcher: Option<&Dispatcher>,
) -> Result<String, AdminError> {
    match request {
        Request::Devices { user } => devices(store, user.as_deref()),
        Request::Remove { user, token } => remove(store, &user, token.as_deref()).await,
        Request::Push { user, token } => match dispatcher {
            Some(d) => push(store, d, &user, token.as_deref()).await,
            None => Err(AdminError::DaemonNeeded),
        },
    }
}

/// What came back from the daemon.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

/// Why the CLI could not get an answer from the daemon.
#[derive(Debug)]
pub enum CallError {
    /// Nothing listens on any configured address: the daemon is not running.
    NotRunning,
    /// Something answered, but not like xapsd does.
    Garbled(SocketAddr, String),
    Io(SocketAddr, std::io::Error),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotRunning => f.write_str("no daemon answers on the configured addresses"),
            CallError::Garbled(addr, why) => write!(f, "{addr} answered, but not as xapsd: {why}"),
            CallError::Io(addr, e) => write!(f, "talking to the daemon at {addr}: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Where to reach the daemon's listener from this machine: a wildcard
/// address is reached through the loopback of its family.
pub fn loopback_targets(listen: &[SocketAddr]) -> Vec<SocketAddr> {
    listen
        .iter()
        .map(|a| match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port())
            }
            _ => *a,
        })
        .filter(|a| a.port() != 0)
        .collect()
}

/// Sends `request` to the first configured address that accepts a
/// connection, with `authorization` (the value of the `Authorization`
/// header, when `plugin_auth` is set). A refused connection everywhere means
/// the daemon is down.
pub fn call(
    listen: &[SocketAddr],
    request: &Request,
    authorization: Option<&str>,
) -> Result<Answer, CallError> {
    for addr in loopback_targets(listen) {
        let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(_) => continue,
        };
        return exchange(stream, addr, request, authorization);
    }
    Err(CallError::NotRunning)
}

fn exchange(
    mut stream: TcpStream,
    addr: SocketAddr,
    request: &Request,
    authorization: Option<&str>,
) -> Result<Answer, CallError> {
    let io = |e| CallError::Io(addr, e);
    stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
    let body = request.body();
    let auth = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\n{ADMIN_HEADER}: 1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        request.path(),
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.take(1024 * 1024).read_to_end(&mut raw).map_err(io)?;
    parse_answer(&raw).map_err(|why| CallError::Garbled(addr, why.to_owned()))
}

/// Status and body of an HTTP/1.1 answer read to EOF.
fn parse_answer(raw: &[u8]) -> Result<Answer, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "answer is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no complete answer")?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err("not an HTTP answer");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    Ok(Answer {
        status,
        text: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_are_admins() {
        for (addr, allowed) in [
            ("127.0.0.1:1", true),
            ("127.8.9.10:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("192.168.1.2:1", false),
            ("[::ffff:192.168.1.2]:1", false),
            ("[fe80::1]:1", false),
            ("0.0.0.0:1", false),
        ] {
            let peer: SocketAddr = addr.parse().unwrap();
            assert_eq!(peer_allowed(&peer), allowed, "{addr}");
        }
    }

    #[test]
    fn wildcards_are_reached_through_loopback() {
        let listen: Vec<SocketAddr> = ["0.0.0.0:11619", "[::]:11619", "10.0.0.1:5", "127.0.0.1:0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let got: Vec<String> = loopback_targets(&listen)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["127.0.0.1:11619", "[::1]:11619", "10.0.0.1:5"]);
    }

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        for r in [
            Request::Devices { user: None },
            Request::Devices {
                user: Some("a\"b".into()),
            },
            Request::Remove {
                user: "alice".into(),
                token: Some("2918".into()),
            },
            Request::Push {
                user: "bob".into(),
                token: None,
            },
        ] {
            assert_eq!(Request::parse(r.path(), r.body().as_bytes()).unwrap(), r);
        }
        let err = |p: &str, b: &[u8]| Request::parse(p, b).unwrap_err().to_string();
        assert_eq!(err("/admin/remove", b"{}"), "`user` is required");
        assert_eq!(
            err("/admin/push", b"{\"user\":1}"),
            "`user` must be a string"
        );
        assert_eq!(err("/admin/devices", b"[]"), "body is not a JSON object");
        assert_eq!(err("/admin/devices", b"\xff"), "body is not UTF-8");
        assert_eq!(err("/admin/nope", b""), "no such admin endpoint");
    }

    #[test]
    fn answers_are_parsed() {
        let a = parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n").unwrap();
        assert_eq!((a.status, a.text.as_str()), (404, "no\n"));
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
