//! Every bound the daemon enforces, in one place.
//!
//! A daemon that shares a 64 MB router with Dovecot must never grow without
//! limit because a peer is slow, chatty or hostile. Each size, count, queue and
//! timeout lives here so an operator (and a reviewer) can read the whole
//! envelope at once; the rest of the code only refers to these fields. The
//! bounds that hold memory are derived from one setting, `memory_budget_kib`,
//! in [`Limits::from_budget`], so the whole daemon fits the budget it is given.

use std::time::Duration;

/// The bounds in force for one daemon run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Plugin connections served at once; more are accepted and closed.
    pub max_plugin_connections: usize,
    /// Largest request head (request line + headers) read from the plugin.
    pub max_request_head: usize,
    /// Most header lines accepted in one plugin request.
    pub max_request_headers: usize,
    /// Largest request body; bigger bodies get 413.
    pub max_request_body: usize,
    /// A keep-alive plugin connection may sit idle this long between requests.
    pub plugin_idle_timeout: Duration,
    /// Once a request has started, its head and body must arrive within this.
    pub plugin_request_timeout: Duration,
    /// A TLS plugin connection must finish its handshake within this.
    pub tls_handshake_timeout: Duration,
    /// Longest request line read from a legacy-socket plugin.
    pub max_legacy_line: usize,
    /// Legacy-socket connections served at once; more are accepted and closed.
    pub max_legacy_connections: usize,
    /// A legacy-socket plugin must send its whole line within this (the old
    /// plugin itself gives up after one second).
    pub legacy_read_timeout: Duration,
    /// Mailbox names one device may register.
    pub max_mailboxes_per_device: usize,
    /// Longest username, account id or mailbox name accepted.
    pub max_field_len: usize,
    /// Devices one user may have; the oldest registration is evicted past it.
    pub max_devices_per_user: usize,
    /// Pushes waiting for APNs; when full the oldest is dropped (and counted).
    pub push_queue_len: usize,
    /// Devices with a held (delayed or retrying) push at once.
    pub max_held_pushes: usize,
    /// Pushes in flight on the APNs connection at once (the server may lower it).
    pub max_apns_streams: usize,
    /// One push must be answered within this, or it is retried on a new connection.
    pub apns_request_timeout: Duration,
    /// TCP + TLS + HTTP/2 handshake with APNs must finish within this.
    pub apns_connect_timeout: Duration,
    /// An idle APNs connection is PINGed this often to notice a dead peer.
    pub apns_ping_interval: Duration,
    /// Reconnect backoff starts here and doubles up to `apns_backoff_max`.
    pub apns_backoff_min: Duration,
    pub apns_backoff_max: Duration,
    /// A push is retried at most this many times before it is given up.
    pub max_push_attempts: u32,
    /// Largest APNs answer body read (Apple's are a few dozen bytes).
    pub max_apns_response_body: usize,
    /// Registrations committed in one store transaction (group commit).
    pub max_store_batch: usize,
    /// Store operations waiting for the writer thread.
    pub store_queue_len: usize,
    /// redb page cache.
    pub store_cache_bytes: usize,
    /// Users whose device lists are cached for notifies (about 300 bytes
    /// each with one device), so a notify skips the store's read transaction.
    pub device_cache_users: usize,
    /// On SIGTERM, in-flight pushes get this long to finish.
    pub shutdown_grace: Duration,
    /// Bytes of request buffers all plugin connections may hold at once; a
    /// request that would need more is answered 503 and its connection closed.
    pub request_buffer_pool: usize,
    /// Registrations not renewed for `expire_days` are looked for this often.
    pub expiry_sweep_interval: Duration,
    /// A provider token is reused this long before a new one is made. Apple
    /// refuses tokens older than an hour and asks for reuse of 20 to 60 minutes.
    pub provider_token_reuse: Duration,
    /// Never make provider tokens more often than this, even when APNs says
    /// the token expired: faster refreshes get 429 TooManyProviderTokenUpdates.
    pub provider_token_min_interval: Duration,
    /// A push refused for our credentials (certificate, token, topic) waits
    /// at least this before it is retried: the admin has to act first.
    pub credential_retry_min: Duration,
    /// The `memory_budget_kib` these bounds were derived from.
    pub budget_kib: u64,
}

