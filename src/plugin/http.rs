//! The plugin API over HTTP/1.1: `POST /register` and `POST /notify`.
//!
//! Dovecot's http-client holds one keep-alive connection per Dovecot
//! process, so an IMAP server with thousands of users holds thousands of
//! mostly idle connections. An idle connection here owns no buffer: it waits
//! for readability, and only then allocates. httparse reads the request
//! head; the bodies are always `Content-Length` framed.
//!
//! The same code serves plain TCP and TLS connections ([`PluginStream`]).
//! Each kind is spawned as its own future, so a plain connection's state
//! does not grow by a TLS session it does not have.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::{Async, Timer};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;

use super::{json, FrontEndStats};
use crate::admin;
use crate::auth::{self, PluginAuth, Verdict};
use crate::clock::within;
use crate::limits::Limits;
use crate::service::{NotifyOutcome, Service, ServiceError};

/// A connection the front end can serve: plain TCP or TLS over it.
pub trait PluginStream: AsyncRead + AsyncWrite + Unpin {
    /// Resolves when a read would return data (or an error) without waiting.
    fn ready(&mut self) -> impl std::future::Future<Output = std::io::Result<()>>;
}

impl PluginStream for Async<TcpStream> {
    fn ready(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> {
        self.readable()
    }
}

impl PluginStream for TlsStream<Async<TcpStream>> {
    async fn ready(&mut self) -> std::io::Result<()> {
        let (tcp, session) = self.get_mut();
        // Records already read may hold a whole request: the socket would
        // not become readable for it again.
        match session.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() == 0 && !session.wants_write() => {
                tcp.readable().await
            }
            _ => Ok(()), // data, or an error the next read reports
        }
    }
}

/// What one listener needs.
pub struct HttpFrontEnd {
    pub service: Arc<Service>,
    pub limits: Arc<Limits>,
    pub stats: Arc<FrontEndStats>,
    pub executor: Arc<Executor<'static>>,
    /// What `GET /health` and `GET /metrics` read.
    pub report: Arc<crate::metrics::Sources>,
    /// Credentials every request must carry (see [`auth::open_path`]).
    pub auth: Option<PluginAuth>,
    /// Request buffer bytes shared by every connection of the front end.
    pub buffers: BufferPool,
}

