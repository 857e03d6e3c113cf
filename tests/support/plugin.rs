//! A client that talks to the daemon the way Dovecot's xaps plugin does.
//!
//! The plugin uses Dovecot's http-client: HTTP/1.1 over one persistent
//! connection, `Connection: Keep-Alive`, `Content-Length` bodies, a fixed
//! header set. The daemon must accept exactly that, so this client replays
//! the captured requests in `tests/fixtures/dovecot-xaps-plugin/` byte for
//! byte, builds new ones with the same header set, and can send arbitrary
//! bytes for malformed-input tests. It parses responses itself (not with the
//! daemon's parser) so a parser bug cannot hide on both sides.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The plugin's default `timeout_msecs` is 5000; tests get some slack.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Directory with the `.http` captures: `$XAPSD_FIXTURES` if set, else
/// the copy in `tests/fixtures/dovecot-xaps-plugin`.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("XAPSD_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        // A copy of the team's captures lives in the repo so a fresh clone
        // tests on its own; `tests/fixtures/README.md` says where they are from.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dovecot-xaps-plugin"),
    }
}

/// Path of one capture, e.g. `fixture("01-register.http")` or
/// `fixture("basic-auth/01-register.http")`; an absolute path is kept as is.
pub fn fixture(name: impl AsRef<Path>) -> PathBuf {
    fixture_dir().join(name)
}

/// Bytes of one capture; panics with the path if it is missing.
pub fn fixture_bytes(name: impl AsRef<Path>) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A parsed HTTP/1.1 response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Did the server announce it will close the connection?
    pub fn closes_connection(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// One keep-alive connection, like one Dovecot process's.
pub struct PluginClient {
    stream: TcpStream,
    addr: SocketAddr,
    /// Bytes read past the end of the previous response (pipelining).
    pending: Vec<u8>,
    authorization: Option<String>,
}

impl PluginClient {
    pub fn connect(addr: SocketAddr) -> io::Result<PluginClient> {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_READ_TIMEOUT)?;
        stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(PluginClient {
            stream,
            addr,
            pending: Vec::new(),
            authorization: None,
        })
    }

    /// Sends `Authorization: Basic` on every [`post`](Self::post), as the
    /// plugin does when its URL carries `user:pass@`.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> PluginClient {
        let token = base64(format!("{user}:{password}").as_bytes());
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a capture verbatim (the Host line too: servers ignore it) and
    /// reads the response. `name` as for [`fixture`].
    pub fn replay_fixture(&mut self, name: impl AsRef<Path>) -> io::Result<Response> {
        self.raw(&fixture_bytes(name))
    }

    /// POSTs `json` with the plugin's exact header set and order.
    pub fn post(&mut self, path: &str, json: &str) -> io::Result<Response> {
        let request = plugin_request(path, json, self.addr, self.authorization.as_deref());
        self.raw(&request)
    }

    /// Sends any bytes, then reads one response.
    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<Response> {
        self.send_raw(bytes)?;
        self.read_response()
    }

    /// Sends bytes without reading (for split or pipelined requests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one response: head up to CRLFCRLF, then `Content-Length` bytes
    /// (or to EOF if the server sent no length).
    pub fn read_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.pending, b"\r\n\r\n") {
                break i;
            }
            if self.pending.len() > 64 * 1024 {
                return Err(invalid("response head larger than 64 KiB"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full response head; got {:?}",
                        String::from_utf8_lossy(&self.pending)
                    ),
                ));
            }
        };
        let head = String::from_utf8(self.pending[..head_end].to_vec())
            .map_err(|_| invalid("response head is not UTF-8"))?;
        self.pending.drain(..head_end + 4);

        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(invalid(&format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(&format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("bad header line {line:?}")))?;
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };

        let no_body = status / 100 == 1 || status == 204 || status == 304;
        if !no_body {
            match response.header("content-length") {
                Some(len) => {
                    let len: usize = len
                        .parse()
                        .map_err(|_| invalid(&format!("bad Content-Length {len:?}")))?;
                    while self.pending.len() < len {
                        if self.fill()? == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "connection closed inside the response body",
                            ));
                        }
                    }
                    response.body = self.pending.drain(..len).collect();
                }
                None => {
                    while self.fill()? != 0 {}
                    response.body = std::mem::take(&mut self.pending);
                }
            }
        }
        Ok(response)
    }

    /// Waits up to the read timeout for the server to close the connection.
    /// `Ok(true)` on EOF or reset, `Ok(false)` if it sent more bytes instead.
    pub fn wait_closed(&mut self) -> io::Result<bool> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        match self.fill() {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Half-closes our side, like a Dovecot process exiting mid-request.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; 4096];
        let n = self.stream.read(&mut buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The bytes the plugin sends for a POST: Host, Date, [Authorization],
/// Content-Length, Connection, Content-Type (order from the captures).
pub fn plugin_request(
    path: &str,
    json: &str,
    addr: SocketAddr,
    authorization: Option<&str>,
) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nDate: {}\r\n",
        http_date(SystemTime::now())
    );
    if let Some(auth) = authorization {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: Keep-Alive\r\nContent-Type: application/json; charset=utf-8\r\n\r\n",
        json.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

/// IMF-fixdate, e.g. `Sun, 29 Nov 2026 12:00:30 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}
