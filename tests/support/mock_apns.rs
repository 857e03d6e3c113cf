//! A real, local stand-in for Apple's push service (APNs provider API).
//!
//! The daemon's APNs client is only trustworthy if it is tested against a
//! server that speaks what Apple speaks: TLS 1.3 with ALPN `h2`, a required
//! client certificate, HTTP/2 with a `SETTINGS_MAX_CONCURRENT_STREAMS` limit,
//! JSON error bodies, GOAWAY. This mock is such a server on `127.0.0.1:0`,
//! driven by a background thread running a smol executor so plain `#[test]`
//! functions can use it. It records every connection and request, answers
//! per device token as the test scripts it, and can misbehave on demand
//! (latency, stalls, GOAWAY, dropped connections, going down and coming back
//! on the same port). Tests synchronise on what it records through the
//! `wait_for_*` methods, which block on a condition variable with a timeout.

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_executor::{Executor, Task};
use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::future;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::certs::{self, TestCa};
use super::tempdir::TempDir;

/// Server-side knobs, fixed for the mock's lifetime.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Advertised `SETTINGS_MAX_CONCURRENT_STREAMS` (Apple advertises 1000
    /// after the first request; 100 keeps tests small).
    pub max_concurrent_streams: u32,
    /// Refuse TLS clients without a certificate chaining to the test CA, as
    /// APNs does for certificate auth. `false` models token auth.
    pub require_client_cert: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            max_concurrent_streams: 100,
            require_client_cert: true,
        }
    }
}

/// What the mock answers to one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Goes into the JSON body `{"reason":...}`; `None` sends no body.
    pub reason: Option<String>,
    /// Milliseconds since the epoch, added to the body as `"timestamp"` (410s).
    pub timestamp_ms: Option<u64>,
}

impl Answer {
    /// 200, empty body, `apns-id` header.
    pub fn ok() -> Answer {
        Answer {
            status: 200,
            reason: None,
            timestamp_ms: None,
        }
    }

    /// An error status with `{"reason":"<reason>"}`, e.g. `error(400, "BadDeviceToken")`.
    pub fn error(status: u16, reason: &str) -> Answer {
        Answer {
            status,
            reason: Some(reason.to_string()),
            timestamp_ms: None,
        }
    }

    /// 410 `{"reason":"Unregistered","timestamp":<now ms>}`.
    pub fn unregistered() -> Answer {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Answer {
            status: 410,
            reason: Some("Unregistered".to_string()),
            timestamp_ms: Some(now_ms),
        }
    }

    /// The JSON body bytes (empty for a success without reason).
    pub fn body(&self) -> Vec<u8> {
        match (&self.reason, self.timestamp_ms) {
            (None, _) => Vec::new(),
            (Some(r), None) => format!("{{\"reason\":\"{r}\"}}").into_bytes(),
            (Some(r), Some(ts)) => {
                format!("{{\"reason\":\"{r}\",\"timestamp\":{ts}}}").into_bytes()
            }
        }
    }
}