/// The request-buffer bytes all connections may hold together
/// (`Limits::request_buffer_pool`): many slow peers each sending part of a
/// large request cannot make the daemon outgrow its memory budget.
#[derive(Debug)]
pub struct BufferPool {
    used: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl BufferPool {
    pub fn new(cap: usize) -> BufferPool {
        BufferPool {
            used: std::sync::atomic::AtomicUsize::new(0),
            cap,
        }
    }

    /// Bytes held by connections right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.cap).then_some(used + n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

impl HttpFrontEnd {
    /// Accepts connections until the task is dropped; with `tls`, each
    /// connection first completes a TLS handshake.
    pub async fn serve(self: Arc<Self>, listener: Async<TcpListener>, tls: Option<TlsAcceptor>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or similar: pause instead of spinning.
                    log::warn!("accept failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let who = format_args!("plugin connection from {peer}");
            let Some(slot) = self.stats.admit(self.limits.max_plugin_connections, &who) else {
                continue;
            };
            let this = Arc::clone(&self);
            // Two spawns, not one future with two branches: the plain one
            // must not be sized for a TLS session.
            match &tls {
                None => self.executor.spawn(async move {
                    this.connection(stream, peer).await;
                    drop(slot);
                }),
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    self.executor.spawn(async move {
                        match within(this.limits.tls_handshake_timeout, handshake).await {
                            Some(Ok(stream)) => this.connection(stream, peer).await,
                            Some(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                            None => log::debug!("TLS handshake with {peer} timed out"),
                        }
                        drop(slot);
                    })
                }
            }
            .detach();
        }
    }

    async fn connection<S: PluginStream>(&self, mut stream: S, peer: SocketAddr) {
        let limits = &self.limits;
        let mut buf = InBuf::new(&self.buffers);
        loop {
            if buf.is_empty() {
                buf.release(); // hold no memory while idle
                match within(limits.plugin_idle_timeout, stream.ready()).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return,
                    None => {
                        log::debug!(
                            "plugin connection from {peer} idle for {:?}: closed",
                            limits.plugin_idle_timeout
                        );
                        return;
                    }
                }
            }
            // Boxed: only a connection with a request in progress holds the
            // request's state; an idle one holds just the wait above.
            if !Box::pin(self.request(&mut stream, &mut buf, peer)).await {
                return;
            }
        }
    }

    /// Reads, routes and answers one request; `false` when the connection
    /// is to be closed.
    async fn request<S: PluginStream>(
        &self,
        stream: &mut S,
        buf: &mut InBuf<'_>,
        peer: SocketAddr,
    ) -> bool {
        let limits = &self.limits;
        let deadline = Instant::now() + limits.plugin_request_timeout;
        let (reply, close) = match self.read_request(stream, buf, deadline).await {
            Ok((head, total)) => {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let reply = Box::pin(self.route(&head, &buf.data()[head.len..total], peer)).await;
                buf.consume(total);
                (reply, !head.keep_alive)
            }
            Err(Some(reply)) => (reply, true),
            Err(None) => return false,
        };
        self.answer(stream, peer, reply, close).await.is_ok() && !close
    }

    /// Reads one request (head and body) into `buf` before `deadline`:
    /// its head and length, or the answer to send before closing (`None`:
    /// close without one, the peer is gone or sent nothing).
    async fn read_request<S: PluginStream>(
        &self,
        stream: &mut S,
        buf: &mut InBuf<'_>,
        deadline: Instant,
    ) -> Result<(Head, usize), Option<Reply>> {
        let limits = &self.limits;
        let head = loop {
            match parse_head(buf.data(), limits.max_request_headers) {
                Ok(Some(head)) => break head,
                Ok(None) if buf.len() >= limits.max_request_head => {
                    return Err(Some(Reply::error(431, "request head too large")))
                }
                Ok(None) => match read_more(stream, buf, limits.max_request_head, deadline).await {
                    ReadResult::Data => {}
                    ReadResult::Closed => return Err(None),
                    ReadResult::NoMemory => return Err(Some(Reply::busy())),
                    ReadResult::TimedOut if buf.is_empty() => return Err(None),
                    ReadResult::TimedOut => {
                        return Err(Some(Reply::error(408, "request not received in time")))
                    }
                },
                Err(reply) => return Err(Some(reply)),
            }
        };
        let total = head.len + head.body_length(limits.max_request_body).map_err(Some)?;
        while buf.len() < total {
            match read_more(stream, buf, total, deadline).await {
                ReadResult::Data => {}
                ReadResult::Closed => return Err(None),
                ReadResult::NoMemory => return Err(Some(Reply::busy())),
                ReadResult::TimedOut => {
                    return Err(Some(Reply::error(408, "body not received in time")))
                }
            }
        }
        Ok((head, total))
    }

    async fn route(&self, head: &Head, body: &[u8], peer: SocketAddr) -> Reply {
        let path = head.path.split('?').next().unwrap_or_default();
        if let Some(auth) = &self.auth {
            if !auth::open_path(path, admin::peer_allowed(&peer)) {
                let verdict = auth.verify(head.authorization.as_deref());
                if verdict != Verdict::Accepted {
                    let reason = format!("{} {path}: {}", head.method, verdict.reason());
                    return Reply::error(401, &reason).with_challenge();
                }
            }
        }
        match (path, head.method.as_str()) {
            ("/register", "POST") => match json::register(body) {
                Ok(request) => match self.service.register(request).await {
                    Ok(topic) => Reply::ok(topic),
                    Err(e) => service_error(e),
                },
                Err(e) => Reply::error(400, &e.to_string()),
            },
            ("/notify", "POST") => match json::notify(body) {
                Ok(request) => match self.service.notify(request) {
                    Ok(NotifyOutcome::Dispatched(_)) => Reply::ok(String::new()),
                    Ok(NotifyOutcome::MailboxNotWatched) => Reply::status(204),
                    Ok(NotifyOutcome::UnknownUser) => Reply::status(404),
                    Err(e) => service_error(e),
                },
                Err(e) => Reply::error(400, &e.to_string()),
            },
            ("/health", "GET") => {
                let health = crate::metrics::health(&self.report, unix_now());
                Reply::text(if health.healthy { 200 } else { 503 }, health.text)
            }
            ("/metrics", "GET") => {
                Reply::text(200, crate::metrics::metrics(&self.report, unix_now()))
                    .with_content_type("text/plain; version=0.0.4; charset=utf-8")
            }
            ("/register" | "/notify", _) => Reply::error(405, "use POST").with_allow("POST"),
            ("/health" | "/metrics", _) => Reply::error(405, "use GET").with_allow("GET"),
            ("/admin/devices", "GET" | "POST") | ("/admin/remove" | "/admin/push", "POST") => {
                self.admin(head, path, body, peer).await
            }
            ("/admin/remove" | "/admin/push", _) => {
                Reply::error(405, "use POST").with_allow("POST")
            }
            _ => Reply::error(404, "no such endpoint"),
        }
    }

    /// Operator requests from `xapsd devices|remove|push`: loopback only,
    /// and only with the admin header (which a web page cannot add).
    async fn admin(&self, head: &Head, path: &str, body: &[u8], peer: SocketAddr) -> Reply {
        if !admin::peer_allowed(&peer) {
            return Reply::error(403, "admin endpoints answer loopback peers only");
        }
        if !head.admin_header {
            return Reply::error(403, "admin request without its header");
        }
        let request = match admin::Request::parse(path, body) {
            Ok(r) => r,
            Err(e) => return Reply::error(e.status(), &e.to_string()),
        };
        let report = &self.report;
        match admin::serve(request, &report.store, Some(&report.dispatcher)).await {
            Ok(text) => Reply::text(200, text),
            Err(e) => Reply::text(e.status(), format!("{e}\n")),
        }
    }

    async fn answer<S: PluginStream>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
        reply: Reply,
        close: bool,
    ) -> std::io::Result<()> {
        if let Some(reason) = &reply.reason {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            if reply.code == 503 {
                self.stats
                    .log_failure(&format_args!("plugin request from {peer}"), reason);
            } else {
                log::warn!(
                    "plugin request from {peer} refused ({}): {reason}",
                    reply.code
                );
            }
        }
        let bytes = reply.encode(close);
        let write = async {
            stream.write_all(&bytes).await?;
            stream.flush().await // TLS holds records until flushed
        };
        match within(self.limits.plugin_request_timeout, write).await {
            Some(result) => result,
            None => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

fn unix_now() -> i64 {
    crate::clock::unix_now() as i64
}

fn service_error(e: ServiceError) -> Reply {
    match e {
        ServiceError::Invalid(reason) => Reply::error(400, &reason),
        ServiceError::Store(_) => Reply::error(503, &e.to_string()),
    }
}

enum ReadResult {
    Data,
    Closed,
    TimedOut,
    /// The shared buffer pool has no room for more of this request.
    NoMemory,
}

/// Bytes read from one plugin connection. The store is zeroed once, when it
/// is allocated (calloc), never per read; `filled` marks what is data. Its
/// size is accounted in the front end's [`BufferPool`].
struct InBuf<'p> {
    store: Vec<u8>,
    filled: usize,
    pool: &'p BufferPool,
}

impl Drop for InBuf<'_> {
    fn drop(&mut self) {
        self.pool.give(self.store.len());
    }
}

impl<'p> InBuf<'p> {
    const FIRST: usize = 1024;