/// `memory_budget_kib` when none is configured: xapsd next to Dovecot on a
/// 64 MB router.
pub const DEFAULT_BUDGET_KIB: u64 = 8 * 1024;
/// The least budget the daemon starts with: below it the derived bounds
/// would leave too few connections and too small a cache to serve.
pub const MIN_BUDGET_KIB: u64 = 4 * 1024;
/// Beyond this no bound grows any further (the counts are capped anyway).
pub const MAX_BUDGET_KIB: u64 = 1024 * 1024;

// How a budget is split. RSS = what the program costs before any load
// (BASE_KIB) + what its bounded parts may hold at most. Each part gets a
// share of the rest in per mille, and a count is share / cost-of-one. The
// costs are measured on the x86_64 musl release build (see BENCHMARKS.md)
// and rounded up, so a part that hits its bound stays inside its share.

/// Resident code and data of the static binary (2.5 MiB of file-backed
/// pages on x86_64), the TLS trust anchors, the executor, the store's
/// writer and the threads' stacks as touched: idle RSS is 3.2 MiB with a
/// push certificate loaded, plus the APNs connection's TLS state.
const BASE_KIB: u64 = 3584;

/// Dovecot keeps one mostly idle connection per process, so connections
/// are the biggest part: 2,000 of them is a busy IMAP server.
const CONNECTIONS_PER_MILLE: u64 = 560;
/// An idle keep-alive connection: its task (no buffer while idle), the
/// reactor's source and timer, the allocator's rounding. Measured 1.23 KiB.
const CONNECTION_BYTES: u64 = 1280;

/// Request buffers, shared: only connections with a request in progress
/// hold one, and slowloris peers must not be able to claim all the memory.
const REQUEST_BUFFERS_PER_MILLE: u64 = 100;

/// redb's page cache (read cache + write buffer; redb keeps the sum to the
/// size given). Misses cost a pread, not correctness, so it can be small.
const STORE_CACHE_PER_MILLE: u64 = 100;

/// Registrations waiting for the writer thread: the device record, its
/// reply channel and the caller's request.
const STORE_QUEUE_PER_MILLE: u64 = 25;
const STORE_OP_BYTES: u64 = 1024;

/// Pushes waiting for APNs: the job (token, account id) plus its entry in
/// the "already queued" set.
const PUSH_QUEUE_PER_MILLE: u64 = 60;
const QUEUED_PUSH_BYTES: u64 = 320;

/// Held (delayed or retrying) pushes: the job, the deadline-ordered map
/// entry and the per-token index entry.
const HELD_PUSHES_PER_MILLE: u64 = 50;
const HELD_PUSH_BYTES: u64 = 512;

/// Pushes in flight: the delivery task (~2 KiB), h2's stream state and
/// the request headers.
const APNS_STREAMS_PER_MILLE: u64 = 60;
const APNS_STREAM_BYTES: u64 = 2560;

/// Device lists cached for notifies: the user name, the `Arc<[Device]>`
/// with one device and the map entry.
const DEVICE_CACHE_PER_MILLE: u64 = 25;
const DEVICE_CACHE_USER_BYTES: u64 = 384;

// The remaining 20 per mille is slack for allocator fragmentation.

/// Why a budget was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetError {
    TooSmall(u64),
    TooLarge(u64),
}