/// One HTTP/2 request as the mock received it.
#[derive(Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// `:authority` and `:scheme` pseudo-headers, if sent.
    pub authority: Option<String>,
    pub scheme: Option<String>,
    /// Regular headers in arrival order, names lower-case (HTTP/2 requires it).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Subject UID of the client certificate the connection was made with.
    pub client_uid: Option<String>,
    pub client_cert_der: Option<Vec<u8>>,
    /// [`ConnectionInfo::id`] of the connection the request came on.
    pub connection: u64,
    pub stream_id: u32,
    /// When the request's headers arrived.
    pub received_at: Instant,
    /// What the mock decided to answer; `None` if it arrived while stalled.
    pub answer: Option<Answer>,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `<token>` of `/3/device/<token>`.
    pub fn device_token(&self) -> Option<&str> {
        self.path.strip_prefix("/3/device/")
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One accepted TCP connection and how far it got.
#[derive(Clone)]
pub struct ConnectionInfo {
    /// 1, 2, 3... in accept order.
    pub id: u64,
    pub peer: SocketAddr,
    pub accepted_at: Instant,
    /// Accepted while black-holed: never read from or written to.
    pub blackholed: bool,
    /// TLS handshake error (e.g. no client certificate).
    pub tls_error: Option<String>,
    pub client_uid: Option<String>,
    pub client_cert_der: Option<Vec<u8>>,
    pub alpn: Option<String>,
    pub tls_version: Option<String>,
    pub h2_established: bool,
    /// HTTP/2 error that ended the connection, if any.
    pub h2_error: Option<String>,
    pub requests: usize,
    /// Streams reset with REFUSED_STREAM, unprocessed (see
    /// [`MockApns::goaway_after`]); they are not in the request list.
    pub refused: usize,
    pub closed_at: Option<Instant>,
}

// Hand-written so failure messages show the body as text and the
// certificate as a size instead of hundreds of numbers.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field("headers", &self.headers)
            .field("body", &self.body_str())
            .field("client_uid", &self.client_uid)
            .field("client_cert_der", &der_summary(&self.client_cert_der))
            .field("connection", &self.connection)
            .field("stream_id", &self.stream_id)
            .field("received_at", &self.received_at)
            .field("answer", &self.answer)
            .finish()
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("blackholed", &self.blackholed)
            .field("tls_error", &self.tls_error)
            .field("client_uid", &self.client_uid)
            .field("client_cert_der", &der_summary(&self.client_cert_der))
            .field("alpn", &self.alpn)
            .field("tls_version", &self.tls_version)
            .field("h2_established", &self.h2_established)
            .field("h2_error", &self.h2_error)
            .field("requests", &self.requests)
            .field("refused", &self.refused)
            .field("closed", &self.closed_at.is_some())
            .finish()
    }
}

fn der_summary(der: &Option<Vec<u8>>) -> Option<String> {
    der.as_ref().map(|d| format!("<{} bytes>", d.len()))
}

/// The mock server. Dropping it closes the listener and every connection.
pub struct MockApns {
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    addr: SocketAddr,
    ca_pem_path: PathBuf,
    options: MockOptions,
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    tls: Arc<rustls::ServerConfig>,
    options: MockOptions,
}

/// Where a scripted answer applies.
struct Rule {
    token: Option<String>,
    answer: Answer,
    /// `None` = forever; `Some(n)` = the next n matching requests.
    remaining: Option<usize>,
}

struct LiveConn {
    task: Task<()>,
    signals: async_channel::Sender<ConnSignal>,
}

enum ConnSignal {
    GoAway,
    Abrupt(h2::Reason),
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    connections: Vec<ConnectionInfo>,
    rules: Vec<Rule>,
    delay: Duration,
    stall: bool,
    /// Dropping these senders releases the stalled requests.
    stalled: Vec<async_channel::Sender<()>>,
    blackhole: bool,
    blackholed: Vec<(u64, Async<TcpStream>)>,
    in_flight: usize,
    peak_in_flight: usize,
    next_apns_id: u64,
    down: bool,
    /// See [`MockApns::goaway_after`].
    goaway_after: Option<usize>,
    accept_task: Option<Task<()>>,
    live: Vec<LiveConn>,
}

impl MockApns {
    /// Starts with [`MockOptions::default`].
    pub fn start(ca: &TestCa) -> MockApns {
        MockApns::start_with(ca, MockOptions::default())
    }