    fn new(pool: &'p BufferPool) -> InBuf<'p> {
        InBuf {
            store: Vec::new(),
            filled: 0,
            pool,
        }
    }

    fn data(&self) -> &[u8] {
        &self.store[..self.filled]
    }

    fn len(&self) -> usize {
        self.filled
    }

    fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Gives the memory back while the connection idles.
    fn release(&mut self) {
        self.pool.give(self.store.len());
        self.store = Vec::new();
        self.filled = 0;
    }

    /// Drops the first `n` bytes (a request that has been answered).
    fn consume(&mut self, n: usize) {
        self.store.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Space to read into, growing the store (up to `cap` bytes) only when
    /// full; `None` when the pool cannot spare the growth.
    fn room(&mut self, cap: usize) -> Option<&mut [u8]> {
        if self.filled == self.store.len() {
            let size = (self.store.len() * 2).clamp(Self::FIRST, cap.max(self.filled + 1));
            if !self.pool.take(size - self.store.len()) {
                return None;
            }
            let mut bigger = vec![0u8; size];
            bigger[..self.filled].copy_from_slice(&self.store[..self.filled]);
            self.store = bigger;
        }
        let end = self.store.len().min(cap.max(self.filled + 1));
        Some(&mut self.store[self.filled..end])
    }
}

/// Reads what is available (keeping at most `cap` bytes buffered) before `deadline`.
async fn read_more<S: PluginStream>(
    stream: &mut S,
    buf: &mut InBuf<'_>,
    cap: usize,
    deadline: Instant,
) -> ReadResult {
    let wait = deadline.saturating_duration_since(Instant::now());
    let Some(room) = buf.room(cap) else {
        return ReadResult::NoMemory;
    };
    let got = match within(wait, stream.read(room)).await {
        Some(Ok(n)) => n,
        Some(Err(_)) => 0,
        None => return ReadResult::TimedOut,
    };
    buf.filled += got;
    if got == 0 {
        ReadResult::Closed
    } else {
        ReadResult::Data
    }
}

/// The parts of a request head the API needs.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    /// Bytes of the head, including the blank line.
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
    /// The request carries [`admin::ADMIN_HEADER`].
    admin_header: bool,
    /// The `Authorization` value; only compared, never logged.
    authorization: Option<Vec<u8>>,
}

impl Head {
    fn body_length(&self, max: usize) -> Result<usize, Reply> {
        if self.chunked {
            return Err(Reply::error(
                411,
                "chunked bodies are not supported; send Content-Length",
            ));
        }
        match self.content_length {
            Some(n) if n > max => Err(Reply::error(413, &format!("body over {max} bytes"))),
            Some(n) => Ok(n),
            None if self.method == "POST" => Err(Reply::error(411, "Content-Length required")),
            None => Ok(0),
        }
    }
}

/// Parses a complete head; `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8], max_headers: usize) -> Result<Option<Head>, Reply> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reply::error(431, "too many header lines"))
        }
        Err(e) => return Err(Reply::error(400, &format!("malformed request head: {e}"))),
    };
    let version = req.version.unwrap_or(1);
    let mut head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        len,
        content_length: None,
        chunked: false,
        keep_alive: version >= 1,
        admin_header: false,
        authorization: None,
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| Reply::error(400, "bad Content-Length"))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(Reply::error(400, "conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if head.authorization.is_some() {
                return Err(Reply::error(400, "more than one Authorization header"));
            }
            head.authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case(admin::ADMIN_HEADER) {
            head.admin_header = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        }
    }
    Ok(Some(head))
}