impl std::fmt::Display for BudgetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetError::TooSmall(kib) => write!(
                f,
                "{kib} KiB is too small to run in: xapsd needs at least {MIN_BUDGET_KIB} KiB \
                 (about {BASE_KIB} KiB of it is the program itself)"
            ),
            BudgetError::TooLarge(kib) => {
                write!(
                    f,
                    "{kib} KiB is more than the {MAX_BUDGET_KIB} KiB any bound can use"
                )
            }
        }
    }
}

impl std::error::Error for BudgetError {}

impl Limits {
    /// The bounds for `memory_budget_kib = kib`: every memory-holding bound
    /// is derived here and nowhere else.
    pub fn from_budget(kib: u64) -> Result<Limits, BudgetError> {
        if kib < MIN_BUDGET_KIB {
            return Err(BudgetError::TooSmall(kib));
        }
        if kib > MAX_BUDGET_KIB {
            return Err(BudgetError::TooLarge(kib));
        }
        Ok(Limits::derive(kib))
    }

    fn derive(kib: u64) -> Limits {
        let load = (kib - BASE_KIB) * 1024;
        let share = |per_mille: u64| load * per_mille / 1000;
        let count = |per_mille: u64, cost: u64, min: u64, max: u64| {
            (share(per_mille) / cost).clamp(min, max) as usize
        };
        let request_buffer_pool = share(REQUEST_BUFFERS_PER_MILLE) as usize;
        let store_queue_len = count(STORE_QUEUE_PER_MILLE, STORE_OP_BYTES, 16, 16 * 1024);
        Limits {
            max_plugin_connections: count(CONNECTIONS_PER_MILLE, CONNECTION_BYTES, 64, 64 * 1024),
            max_request_head: 8 * 1024,
            max_request_headers: 32,
            // A registration with every mailbox of a large account fits in
            // 16 KiB; a body may take at most 1/16 of the shared pool.
            max_request_body: (request_buffer_pool / 16).clamp(8 * 1024, 16 * 1024),
            request_buffer_pool,
            // Dovecot keeps its http-client connections open for as long as
            // the process lives; a generous idle window avoids churn.
            plugin_idle_timeout: Duration::from_secs(15 * 60),
            plugin_request_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_legacy_line: 16 * 1024,
            // Each one-line request may buffer a whole line; the buffers
            // take the request-buffer share (a Dovecot runs the old plugin
            // or the new one, so the two front ends do not peak together).
            max_legacy_connections: (request_buffer_pool / (16 * 1024)).clamp(4, 1024),
            legacy_read_timeout: Duration::from_secs(5),
            max_mailboxes_per_device: 256,
            max_field_len: 512,
            max_devices_per_user: 64,
            push_queue_len: count(PUSH_QUEUE_PER_MILLE, QUEUED_PUSH_BYTES, 64, 64 * 1024),
            max_held_pushes: count(HELD_PUSHES_PER_MILLE, HELD_PUSH_BYTES, 32, 64 * 1024),
            // Apple asks for no more than 1,000; 100 already saturates one
            // connection from a router.
            max_apns_streams: count(APNS_STREAMS_PER_MILLE, APNS_STREAM_BYTES, 8, 100),
            apns_request_timeout: Duration::from_secs(15),
            apns_connect_timeout: Duration::from_secs(20),
            apns_ping_interval: Duration::from_secs(60),
            apns_backoff_min: Duration::from_secs(1),
            apns_backoff_max: Duration::from_secs(5 * 60),
            max_push_attempts: 12,
            max_apns_response_body: 4096,
            // A commit's dirty pages stay within redb's write buffer (half
            // the cache) however large the batch, so the batch may take the
            // whole queue: one fsync for every registration waiting.
            max_store_batch: store_queue_len.clamp(16, 256),
            store_queue_len,
            store_cache_bytes: share(STORE_CACHE_PER_MILLE) as usize,
            device_cache_users: count(
                DEVICE_CACHE_PER_MILLE,
                DEVICE_CACHE_USER_BYTES,
                16,
                64 * 1024,
            ),
            shutdown_grace: Duration::from_secs(5),
            expiry_sweep_interval: Duration::from_secs(3600),
            provider_token_reuse: Duration::from_secs(40 * 60),
            provider_token_min_interval: Duration::from_secs(20 * 60),
            credential_retry_min: Duration::from_secs(60),
            budget_kib: kib,
        }
    }