    pub fn start_with(ca: &TestCa, options: MockOptions) -> MockApns {
        let dir = TempDir::new("mock-apns");
        // Our own copy: the daemon may outlive the caller's TestCa.
        let ca_pem_path = ca.write_pem_to(dir.path(), "apns-ca.pem");
        let tls = Arc::new(server_tls_config(ca, &options));

        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind mock APNs");
        let addr = listener.get_ref().local_addr().expect("mock APNs address");

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            tls,
            options: options.clone(),
        });
        let executor = Arc::new(Executor::new());
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let thread = {
            let executor = executor.clone();
            std::thread::Builder::new()
                .name(format!("mock-apns-{}", addr.port()))
                .spawn(move || {
                    // Runs every task until the stop channel closes.
                    let _ = async_io::block_on(executor.run(stop_rx.recv()));
                })
                .expect("spawn mock APNs thread")
        };
        let task = executor.spawn(accept_loop(shared.clone(), executor.clone(), listener));
        shared.lock().accept_task = Some(task);

        MockApns {
            shared,
            executor,
            addr,
            ca_pem_path,
            options,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the daemon's `apns_endpoint`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// PEM of the CA that signed the mock's server certificate (`apns_ca_file`).
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// What the mock advertises (SETTINGS) and enforces.
    pub fn options(&self) -> &MockOptions {
        &self.options
    }

    // ---- scripting ------------------------------------------------------

    /// Always answer `answer` for this device token.
    pub fn answer(&self, token: &str, answer: Answer) {
        self.add_rule(Some(token), answer, None);
    }

    /// Answer `answer` to the next `n` pushes to this token, then as before.
    pub fn answer_next(&self, token: &str, n: usize, answer: Answer) {
        self.add_rule(Some(token), answer, Some(n));
    }

    /// Always answer `answer`, whatever the token (e.g. 403 BadCertificate).
    pub fn answer_all(&self, answer: Answer) {
        self.add_rule(None, answer, None);
    }

    /// Answer `answer` to the next `n` pushes, whatever the token.
    pub fn answer_all_next(&self, n: usize, answer: Answer) {
        self.add_rule(None, answer, Some(n));
    }

    /// Back to 200 for everything.
    pub fn clear_answers(&self) {
        self.shared.lock().rules.clear();
    }

    /// Latency added before each answer (requests are recorded on arrival).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// While on, requests are recorded but never answered. Turning it off
    /// answers the held ones (late; the client may have given up on them).
    pub fn set_stall(&self, on: bool) {
        let mut st = self.shared.lock();
        st.stall = on;
        if !on {
            st.stalled.clear();
        }
    }

    /// While on, TCP connections are accepted and then ignored (no TLS
    /// handshake). Turning it off closes them.
    pub fn set_blackhole(&self, on: bool) {
        let released = {
            let mut st = self.shared.lock();
            st.blackhole = on;
            if on {
                Vec::new()
            } else {
                std::mem::take(&mut st.blackholed)
            }
        };
        self.close_blackholed(released);
    }

    /// Graceful GOAWAY on every open connection, as APNs does before
    /// maintenance: in-flight streams finish, new ones are refused, then the
    /// connection closes. The listener stays up.
    pub fn send_goaway(&self) {
        self.signal_all(|| ConnSignal::GoAway);
    }

    /// The next connection to receive its `n`-th stream answers that one,
    /// sends a graceful GOAWAY, and resets every later stream with
    /// REFUSED_STREAM without processing (or recording) it: what a server
    /// whose GOAWAY names last-stream-id `n` does with streams above it.
    /// (h2's server always names the highest stream it has read, so the
    /// streams beyond `n` are refused one by one; RFC 9113 §8.7 gives both
    /// signals the same meaning: not processed, safe to retry.)
    pub fn goaway_after(&self, n: usize) {
        self.shared.lock().goaway_after = Some(n);
    }

    /// Immediate GOAWAY with an error code on every open connection.
    pub fn send_goaway_abrupt(&self, reason: h2::Reason) {
        self.signal_all(|| ConnSignal::Abrupt(reason));
    }

    /// Closes every open connection at the TCP level (no GOAWAY, no
    /// close_notify), like a network failure. The listener stays up.
    pub fn drop_connections(&self) {
        let (live, blackholed) = {
            let mut st = self.shared.lock();
            (
                std::mem::take(&mut st.live),
                std::mem::take(&mut st.blackholed),
            )
        };
        cancel_all(live);
        self.close_blackholed(blackholed);
    }

    /// `true`: close the listener (connects are refused) and drop every
    /// connection. `false`: listen again on the same port. Returns once done.
    pub fn set_down(&self, down: bool) {
        if down {
            let task = {
                let mut st = self.shared.lock();
                st.down = true;
                st.accept_task.take()
            };
            if let Some(task) = task {
                async_io::block_on(task.cancel());
            }
            self.drop_connections();
        } else {
            let mut st = self.shared.lock();
            if st.accept_task.is_some() {
                return;
            }
            // std sets SO_REUSEADDR, so the old connections' TIME_WAIT does not block this.
            let listener = Async::<TcpListener>::bind(self.addr)
                .unwrap_or_else(|e| panic!("mock APNs cannot listen on {} again: {e}", self.addr));
            st.accept_task = Some(self.executor.spawn(accept_loop(
                self.shared.clone(),
                self.executor.clone(),
                listener,
            )));
            st.down = false;
        }
        self.shared.changed.notify_all();
    }

    // ---- observation ----------------------------------------------------

    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared.lock().connections.clone()
    }

    /// TCP connections accepted so far (including failed handshakes).
    pub fn connections_accepted(&self) -> usize {
        self.shared.lock().connections.len()
    }

    /// Connections not yet closed.
    pub fn open_connections(&self) -> usize {
        StateView::of(&self.shared.lock()).open_connections()
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Most requests ever in flight at once, over all connections.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.lock().peak_in_flight
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    /// Panics after `timeout`, listing what did arrive.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        self.wait_for_requests_where(n, timeout, |_| true)
    }

    /// Waits until at least `n` requests matching `pred` arrived; returns those.
    pub fn wait_for_requests_where(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Request) -> bool,
    ) -> Vec<Request> {
        self.wait_until(timeout, &format!("{n} matching request(s)"), |st| {
            let matching: Vec<Request> = st.requests.iter().filter(|r| pred(r)).cloned().collect();
            (matching.len() >= n).then_some(matching)
        })
    }

    /// Waits until at least `n` TCP connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> Vec<ConnectionInfo> {
        self.wait_until(timeout, &format!("{n} connection(s)"), |st| {
            (st.connections.len() >= n).then(|| st.connections.to_vec())
        })
    }

    /// Waits until at least `n` TLS handshakes failed; returns those connections.
    pub fn wait_for_tls_failures(&self, n: usize, timeout: Duration) -> Vec<ConnectionInfo> {
        self.wait_until(timeout, &format!("{n} TLS failure(s)"), |st| {
            let failed: Vec<ConnectionInfo> = st
                .connections
                .iter()
                .filter(|c| c.tls_error.is_some())
                .cloned()
                .collect();
            (failed.len() >= n).then_some(failed)
        })
    }

    /// Waits until exactly `n` connections are open (e.g. 0 after a GOAWAY).
    pub fn wait_for_open_connections(&self, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("exactly {n} open connection(s)"), |st| {
            (st.open_connections() == n).then_some(())
        })
    }

    /// Asserts the request count stays at most `max` for the whole `window`,
    /// failing as soon as it is exceeded. Absence cannot be awaited, so this
    /// is the one wait that takes its full time: keep `window` short.
    pub fn expect_at_most_requests(&self, max: usize, window: Duration) {
        let deadline = Instant::now() + window;
        let mut st = self.shared.lock();
        loop {
            if st.requests.len() > max {
                panic!(
                    "mock APNs: expected at most {max} request(s), got {}:\n{}",
                    st.requests.len(),
                    describe(&st)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Blocks until `check` returns `Some`, or panics after `timeout`.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&StateView) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if let Some(v) = check(&StateView::of(&st)) {
                return v;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "mock APNs: timed out after {timeout:?} waiting for {what}; state:\n{}",
                    describe(&st)
                );
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn add_rule(&self, token: Option<&str>, answer: Answer, remaining: Option<usize>) {
        if remaining == Some(0) {
            return;
        }
        self.shared.lock().rules.push(Rule {
            token: token.map(str::to_string),
            answer,
            remaining,
        });
    }

    fn signal_all(&self, signal: impl Fn() -> ConnSignal) {
        let st = self.shared.lock();
        for conn in &st.live {
            // A closed channel means the connection already ended.
            let _ = conn.signals.try_send(signal());
        }
    }

    fn close_blackholed(&self, released: Vec<(u64, Async<TcpStream>)>) {
        if released.is_empty() {
            return;
        }
        let ids: Vec<u64> = released.iter().map(|(id, _)| *id).collect();
        drop(released);
        let mut st = self.shared.lock();
        let now = Instant::now();
        for c in st.connections.iter_mut().filter(|c| ids.contains(&c.id)) {
            c.closed_at.get_or_insert(now);
        }
        drop(st);
        self.shared.changed.notify_all();
    }
}

impl Drop for MockApns {
    fn drop(&mut self) {
        let (accept, live, blackholed, stalled) = {
            let mut st = self.shared.lock();
            (
                st.accept_task.take(),
                std::mem::take(&mut st.live),
                std::mem::take(&mut st.blackholed),
                std::mem::take(&mut st.stalled),
            )
        };
        // Tasks hold clones of the executor; cancel them so it is freed.
        if let Some(task) = accept {
            async_io::block_on(task.cancel());
        }
        cancel_all(live);
        drop((blackholed, stalled));
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read-only view of the recorded state for [`MockApns::wait_until`].
pub struct StateView<'a> {
    pub requests: &'a [Request],
    pub connections: &'a [ConnectionInfo],
    pub in_flight: usize,
    pub peak_in_flight: usize,
}

impl<'a> StateView<'a> {
    /// Connections not yet closed.
    pub fn open_connections(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.closed_at.is_none())
            .count()
    }

    fn of(st: &'a State) -> StateView<'a> {
        StateView {
            requests: &st.requests,
            connections: &st.connections,
            in_flight: st.in_flight,
            peak_in_flight: st.peak_in_flight,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking task must not hide the state from the test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let v = f(&mut self.lock());
        self.changed.notify_all();
        v
    }

    fn update_conn(&self, id: u64, f: impl FnOnce(&mut ConnectionInfo)) {
        self.update(|st| {
            if let Some(c) = st.connections.iter_mut().find(|c| c.id == id) {
                f(c);
            }
        });
    }
}

fn describe(st: &State) -> String {
    let mut out = String::new();
    for c in &st.connections {
        out.push_str(&format!(
            "  conn #{} uid={:?} alpn={:?} tls_error={:?} h2={} h2_error={:?} requests={} closed={}\n",
            c.id,
            c.client_uid,
            c.alpn,
            c.tls_error,
            c.h2_established,
            c.h2_error,
            c.requests,
            c.closed_at.is_some()
        ));
    }
    for r in &st.requests {
        out.push_str(&format!(
            "  req conn #{} stream {} {} {} -> {:?} body={}\n",
            r.connection,
            r.stream_id,
            r.method,
            r.path,
            r.answer.as_ref().map(|a| a.status),
            r.body_str()
        ));
    }
    if out.is_empty() {
        out.push_str("  (no connections, no requests)\n");
    }
    out
}

fn cancel_all(live: Vec<LiveConn>) {
    for conn in live {
        async_io::block_on(conn.task.cancel());
    }
}

fn server_tls_config(ca: &TestCa, options: &MockOptions) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(ca.root_store());
    let mut verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if !options.require_client_cert {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().expect("client cert verifier");
    let server = ca.server_cert();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with ring")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.rustls_cert()], server.rustls_key())
        .expect("mock APNs server cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

async fn accept_loop(
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            // E.g. EMFILE: keep serving the connections we have.
            Err(_) => {
                Timer::after(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (signals_tx, signals_rx) = async_channel::unbounded();
        let mut st = shared.lock();
        let id = st.connections.len() as u64 + 1;
        let blackholed = st.blackhole;
        st.connections.push(ConnectionInfo {
            id,
            peer,
            accepted_at: Instant::now(),
            blackholed,
            tls_error: None,
            client_uid: None,
            client_cert_der: None,
            alpn: None,
            tls_version: None,
            h2_established: false,
            h2_error: None,
            requests: 0,
            refused: 0,
            closed_at: None,
        });
        if blackholed {
            st.blackholed.push((id, tcp));
        } else {
            let task = executor.spawn(serve_connection(
                shared.clone(),
                executor.clone(),
                id,
                tcp,
                signals_rx,
            ));
            st.live.retain(|c| !c.task.is_finished());
            st.live.push(LiveConn {
                task,
                signals: signals_tx,
            });
        }
        drop(st);
        shared.changed.notify_all();
    }
}

/// Marks the connection closed however its task ends, cancellation included.
struct ClosedOnDrop {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.shared.update_conn(self.id, |c| {
            c.closed_at.get_or_insert_with(Instant::now);
        });
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
    id: u64,
    tcp: Async<TcpStream>,
    signals: async_channel::Receiver<ConnSignal>,
) {
    let _closed = ClosedOnDrop {
        shared: shared.clone(),
        id,
    };
    let acceptor = futures_rustls::TlsAcceptor::from(shared.tls.clone());
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            shared.update_conn(id, |c| c.tls_error = Some(e.to_string()));
            return;
        }
    };
    let (client_cert_der, alpn, tls_version) = {
        let conn = tls.get_ref().1;
        (
            conn.peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| c.as_ref().to_vec()),
            conn.alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            conn.protocol_version().map(|v| format!("{v:?}")),
        )
    };
    let client_uid = client_cert_der.as_deref().and_then(certs::subject_uid);
    shared.update_conn(id, |c| {
        c.client_cert_der = client_cert_der.clone();
        c.client_uid = client_uid.clone();
        c.alpn = alpn;
        c.tls_version = tls_version;
    });

    let mut h2 = match h2::server::Builder::new()
        .max_concurrent_streams(shared.options.max_concurrent_streams)
        .handshake::<_, Bytes>(tls.compat())
        .await
    {
        Ok(h2) => h2,
        Err(e) => {
            shared.update_conn(id, |c| c.h2_error = Some(e.to_string()));
            return;
        }
    };
    shared.update_conn(id, |c| c.h2_established = true);

    let peer = Arc::new(PeerIdentity {
        connection: id,
        client_uid,
        client_cert_der,
    });
    // Owned here so that ending this connection cancels its streams.
    let mut streams: Vec<Task<()>> = Vec::new();
    let mut received = 0;
    let mut refusing = false;
    loop {
        let event = future::or(
            async { Event::Accepted(Box::new(h2.accept().await)) },
            async {
                match signals.recv().await {
                    Ok(s) => Event::Signal(s),
                    // The mock is shutting down; the task is about to be cancelled.
                    Err(_) => future::pending().await,
                }
            },
        )
        .await;
        match event {
            Event::Accepted(incoming) => match *incoming {
                Some(Ok((_, mut respond))) if refusing => {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    shared.update_conn(id, |c| c.refused += 1);
                }
                Some(Ok((request, respond))) => {
                    received += 1;
                    refusing = shared.update(|st| {
                        let last = st.goaway_after == Some(received);
                        if last {
                            st.goaway_after = None;
                        }
                        last
                    });
                    if refusing {
                        h2.graceful_shutdown();
                    }
                    streams.retain(|t| !t.is_finished());
                    streams.push(executor.spawn(handle_stream(
                        shared.clone(),
                        peer.clone(),
                        request,
                        respond,
                    )));
                }
                Some(Err(e)) => {
                    shared.update_conn(id, |c| c.h2_error = Some(e.to_string()));
                    break;
                }
                None => break,
            },
            Event::Signal(ConnSignal::GoAway) => h2.graceful_shutdown(),
            Event::Signal(ConnSignal::Abrupt(reason)) => h2.abrupt_shutdown(reason),
        }
    }
}

/// A new stream (or the connection's end), boxed because it is large.
type Incoming = Option<
    Result<
        (
            http::Request<h2::RecvStream>,
            h2::server::SendResponse<Bytes>,
        ),
        h2::Error,
    >,
>;

/// What woke a connection's loop.
enum Event {
    Accepted(Box<Incoming>),
    Signal(ConnSignal),
}

struct PeerIdentity {
    connection: u64,
    client_uid: Option<String>,
    client_cert_der: Option<Vec<u8>>,
}

/// Counts a request in flight until its answer is sent or it is dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        shared.update(|st| {
            st.in_flight += 1;
            st.peak_in_flight = st.peak_in_flight.max(st.in_flight);
        });
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|st| st.in_flight -= 1);
    }
}