/// What the front end makes of the bytes at the start of a connection's
/// buffer, before routing: the same calls as [`HttpFrontEnd`]'s connection
/// loop, without the socket. Public so the fuzz targets in `fuzz/` can drive
/// the real head parser and credential check.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No complete request yet, and the head is still within its bound.
    Incomplete,
    /// Answered with this status, then the connection is closed.
    Refused(u16),
    /// One whole request.
    Request(FramedRequest),
}

/// A complete request as [`frame`] found it.
#[derive(Debug, PartialEq, Eq)]
pub struct FramedRequest {
    pub method: String,
    /// The request target without its query.
    pub path: String,
    /// Bytes of the head; the body follows.
    pub head_len: usize,
    pub body_len: usize,
    pub keep_alive: bool,
    /// How `auth` judged the `Authorization` header, when `auth` was given.
    pub verdict: Option<Verdict>,
}

/// Frames the request at the start of `buf` (see [`Framing`]); with `auth`,
/// checks its credentials as a non-loopback peer's would be.
pub fn frame(buf: &[u8], limits: &Limits, auth: Option<&PluginAuth>) -> Framing {
    let refused = |reply: Reply| {
        let _ = reply.encode(true);
        Framing::Refused(reply.code)
    };
    // The connection never buffers more than this while it looks for a head.
    let window = &buf[..buf.len().min(limits.max_request_head)];
    let head = match parse_head(window, limits.max_request_headers) {
        Ok(Some(head)) => head,
        Ok(None) if window.len() >= limits.max_request_head => {
            return refused(Reply::error(431, "request head too large"))
        }
        Ok(None) => return Framing::Incomplete,
        Err(reply) => return refused(reply),
    };
    let body_len = match head.body_length(limits.max_request_body) {
        Ok(n) => n,
        Err(reply) => return refused(reply),
    };
    if buf.len() < head.len + body_len {
        return Framing::Incomplete;
    }
    let path = head.path.split('?').next().unwrap_or_default();
    let verdict = auth
        .filter(|_| !auth::open_path(path, false))
        .map(|auth| auth.verify(head.authorization.as_deref()));
    Framing::Request(FramedRequest {
        method: head.method.clone(),
        path: path.to_owned(),
        head_len: head.len,
        body_len,
        keep_alive: head.keep_alive,
        verdict,
    })
}

