//! Every bound the daemon enforces, in one place.
//!
//! A daemon that shares a 64 MB router with Dovecot must never grow without
//! limit because a peer is slow, chatty or hostile. Each size, count, queue and
//! timeout lives here so an operator (and a reviewer) can read the whole
//! envelope at once; the rest of the code only refers to these fields.

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_plugin_connections: 4096,
            max_request_head: 8 * 1024,
            max_request_headers: 32,
            max_request_body: 16 * 1024,
            // Dovecot keeps its http-client connections open for as long as
            // the process lives; a generous idle window avoids churn.
            plugin_idle_timeout: Duration::from_secs(15 * 60),
            plugin_request_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_legacy_line: 16 * 1024,
            legacy_read_timeout: Duration::from_secs(5),
            max_mailboxes_per_device: 256,
            max_field_len: 512,
            max_devices_per_user: 64,
            push_queue_len: 4096,
            max_held_pushes: 16 * 1024,
            max_apns_streams: 100,
            apns_request_timeout: Duration::from_secs(15),
            apns_connect_timeout: Duration::from_secs(20),
            apns_ping_interval: Duration::from_secs(60),
            apns_backoff_min: Duration::from_secs(1),
            apns_backoff_max: Duration::from_secs(5 * 60),
            max_push_attempts: 12,
            max_apns_response_body: 4096,
            max_store_batch: 256,
            store_queue_len: 1024,
            store_cache_bytes: 2 * 1024 * 1024,
            device_cache_users: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A provider token is reused this long before a new one is made. Apple
/// refuses tokens older than an hour and asks for reuse of 20 to 60 minutes.
pub const PROVIDER_TOKEN_REUSE: Duration = Duration::from_secs(40 * 60);

/// Never make provider tokens more often than this, even when APNs says the
/// token expired: faster refreshes get 429 TooManyProviderTokenUpdates.
pub const PROVIDER_TOKEN_MIN_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// The startup report warns when a certificate has fewer days left.
pub const CERT_WARN_DAYS: i64 = 30;

/// Largest file read for a secret (`plugin_auth = "@/path"`): one short line.
pub const MAX_SECRET_FILE: usize = 4096;