async fn handle_stream(
    shared: Arc<Shared>,
    peer: Arc<PeerIdentity>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let received_at = Instant::now();
    let _in_flight = InFlight::enter(&shared);
    let (parts, mut body_stream) = request.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = body_stream.data().await {
        match chunk {
            Ok(chunk) => {
                // Without releasing, a large body would stall on flow control.
                let _ = body_stream.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
            }
            // Reset by the client: nothing to answer.
            Err(_) => return,
        }
    }

    let path = parts.uri.path().to_string();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let echo_id = parts
        .headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let (answer, delay, stalled, apns_id) = shared.update(|st| {
        let token = path.strip_prefix("/3/device/").unwrap_or("");
        let answer = choose_answer(&mut st.rules, token);
        let stalled = st.stall.then(|| {
            let (tx, rx) = async_channel::bounded::<()>(1);
            st.stalled.push(tx);
            rx
        });
        st.next_apns_id += 1;
        let apns_id =
            echo_id.unwrap_or_else(|| format!("00000000-0000-4000-8000-{:012X}", st.next_apns_id));
        if let Some(c) = st.connections.iter_mut().find(|c| c.id == peer.connection) {
            c.requests += 1;
        }
        st.requests.push(Request {
            method: parts.method.to_string(),
            path: path.clone(),
            authority: parts.uri.authority().map(|a| a.to_string()),
            scheme: parts.uri.scheme_str().map(str::to_string),
            headers,
            body,
            client_uid: peer.client_uid.clone(),
            client_cert_der: peer.client_cert_der.clone(),
            connection: peer.connection,
            stream_id: respond.stream_id().as_u32(),
            received_at,
            answer: if stalled.is_some() {
                None
            } else {
                Some(answer.clone())
            },
        });
        (answer, st.delay, stalled, apns_id)
    });

    if let Some(release) = stalled {
        // Returns when set_stall(false) drops the sender.
        let _ = release.recv().await;
    }
    if !delay.is_zero() {
        Timer::after(delay).await;
    }

    let response = http::Response::builder()
        .status(answer.status)
        .header("apns-id", apns_id)
        .body(())
        .expect("valid mock response");
    let body = answer.body();
    // Send errors mean the client reset the stream or left; nothing to do.
    if body.is_empty() {
        let _ = respond.send_response(response, true);
    } else if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from(body), true);
    }
}

/// The newest matching rule wins; a counted rule is used up and removed.
fn choose_answer(rules: &mut Vec<Rule>, token: &str) -> Answer {
    let Some(index) = rules
        .iter()
        .rposition(|r| r.token.as_deref().is_none_or(|t| t == token))
    else {
        return Answer::ok();
    };
    let rule = &mut rules[index];
    let answer = rule.answer.clone();
    if let Some(remaining) = &mut rule.remaining {
        *remaining -= 1;
        if *remaining == 0 {
            rules.remove(index);
        }
    }
    answer
}