    /// The derived bounds, one per line, for `xapsd check-config`.
    pub fn describe(&self) -> String {
        let kib = |b: usize| format!("{} KiB", b / 1024);
        let secs = |d: Duration| format!("{:?}", d);
        [
            format!(
                "memory_budget_kib: {} (bounds derived from it:)",
                self.budget_kib
            ),
            format!(
                "  plugin connections: {} (more are accepted and closed)",
                self.max_plugin_connections
            ),
            format!(
                "  request head / body: {} / {}",
                kib(self.max_request_head),
                kib(self.max_request_body)
            ),
            format!(
                "  request buffers, all connections: {}",
                kib(self.request_buffer_pool)
            ),
            format!(
                "  legacy socket connections: {}",
                self.max_legacy_connections
            ),
            format!(
                "  push queue: {} (full: the oldest is dropped)",
                self.push_queue_len
            ),
            format!("  held pushes: {}", self.max_held_pushes),
            format!("  APNs streams in flight: {}", self.max_apns_streams),
            format!("  store cache: {}", kib(self.store_cache_bytes)),
            format!("  device lists cached: {} users", self.device_cache_users),
            format!(
                "  store queue / batch: {} / {}",
                self.store_queue_len, self.max_store_batch
            ),
            format!(
                "  timeouts: plugin idle {}, plugin request {}, APNs request {}",
                secs(self.plugin_idle_timeout),
                secs(self.plugin_request_timeout),
                secs(self.apns_request_timeout)
            ),
        ]
        .join("\n")
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::derive(DEFAULT_BUDGET_KIB)
    }
}

/// The startup report warns when a certificate has fewer days left.
pub const CERT_WARN_DAYS: i64 = 30;

/// Largest file read for a secret (`plugin_auth = "@/path"`): one short line.
pub const MAX_SECRET_FILE: usize = 4096;

/// Apple-ID certificates are renewed this many days before the mail
/// certificate's notAfter.
pub const APPLE_CERT_RENEW_DAYS: i64 = 30;

