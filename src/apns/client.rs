//! The long-lived APNs connection and the pushes multiplexed over it.
//!
//! Apple asks providers to keep one connection open and reuse it, so the
//! client holds at most one live connection, opens it on first use, checks
//! it with HTTP/2 PING while idle, and reconnects with capped exponential
//! backoff when it drops. Pushes run as concurrent streams; h2 holds them
//! back to the server's SETTINGS_MAX_CONCURRENT_STREAMS.
//!
//! A new identity (SIGHUP, renewal) bumps the identity slot's generation:
//! the next push opens a fresh connection with it, and the old connection
//! closes by itself once its in-flight streams are done.

use portable_atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_executor::Executor;
use async_io::Timer;
use bytes::Bytes;
use futures_lite::future;
use rustls::RootCertStore;

use super::connection::{self, Driver};
use super::push::{self, Outcome, Push};
use crate::clock::within;
use crate::config::ApnsEndpoint;
use crate::identity::IdentitySlot;
use crate::limits::Limits;

/// A connection in use. Clones share it; when the last clone is dropped the
/// connection is closed after its streams finish.
#[derive(Clone)]
struct Live {
    id: u64,
    generation: u64,
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    kill: async_channel::Sender<()>,
}

impl Live {
    fn usable(&self, generation: u64) -> bool {
        !self.closed.load(Ordering::Acquire) && self.generation == generation
    }

    /// Takes no new pushes, but lets the streams in flight finish: after a
    /// GOAWAY, the streams it did not name are retried, the ones it named
    /// are still answered (killing the connection would send those twice).
    /// The connection closes once the last handle is dropped.
    fn retire(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Closes the connection now; its streams fail and are retried.
    fn kill(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.kill.try_send(());
    }
}

/// Counters the daemon reports.
#[derive(Default)]
pub struct ClientStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// The last connection attempt failed (cleared by the next success).
    pub failing: AtomicBool,
}

/// Why no push could be attempted at all.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    /// No identity is configured (dry run).
    NoIdentity,
    /// The client is shutting down.
    Closed,
}

struct Inner {
    endpoint: ApnsEndpoint,
    authority: String,
    roots: Arc<RootCertStore>,
    identity: IdentitySlot,
    limits: Arc<Limits>,
    executor: Arc<Executor<'static>>,
    live: async_lock::Mutex<Option<Live>>,
    next_id: AtomicU64,
    closing: AtomicBool,
    stats: ClientStats,
}

/// Handle to the APNs client; cheap to clone.
#[derive(Clone)]
pub struct ApnsClient {
    inner: Arc<Inner>,
}