const PLAIN: &str = "text/plain; charset=utf-8";

/// An answer to the plugin. `reason` is set for errors and is logged.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    code: u16,
    body: String,
    reason: Option<String>,
    allow: Option<&'static str>,
    content_type: &'static str,
    /// Send `WWW-Authenticate: Basic realm="xapsd"` (with 401).
    challenge: bool,
}

impl Reply {
    fn ok(body: String) -> Reply {
        Reply {
            code: 200,
            body,
            reason: None,
            allow: None,
            content_type: PLAIN,
            challenge: false,
        }
    }

    /// A text answer that is not an error of the request (e.g. 503 health).
    fn text(code: u16, body: String) -> Reply {
        Reply {
            code,
            ..Reply::ok(body)
        }
    }

    fn with_content_type(mut self, content_type: &'static str) -> Reply {
        self.content_type = content_type;
        self
    }

    fn status(code: u16) -> Reply {
        Reply {
            code,
            body: String::new(),
            reason: None,
            allow: None,
            content_type: PLAIN,
            challenge: false,
        }
    }

    fn error(code: u16, reason: &str) -> Reply {
        Reply {
            code,
            body: format!("{reason}\n"),
            reason: Some(reason.to_owned()),
            allow: None,
            content_type: PLAIN,
            challenge: false,
        }
    }

    /// The shared request buffers are full (see [`BufferPool`]).
    fn busy() -> Reply {
        Reply::error(
            503,
            "request buffers of all connections are in use; try again",
        )
    }

    fn with_challenge(mut self) -> Reply {
        self.challenge = true;
        self
    }

    fn with_allow(mut self, methods: &'static str) -> Reply {
        self.allow = Some(methods);
        self
    }

