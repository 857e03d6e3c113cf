//! Turns notifications into pushes and applies what APNs answers.
//!
//! New mail is pushed at once; other events (flags, expunges) are held for
//! `delay_secs` and folded into one push per device, and a push sent at once
//! cancels the one held for that device. Waiting pushes sit in a bounded
//! queue (full: the oldest is dropped and counted); retries wait in the same
//! held set, with backoff. The dispatcher is also where APNs outcomes reach
//! the store: a dead token removes its registration.
//!
//! All timers use the monotonic clock, so a wall-clock jump neither fires
//! every held push at once nor starves them.

use portable_atomic::AtomicU64;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::Timer;
use event_listener::Event;
use futures_lite::future;

use crate::apns::client::NotReady;
use crate::apns::{ApnsClient, Outcome, Push};
use crate::clock::within;
use crate::limits::Limits;
use crate::log_gate::{held_back, LogGate};
use crate::privacy::{tag, Short};
use crate::store::{Device, RemoveIf, Store};

/// A push on its way, with what is needed to retry it and judge its answer.
#[derive(Clone, Debug)]
struct Job {
    push: Push,
    /// When the device registered, as known when the push was made: a dead
    /// token only removes a registration that is not newer.
    registered_at: u64,
    attempts: u32,
}

impl Job {
    fn for_device(device: &Device) -> Job {
        Job {
            push: Push {
                token: device.token.clone(),
                account_id: device.account_id.clone(),
            },
            registered_at: device.registered_at,
            attempts: 0,
        }
    }
}

/// Pushes waiting for a deadline: held events and retries.
#[derive(Default)]
struct Held {
    order: BTreeMap<(Instant, u64), Job>,
    by_token: HashMap<String, (Instant, u64)>,
    /// Tokens with a push in the queue, so a burst of mail sends one push.
    queued: HashSet<String>,
    seq: u64,
}

/// Counters for reports and metrics.
#[derive(Default, Debug)]
pub struct DispatchStats {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub delivered: AtomicU64,
    pub devices_removed: AtomicU64,
    pub retried: AtomicU64,
    pub given_up: AtomicU64,
    pub credential_errors: AtomicU64,
    pub dry_run: AtomicU64,
    pub in_flight: AtomicUsize,
}

struct Inner {
    store: Store,
    apns: ApnsClient,
    executor: Arc<Executor<'static>>,
    limits: Arc<Limits>,
    delay: Duration,
    held: Mutex<Held>,
    wake: Event,
    queue_in: async_channel::Sender<Job>,
    queue_out: async_channel::Receiver<Job>,
    streams: Arc<async_lock::Semaphore>,
    stats: DispatchStats,
    credential_alarm: LogGate,
    /// An overload drops thousands of pushes a second, and one line each
    /// would cost more than the pushes.
    drop_warning: LogGate,
}