/// One request to Apple's certificate service must be answered within this.
pub const APPLE_CERT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest answer read from the certificate service (five PEM
/// certificates in a plist are about 12 KB).
pub const MAX_APPLE_CERT_ANSWER: usize = 256 * 1024;

/// The certificate renewal task looks again at least this often, so a wall
/// clock that jumps (routers without an RTC) is noticed.
pub const APPLE_CERT_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// After a write error that leaves redb's handle unusable (disk full, EFBIG),
/// the store reopens its file no sooner than this, doubling per failed try
/// up to the max: an admin who frees space waits at most the max, and a
/// disk that stays full costs one reopen (and repair) per max, not a loop.
pub const STORE_REOPEN_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const STORE_REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Test hook, not a config key: `XAPSD_TEST_TIMEOUTS` holds
/// `name=milliseconds` pairs, comma-separated, that replace timeouts so the
/// integration tests (slowloris, APNs stalls, expiry) need not wait minutes.
/// Operators have no reason to set it; the daemon logs a warning when it does.
pub const TEST_TIMEOUTS_ENV: &str = "XAPSD_TEST_TIMEOUTS";

impl Limits {
    /// Applies a [`TEST_TIMEOUTS_ENV`] value; the error names the bad item.
    pub fn with_test_timeouts(mut self, spec: &str) -> Result<Limits, String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("`{item}` is not timeout_name=milliseconds");
            let (name, ms) = item.split_once('=').ok_or_else(bad)?;
            let ms: u64 = ms.trim().parse().map_err(|_| bad())?;
            let field = match name.trim() {
                "plugin_idle_timeout" => &mut self.plugin_idle_timeout,
                "plugin_request_timeout" => &mut self.plugin_request_timeout,
                "apns_request_timeout" => &mut self.apns_request_timeout,
                "apns_backoff_max" => &mut self.apns_backoff_max,
                "expiry_sweep_interval" => &mut self.expiry_sweep_interval,
                "provider_token_reuse" => &mut self.provider_token_reuse,
                "provider_token_min_interval" => &mut self.provider_token_min_interval,
                "credential_retry_min" => &mut self.credential_retry_min,
                other => return Err(format!("`{other}` is not a timeout the hook can set")),
            };
            *field = Duration::from_millis(ms.max(1));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_gives_the_documented_bounds() {
        let l = Limits::default();
        assert_eq!(l, Limits::from_budget(DEFAULT_BUDGET_KIB).unwrap());
        assert!(l.max_plugin_connections >= 2000, "{l:?}");
        assert_eq!(l.max_request_body, 16 * 1024);
        assert_eq!(l.max_apns_streams, 100);
    }

    #[test]
    fn every_memory_bound_grows_with_the_budget_and_stays_inside_it() {
        let mut previous: Option<Limits> = None;
        for kib in [MIN_BUDGET_KIB, 6 * 1024, 8 * 1024, 16 * 1024, 64 * 1024] {
            let l = Limits::from_budget(kib).unwrap();
            let worst = BASE_KIB * 1024
                + l.max_plugin_connections as u64 * CONNECTION_BYTES
                + l.request_buffer_pool as u64
                + l.store_cache_bytes as u64
                + l.store_queue_len as u64 * STORE_OP_BYTES
                + l.push_queue_len as u64 * QUEUED_PUSH_BYTES
                + l.max_held_pushes as u64 * HELD_PUSH_BYTES
                + l.max_apns_streams as u64 * APNS_STREAM_BYTES
                + l.device_cache_users as u64 * DEVICE_CACHE_USER_BYTES;
            assert!(worst <= kib * 1024, "{kib} KiB: worst case {worst} B");
            if let Some(p) = previous {
                assert!(l.max_plugin_connections > p.max_plugin_connections);
                assert!(l.store_cache_bytes > p.store_cache_bytes);
                assert!(l.push_queue_len > p.push_queue_len);
                assert!(l.max_held_pushes > p.max_held_pushes);
                assert!(l.store_queue_len >= p.store_queue_len);
                assert!(l.device_cache_users >= p.device_cache_users);
            }
            previous = Some(l);
        }
    }

    #[test]
    fn budgets_out_of_range_are_refused_with_the_minimum() {
        let err = Limits::from_budget(1024).unwrap_err();
        assert_eq!(err, BudgetError::TooSmall(1024));
        assert!(err.to_string().contains("at least 4096 KiB"), "{err}");
        assert!(Limits::from_budget(MAX_BUDGET_KIB + 1).is_err());
    }

    #[test]
    fn the_test_hook_sets_named_timeouts_only() {
        let l = Limits::default()
            .with_test_timeouts(
                "plugin_idle_timeout=1500, apns_request_timeout=700, provider_token_reuse=900",
            )
            .unwrap();
        assert_eq!(l.plugin_idle_timeout, Duration::from_millis(1500));
        assert_eq!(l.apns_request_timeout, Duration::from_millis(700));
        assert_eq!(l.provider_token_reuse, Duration::from_millis(900));
        assert_eq!(
            l.plugin_request_timeout,
            Limits::default().plugin_request_timeout
        );
        let err = Limits::default()
            .with_test_timeouts("push_queue_len=1")
            .unwrap_err();
        assert!(err.contains("push_queue_len"), "{err}");
        assert!(Limits::default()
            .with_test_timeouts("plugin_idle_timeout")
            .is_err());
    }
}