impl ApnsClient {
    pub fn new(
        endpoint: ApnsEndpoint,
        roots: RootCertStore,
        identity: IdentitySlot,
        limits: Arc<Limits>,
        executor: Arc<Executor<'static>>,
    ) -> ApnsClient {
        let authority = match &endpoint {
            ApnsEndpoint::Custom { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            other => format!("{}:{}", other.host(), other.port()),
        };
        ApnsClient {
            inner: Arc::new(Inner {
                endpoint,
                authority,
                roots: Arc::new(roots),
                identity,
                limits,
                executor,
                live: async_lock::Mutex::new(None),
                next_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                stats: ClientStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    /// Waits until a connection with the current identity is up, connecting
    /// (with backoff between failures) as needed.
    async fn ready(&self) -> Result<Live, NotReady> {
        let inner = &self.inner;
        let mut slot = inner.live.lock().await;
        let mut backoff = inner.limits.apns_backoff_min;
        loop {
            if inner.closing.load(Ordering::Acquire) {
                return Err(NotReady::Closed);
            }
            let (generation, identity) = inner.identity.get();
            let identity = identity.ok_or(NotReady::NoIdentity)?;
            if let Some(live) = slot.as_ref().filter(|l| l.usable(generation)) {
                return Ok(live.clone());
            }
            // Stale or dead: forget it; in-flight streams keep their clones.
            *slot = None;
            // Boxed: the TLS + HTTP/2 handshake's state is ~12 KB, and
            // every push in flight awaits ready(); unboxed, each one's task
            // would be that big for a connect that rarely happens.
            let attempt = Box::pin(async {
                let tls = connection::tls_config(
                    Arc::clone(&inner.roots),
                    identity.client_certificate(),
                )?;
                connection::connect(inner.endpoint.host(), inner.endpoint.port(), tls).await
            });
            let why = match within(inner.limits.apns_connect_timeout, attempt).await {
                Some(Ok((send, driver))) => {
                    let live = self.start(generation, send, driver);
                    inner.stats.connects.fetch_add(1, Ordering::Relaxed);
                    inner.stats.failing.store(false, Ordering::Relaxed);
                    log::info!(
                        "connected to APNs {} (connection {})",
                        inner.endpoint,
                        live.id
                    );
                    *slot = Some(live.clone());
                    return Ok(live);
                }
                Some(Err(e)) => e.to_string(),
                None => format!("no answer within {:?}", inner.limits.apns_connect_timeout),
            };
            // Only the reason lives on across the backoff, not the failed
            // attempt's (large) result.
            inner.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            inner.stats.failing.store(true, Ordering::Relaxed);
            log::warn!(
                "cannot connect to APNs {}: {why}; retrying in {backoff:?}",
                inner.endpoint
            );
            Timer::after(backoff).await;
            backoff = (backoff * 2).min(inner.limits.apns_backoff_max);
        }
    }

    /// Spawns the task that drives the connection and PINGs it while idle.
    fn start(
        &self,
        generation: u64,
        send: h2::client::SendRequest<Bytes>,
        mut driver: Driver,
    ) -> Live {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = Arc::new(AtomicBool::new(false));
        let (kill, killed) = async_channel::bounded::<()>(1);
        let ping_pong = driver.ping_pong();
        let interval = self.inner.limits.apns_ping_interval;
        let answer_within = self.inner.limits.apns_request_timeout;
        let task_closed = Arc::clone(&closed);
        self.inner
            .executor
            .spawn(async move {
                let run = async {
                    match driver.await {
                        Ok(()) => log::debug!("APNs connection {id} closed"),
                        Err(e) => log::warn!("APNs connection {id} lost: {e}"),
                    }
                };
                let stop = async {
                    // Resolves on kill() or once every handle is gone.
                    let _ = killed.recv().await;
                    log::debug!("APNs connection {id} closed by us");
                };
                let keepalive = async {
                    let Some(mut ping_pong) = ping_pong else {
                        return future::pending::<()>().await;
                    };
                    loop {
                        Timer::after(interval).await;
                        match within(answer_within, ping_pong.ping(h2::Ping::opaque())).await {
                            Some(Ok(_)) => {}
                            _ => {
                                log::warn!(
                                    "APNs connection {id} did not answer PING; reconnecting"
                                );
                                return;
                            }
                        }
                    }
                };
                future::or(future::or(run, stop), keepalive).await;
                task_closed.store(true, Ordering::Release);
            })
            .detach();
        Live {
            id,
            generation,
            send,
            closed,
            kill,
        }
    }

    /// Sends one push and reports what Apple said. Never panics, never gives
    /// up on the connection for good: failures come back as outcomes.
    pub async fn send(&self, push: &Push) -> Result<Outcome, NotReady> {
        let live = self.ready().await?;
        let (_, identity) = self.inner.identity.get();
        let identity = identity.ok_or(NotReady::NoIdentity)?;
        let auth = identity.authorization();
        let request = match push::request(
            &self.inner.authority,
            identity.topic(),
            auth.as_deref(),
            push,
            crate::clock::unix_now(),
        ) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Outcome::Rejected {
                    status: 0,
                    reason: format!("bad request: {e}"),
                })
            }
        };
        let max_body = self.inner.limits.max_apns_response_body;
        let exchange = async {
            let mut send = live.send.clone().ready().await?;
            let (response, mut body_out) = send.send_request(request, false)?;
            body_out.send_data(push::body(&push.account_id), true)?;
            let response = response.await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let mut body_in = response.into_body();
            let mut body = Vec::new();
            while let Some(chunk) = body_in.data().await {
                let chunk = chunk?;
                let _ = body_in.flow_control().release_capacity(chunk.len());
                let room = max_body.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok::<_, h2::Error>(push::classify(status, retry_after, &body))
        };
        let timeout = self.inner.limits.apns_request_timeout;
        Ok(match within(timeout, exchange).await {
            Some(Ok(outcome)) => {
                if let Outcome::CredentialsRejected { reason, .. } = &outcome {
                    identity.rejected(reason);
                }
                outcome
            }
            Some(Err(e)) => {
                // A stream refused or cut by GOAWAY was not processed: resend.
                // After a GOAWAY the streams it named still get answers; any
                // other connection-level error means this connection is done.
                if e.is_go_away() {
                    live.retire();
                } else if e.is_io() || !e.is_reset() {
                    live.kill();
                }
                Outcome::Retry {
                    status: None,
                    reason: format!("HTTP/2: {e}"),
                    after: None,
                }
            }
            None => {
                live.kill();
                Outcome::Retry {
                    status: None,
                    reason: format!("no answer within {timeout:?}"),
                    after: None,
                }
            }
        })
    }

    /// Stops connecting and closes the connection (after the caller has let
    /// in-flight pushes finish).
    pub async fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
        if let Some(live) = self.inner.live.lock().await.take() {
            live.kill();
        }
    }

    /// Whether a connection is up right now (for health reports).
    pub fn connected(&self) -> bool {
        self.inner
            .live
            .try_lock()
            .map(|l| {
                l.as_ref()
                    .is_some_and(|l| !l.closed.load(Ordering::Acquire))
            })
            .unwrap_or(true)
    }
}