/// Handle to the dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        apns: ApnsClient,
        executor: Arc<Executor<'static>>,
        limits: Arc<Limits>,
        delay: Duration,
    ) -> Dispatcher {
        let (queue_in, queue_out) = async_channel::bounded(limits.push_queue_len.max(1));
        let streams = Arc::new(async_lock::Semaphore::new(limits.max_apns_streams.max(1)));
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                apns,
                executor,
                limits,
                delay,
                held: Mutex::new(Held::default()),
                wake: Event::new(),
                queue_in,
                queue_out,
                streams,
                stats: DispatchStats::default(),
                credential_alarm: LogGate::default(),
                drop_warning: LogGate::default(),
            }),
        }
    }

    pub fn stats(&self) -> &DispatchStats {
        &self.inner.stats
    }

    /// Pushes waiting in the queue right now.
    pub fn queue_depth(&self) -> usize {
        self.inner.queue_out.len()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic elsewhere cannot happen with panic=abort; in tests, carry on.
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New mail: push now, replacing any held push for this device.
    pub fn push_now(&self, device: &Device) {
        let mut held = self.held();
        if let Some(key) = held.by_token.remove(&device.token) {
            held.order.remove(&key);
        }
        self.enqueue(&mut held, Job::for_device(device));
    }

    /// Anything else: hold for `delay_secs`, folding into a push already held.
    pub fn hold(&self, device: &Device) {
        self.hold_unless_waiting(Job::for_device(device), self.inner.delay);
    }

    /// Holds `job` for `wait`, unless a push for its device is already held
    /// or queued: that one covers this too.
    fn hold_unless_waiting(&self, job: Job, wait: Duration) {
        let mut held = self.held();
        if held.by_token.contains_key(&job.push.token) || held.queued.contains(&job.push.token) {
            return;
        }
        self.hold_job(&mut held, job, wait);
    }

    fn hold_job(&self, held: &mut Held, job: Job, wait: Duration) {
        if held.by_token.len() >= self.inner.limits.max_held_pushes {
            // Full: send the one closest to its deadline early rather than lose it.
            if let Some((_, early)) = held.order.pop_first() {
                held.by_token.remove(&early.push.token);
                self.enqueue(held, early);
            }
        }
        let key = (Instant::now() + wait, held.seq);
        held.seq += 1;
        held.by_token.insert(job.push.token.clone(), key);
        held.order.insert(key, job);
        self.inner.wake.notify(1);
    }

    fn enqueue(&self, held: &mut Held, job: Job) {
        if !held.queued.insert(job.push.token.clone()) {
            return; // already on its way; one push covers both
        }
        match self.inner.queue_in.force_send(job) {
            Ok(Some(oldest)) => {
                held.queued.remove(&oldest.push.token);
                let n = self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if self.inner.drop_warning.pass().is_some() {
                    log::warn!(
                        "push queue full ({} pushes): dropped the oldest push ({n} dropped so far; said at most once a minute)",
                        self.inner.limits.push_queue_len
                    );
                }
            }
            Ok(None) => {}
            Err(_) => log::debug!("push queue closed; push not queued"),
        }
        self.inner.stats.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves held pushes whose time has come into the queue. Runs until the
    /// queue is closed.
    pub async fn run_timers(&self) {
        while !self.inner.queue_in.is_closed() {
            let listener = self.inner.wake.listen();
            let next = {
                let mut held = self.held();
                let now = Instant::now();
                while let Some(entry) = held.order.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let job = entry.remove();
                    held.by_token.remove(&job.push.token);
                    self.enqueue(&mut held, job);
                }
                held.order.first_key_value().map(|(k, _)| k.0)
            };
            match next {
                Some(deadline) => {
                    future::or(
                        async {
                            Timer::at(deadline).await;
                        },
                        listener,
                    )
                    .await
                }
                None => listener.await,
            }
        }
    }

    /// Takes pushes off the queue and sends them, as many at once as the
    /// stream limit allows. Runs until the queue is closed and empty.
    pub async fn run_sender(&self) {
        while let Ok(job) = self.inner.queue_out.recv().await {
            self.held().queued.remove(&job.push.token);
            let permit = self.inner.streams.acquire_arc().await;
            let this = self.clone();
            self.inner.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            self.inner
                .executor
                .spawn(async move {
                    this.deliver(job).await;
                    this.inner.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                })
                .detach();
        }
    }

    /// An operator's test push: sent at once through the same APNs client,
    /// its answer applied as for any push (a dead token is removed, a
    /// passing failure is retried later), and returned.
    pub async fn push_and_wait(&self, device: &Device) -> Result<Outcome, NotReady> {
        let job = Job::for_device(device);
        let _permit = self.inner.streams.acquire_arc().await;
        let outcome = self.inner.apns.send(&job.push).await;
        if let Ok(outcome) = &outcome {
            self.apply(job, outcome.clone()).await;
        } else if outcome == Err(NotReady::NoIdentity) {
            self.inner.stats.dry_run.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn deliver(&self, job: Job) {
        let stats = &self.inner.stats;
        match self.inner.apns.send(&job.push).await {
            Err(NotReady::NoIdentity) => {
                stats.dry_run.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "dry run: would push to device {} (no push identity configured)",
                    tag(&job.push.token)
                );
            }
            Err(NotReady::Closed) => {
                log::debug!("shutting down: push to {} not sent", Short(&job.push.token));
            }
            Ok(outcome) => self.apply(job, outcome).await,
        }
    }

    /// What an APNs answer means for the registration and the push.
    async fn apply(&self, mut job: Job, outcome: Outcome) {
        let stats = &self.inner.stats;
        log::debug!("push to {}: {outcome}", Short(&job.push.token));
        match outcome {
            Outcome::Delivered => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::DeviceGone {
                ref reason, since, ..
            } => {
                let cutoff = since.unwrap_or(job.registered_at).max(job.registered_at);
                match self
                    .inner
                    .store
                    .remove(&job.push.token, RemoveIf::RegisteredBefore(cutoff))
                    .await
                {
                    Ok(_) => {
                        stats.devices_removed.fetch_add(1, Ordering::Relaxed);
                        log::info!(
                            "APNs reports device {} gone ({reason}): registration removed",
                            tag(&job.push.token)
                        );
                    }
                    Err(e) => log::warn!("APNs reports a device gone, but removing it failed: {e}"),
                }
            }
            Outcome::CredentialsRejected { status, ref reason } => {
                stats.credential_errors.fetch_add(1, Ordering::Relaxed);
                self.credential_alarm(status, reason);
                job.attempts += 1;
                let wait = self
                    .backoff(job.attempts)
                    .max(self.inner.limits.credential_retry_min);
                self.hold_unless_waiting(job, wait);
            }
            Outcome::Retry {
                after, ref reason, ..
            } => {
                job.attempts += 1;
                if job.attempts >= self.inner.limits.max_push_attempts {
                    stats.given_up.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "push to device {} given up after {} attempts: {reason}",
                        tag(&job.push.token),
                        job.attempts
                    );
                    return;
                }
                stats.retried.fetch_add(1, Ordering::Relaxed);
                let wait = after.unwrap_or_else(|| self.backoff(job.attempts));
                self.hold_unless_waiting(job, wait);
            }
            Outcome::Rejected { status, ref reason } => {
                stats.given_up.fetch_add(1, Ordering::Relaxed);
                log::warn!("APNs refused a push for good ({status} {reason}); dropped");
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let min = self.inner.limits.apns_backoff_min;
        min.saturating_mul(1u32 << attempts.min(16))
            .min(self.inner.limits.apns_backoff_max)
    }

    /// Credential errors are the admin's to fix: say so loudly, once a minute.
    fn credential_alarm(&self, status: u16, reason: &str) {
        let Some(held) = self.inner.credential_alarm.pass() else {
            return;
        };
        log::error!(
            "APNs rejected our credentials ({status} {reason}): check the push certificate or key \
             and its topic; devices are kept and pushes retried{}",
            held_back(held)
        );
    }

    /// Stops taking new pushes, gives in-flight ones `grace` to finish, then
    /// closes the APNs connection. Held and queued pushes are dropped.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.queue_in.close();
        self.inner.wake.notify(usize::MAX);
        let streams = Arc::clone(&self.inner.streams);
        let all = self.inner.limits.max_apns_streams.max(1);
        let drained = within(grace, async move {
            let mut permits = Vec::with_capacity(all);
            for _ in 0..all {
                permits.push(streams.acquire_arc().await);
            }
        })
        .await;
        if drained.is_none() {
            log::warn!(
                "{} push(es) still in flight after {grace:?}; closing anyway",
                self.inner.stats.in_flight.load(Ordering::Relaxed)
            );
        }
        self.inner.apns.close().await;
    }
}