    fn encode(&self, close: bool) -> Vec<u8> {
        let text = match self.code {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!("HTTP/1.1 {} {text}\r\n", self.code);
        if self.code != 204 {
            out.push_str(&format!("Content-Type: {}\r\n", self.content_type));
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if let Some(methods) = self.allow {
            out.push_str(&format!("Allow: {methods}\r\n"));
        }
        if self.challenge {
            out.push_str("WWW-Authenticate: Basic realm=\"xapsd\"\r\n");
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        if self.code != 204 {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_plugins_head() {
        let raw = b"POST /register HTTP/1.1\r\nHost: 127.0.0.1:11619\r\nContent-Length: 234\r\nConnection: Keep-Alive\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{";
        let head = parse_head(raw, 32).unwrap().unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/register");
        assert_eq!(head.content_length, Some(234));
        assert!(head.keep_alive);
        assert_eq!(head.len, raw.len() - 1);
        assert_eq!(parse_head(&raw[..20], 32).unwrap(), None);
    }

    #[test]
    fn refuses_bad_heads() {
        assert_eq!(
            parse_head(b"\x01\x02 / HTTP/1.1\r\n\r\n", 32)
                .unwrap_err()
                .code,
            400
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(40));
        assert_eq!(parse_head(many.as_bytes(), 32).unwrap_err().code, 431);
        let conflict = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse_head(conflict, 32).unwrap_err().code, 400);
        let head = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 32)
            .unwrap()
            .unwrap();
        assert_eq!(head.body_length(100).unwrap_err().code, 411);
        let head = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 32)
            .unwrap()
            .unwrap();
        assert_eq!(head.body_length(100).unwrap_err().code, 413);
    }

    #[test]
    fn http10_closes_unless_asked() {
        let head = parse_head(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n", 32)
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        let head = parse_head(b"POST / HTTP/1.1\r\nConnection: close\r\n\r\n", 32)
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn input_buffer_grows_only_when_full_and_respects_its_cap() {
        let pool = BufferPool::new(1 << 20);
        let mut buf = InBuf::new(&pool);
        assert_eq!(buf.room(8192).unwrap().len(), InBuf::FIRST);
        buf.room(8192).unwrap()[..3].copy_from_slice(b"abc");
        buf.filled = InBuf::FIRST;
        assert_eq!(buf.room(1500).unwrap().len(), 1500 - InBuf::FIRST, "capped");
        assert_eq!(&buf.data()[..3], b"abc", "kept across growth");
        assert_eq!(pool.used(), 1500);
        buf.consume(1);
        assert_eq!(&buf.data()[..2], b"bc");
        assert_eq!(buf.len(), InBuf::FIRST - 1);
        buf.release();
        assert!(buf.is_empty() && buf.store.capacity() == 0);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn buffers_share_one_pool_and_give_it_back() {
        let pool = BufferPool::new(3 * InBuf::FIRST);
        let mut a = InBuf::new(&pool);
        let mut b = InBuf::new(&pool);
        assert!(a.room(8192).is_some());
        a.filled = InBuf::FIRST;
        assert!(a.room(8192).is_some(), "a grows to 2 KiB");
        assert!(b.room(8192).is_some(), "b takes the last 1 KiB");
        a.filled = 2 * InBuf::FIRST;
        assert!(a.room(8192).is_none(), "no room to double a");
        drop(b);
        assert!(a.room(8192).is_none(), "4 KiB would still be over 3 KiB");
        drop(a);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn frames_a_captured_request_like_the_connection_loop() {
        let raw =
            include_bytes!("../../tests/fixtures/dovecot-xaps-plugin/basic-auth/01-register.http");
        let limits = Limits::default();
        let auth = PluginAuth::load(&auth::AuthSetting::parse("xapsd:s3cret").unwrap()).unwrap();
        let Framing::Request(request) = frame(raw, &limits, Some(&auth)) else {
            panic!("not framed");
        };
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/register")
        );
        assert_eq!(request.head_len + request.body_len, raw.len());
        assert_eq!(request.verdict, Some(Verdict::Accepted));
        assert!(request.keep_alive);
        let Framing::Request(request) = frame(raw, &limits, None) else {
            panic!("not framed");
        };
        assert_eq!(request.verdict, None);
        assert_eq!(
            frame(&raw[..raw.len() - 1], &limits, None),
            Framing::Incomplete
        );
        let endless = vec![b'A'; limits.max_request_head];
        assert_eq!(frame(&endless, &limits, None), Framing::Refused(431));
        assert_eq!(
            frame(b"\x01 / HTTP/1.1\r\n\r\n", &limits, None),
            Framing::Refused(400)
        );
    }

    #[test]
    fn encodes_replies() {
        let r = Reply::ok("topic".into()).encode(false);
        assert_eq!(r, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\ntopic");
        let r = Reply::error(401, "no").with_challenge().encode(false);
        assert!(r.starts_with(b"HTTP/1.1 401 Unauthorized\r\n"));
        let challenge = b"\r\nWWW-Authenticate: Basic realm=\"xapsd\"\r\n";
        assert!(r.windows(challenge.len()).any(|w| w == challenge));
        let r = Reply::status(204).encode(true);
        assert_eq!(r, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    }
}
