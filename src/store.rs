//! The registration store: which devices want pushes for which user.
//!
//! A registration answered with 200 must survive a power cut, so every write
//! is committed durably (fsync) before the caller hears back. Writes go to one
//! writer thread that folds whatever is waiting into a single transaction
//! (group commit): a burst of registrations costs one fsync, not one each.
//! Reads run on the caller's thread; redb's MVCC lets them proceed while the
//! writer commits. This module knows nothing of HTTP or APNs.
//!
//! A notify only needs one user's devices, and opening a read transaction
//! and its tables costs more than the lookup itself. So after each commit
//! the writer opens the tables of the new state once (a [`Snapshot`]) for
//! every notify to share, and recently notified users' devices (including
//! "none") are kept in a small bounded cache. Before it answers, the writer
//! puts the new snapshot in place and drops the cache entries of every user
//! the commit touched; a reader only fills the cache if no commit happened
//! since it looked. So a device registered or removed with a 200 is never
//! served stale. Holding the latest snapshot keeps at most one older
//! version of the changed pages from being reused.
//!
//! Once a write hits an I/O error (disk full, file size limit), redb latches
//! it and refuses every later write on that handle, so a daemon would answer
//! 503 until restarted even after space is back. The writer then closes and
//! reopens the file, no more often than a doubling backoff allows. Until the
//! reopen, readers keep the snapshot and cached lists of the last good
//! commit (the failed one changed nothing they can see); a reopen waits for
//! the reads in flight, and a miss during the reopen waits for it.

//! Layout (schema version 1):
//! - `meta`: `schema_version` -> 1
//! - `devices`: device token -> [`Device`] as JSON (miniserde)
//! - `user_devices`: username -> device tokens (multimap index)
//! - `apple_certs`: name -> (certificate DER, private key DER): certificates
//!   the daemon obtained itself (Apple-ID service), keys included; added in
//!   place (a store without the table gets an empty one), so still version 1
//! - `apple_meta`: name -> unix seconds (e.g. when Apple was last asked)

use std::collections::HashMap;
use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use miniserde::{Deserialize, Serialize};
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use crate::limits::{STORE_REOPEN_BACKOFF_MAX, STORE_REOPEN_BACKOFF_MIN};

/// The schema this build writes. Older stores are migrated on open.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const USER_DEVICES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("user_devices");
const APPLE_CERTS: TableDefinition<&str, (&[u8], &[u8])> = TableDefinition::new("apple_certs");
const APPLE_META: TableDefinition<&str, u64> = TableDefinition::new("apple_meta");

/// A certificate and its private key, kept under a name. The store does not
/// look inside: what they are for is the caller's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCert {
    pub name: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// One registered device. The token is its key: a token that shows up under
/// another account or user moves there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Lower-case hex, as APNs expects it in the request path.
    pub token: String,
    pub account_id: String,
    /// Lower-cased, so lookups ignore case the way Dovecot's users do.
    pub user: String,
    pub mailboxes: Vec<String>,
    /// Unix seconds of the last registration.
    pub registered_at: u64,
}

impl Device {
    /// Whether this device asked for pushes about `mailbox`. `INBOX` is
    /// case-insensitive in IMAP; other names are compared exactly.
    pub fn wants(&self, mailbox: &str) -> bool {
        self.mailboxes.iter().any(|m| {
            m == mailbox
                || (m.eq_ignore_ascii_case("INBOX") && mailbox.eq_ignore_ascii_case("INBOX"))
        })
    }
}

/// The stored form; the token lives in the key.
#[derive(Serialize, Deserialize)]
struct Record {
    account: String,
    user: String,
    mailboxes: Vec<String>,
    registered: u64,
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The file or its directory could not be prepared.
    Io(std::io::Error),
    /// redb refused: disk full, I/O error, corruption, lock held by another process.
    Db(redb::Error),
    /// A record that does not decode: written by something else, or damaged.
    BadRecord { token_len: usize },
    /// The store was written by a newer xapsd.
    NewerSchema(u64),
    /// Too many writes are already waiting for the writer thread.
    Busy,
    /// The writer thread has stopped (shutdown, or it died).
    Closed,
    /// The file is closed: reopening it after a write error failed, and the
    /// writer tries again later.
    NotOpen,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store file: {e}"),
            StoreError::Db(e) => write!(f, "store: {e}"),
            StoreError::BadRecord { token_len } => {
                write!(
                    f,
                    "store holds an unreadable record (key of {token_len} bytes)"
                )
            }
            StoreError::NewerSchema(v) => write!(
                f,
                "store has schema version {v}, newer than this xapsd understands ({SCHEMA_VERSION})"
            ),
            StoreError::Busy => f.write_str("store write queue is full"),
            StoreError::Closed => f.write_str("store is closed"),
            StoreError::NotOpen => {
                f.write_str("store file is not open: reopening it after a write error failed")
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Db(e.into())
    }
}

/// What a removal should respect: APNs may report a token dead at a time
/// before the device registered again, and then the fresh registration wins.
#[derive(Clone, Copy, Debug)]
pub enum RemoveIf {
    Always,
    RegisteredBefore(u64),
}

enum Op {
    Register(Device),
    /// Many registrations in one transaction: all or none.
    Import(Vec<Device>),
    Remove {
        token: String,
        condition: RemoveIf,
    },
    RemoveUser {
        user: String,
    },
    Sweep {
        cutoff: u64,
    },
    /// Replaces every stored certificate with these, in one transaction.
    PutCerts(Vec<StoredCert>),
    SetMeta {
        name: String,
        value: u64,
    },
}

/// What a write did, returned to the caller once it is durable.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Registered {
        evicted: usize,
    },
    Removed(usize),
    /// Certificates or a meta value were stored.
    Stored,
}

type Reply = async_channel::Sender<Result<Written, StoreError>>;

/// Sizes the store needs from the daemon's limits.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub cache_bytes: usize,
    pub queue_len: usize,
    pub max_batch: usize,
    pub max_devices_per_user: usize,
    /// Users whose devices are cached for notifies (0: no cache).
    pub device_cache_users: usize,
}

impl StoreLimits {
    /// For one-shot commands (admin tools, imports) and tests that open a
    /// stopped daemon's store: a small page cache and no device cache, since
    /// each user is read at most once.
    pub fn one_shot(max_devices_per_user: usize, max_batch: usize) -> StoreLimits {
        StoreLimits {
            cache_bytes: 256 * 1024,
            queue_len: 16,
            max_batch,
            max_devices_per_user,
            device_cache_users: 0,
        }
    }
}

/// Users whose devices a commit changed.
enum Touched {
    Users(Vec<String>),
    All,
}

impl Touched {
    /// Past this many users (a big import), clearing the cache is cheaper.
    const MAX_USERS: usize = 1024;

    fn user(&mut self, user: &str) {
        if let Touched::Users(users) = self {
            if users.len() >= Self::MAX_USERS {
                *self = Touched::All;
            } else {
                users.push(user.to_owned());
            }
        }
    }
}

/// The tables as of one commit, opened once and shared by readers.
struct Snapshot {
    devices: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    index: redb::ReadOnlyMultimapTable<&'static str, &'static str>,
}

impl Snapshot {
    fn open(db: &Database) -> Result<Snapshot, StoreError> {
        let txn = db.begin_read()?;
        Ok(Snapshot {
            devices: txn.open_table(DEVICES)?,
            index: txn.open_multimap_table(USER_DEVICES)?,
        })
    }

    fn devices_of(&self, user: &str) -> Result<Vec<Device>, StoreError> {
        let mut out = Vec::new();
        for token in self.index.get(user)? {
            let token = token?;
            if let Some(bytes) = self.devices.get(token.value())? {
                out.push(decode(token.value(), bytes.value())?);
            }
        }
        Ok(out)
    }
}

/// What a reader that missed the cache reads from.
struct Miss {
    /// Commits so far, to pass to [`DeviceCache::fill`].
    seen_commits: u64,
    snapshot: Option<Arc<Snapshot>>,
}

/// Recently read users' devices and the latest snapshot; see the module
/// comment for why neither can serve a stale answer.
struct DeviceCache {
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    by_user: HashMap<String, Arc<[Device]>>,
    /// Bumped by every commit, before its callers hear back.
    commits: u64,
    /// The tables as of the last commit; `None` if opening them failed.
    snapshot: Option<Arc<Snapshot>>,
}

impl DeviceCache {
    fn state(&self) -> MutexGuard<'_, CacheState> {
        // Nothing panics while holding it (panic=abort); in tests, carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached devices, or where to read them and the commit count to
    /// pass to [`fill`](Self::fill).
    fn get(&self, user: &str) -> Result<Arc<[Device]>, Miss> {
        let state = self.state();
        state.by_user.get(user).cloned().ok_or_else(|| Miss {
            seen_commits: state.commits,
            snapshot: state.snapshot.clone(),
        })
    }

    /// Caches what a read transaction begun after [`get`](Self::get) saw,
    /// unless a commit happened since: then the read may predate it.
    fn fill(&self, user: &str, seen_commits: u64, devices: &Arc<[Device]>) {
        if self.capacity == 0 {
            return;
        }
        let mut state = self.state();
        if state.commits != seen_commits {
            return;
        }
        if state.by_user.len() >= self.capacity && !state.by_user.contains_key(user) {
            // Full: drop an arbitrary entry (where the hash put it: random enough).
            if let Some(victim) = state.by_user.keys().next().cloned() {
                state.by_user.remove(&victim);
            }
        }
        state.by_user.insert(user.to_owned(), Arc::clone(devices));
    }

    /// Called by the writer after a commit, before replying, with the
    /// tables as of that commit; and after a reopen, with those of the
    /// reopened file (or none if it would not open).
    fn invalidate(&self, touched: &Touched, snapshot: Option<Snapshot>) {
        let snapshot = snapshot.map(Arc::new);
        let mut state = self.state();
        state.commits += 1;
        // The old one is released after the lock, by its last reader.
        let _old = std::mem::replace(&mut state.snapshot, snapshot);
        match touched {
            Touched::All => state.by_user.clear(),
            Touched::Users(users) => {
                for user in users {
                    state.by_user.remove(user);
                }
            }
        }
    }
}

/// The open file; the writer swaps in a new handle when it reopens it, and
/// it is `None` only while a reopen has failed.
type DbSlot = RwLock<Option<Database>>;

fn read_slot(slot: &DbSlot) -> RwLockReadGuard<'_, Option<Database>> {
    // Nothing panics while holding it (panic=abort); in tests, carry on.
    slot.read().unwrap_or_else(|e| e.into_inner())
}

fn write_slot(slot: &DbSlot) -> RwLockWriteGuard<'_, Option<Database>> {
    slot.write().unwrap_or_else(|e| e.into_inner())
}

/// Opens (or creates) the redb file, repairing it if it was not closed cleanly.
fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    // After a crash redb checks and repairs the file on open; say so once,
    // since it can take a while on a slow SD card.
    let repairing = std::sync::atomic::AtomicBool::new(false);
    Ok(redb::Builder::new()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |_| {
            if !repairing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!("store was not closed cleanly: checking and repairing it");
            }
        })
        .create(path)?)
}

/// Handle to the open store. Cloning shares it.
#[derive(Clone)]
pub struct Store {
    db: Arc<DbSlot>,
    ops: async_channel::Sender<(Op, Reply)>,
    writer: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    cache: Arc<DeviceCache>,
}

impl Store {
    /// Opens (or creates) the store at `path`, creating its directory 0700
    /// and the file 0600, and migrates the schema.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(StoreError::Io)?;
        }
        // redb would create the file with the process umask; registrations are
        // private, so create it ourselves first.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::Io)?;
        let db = open_db(path, limits.cache_bytes)?;
        init_schema(&db)?;
        let (ops, rx) = async_channel::bounded(limits.queue_len.max(1));
        let cache = Arc::new(DeviceCache {
            capacity: limits.device_cache_users,
            state: Mutex::new(CacheState {
                snapshot: Some(Arc::new(Snapshot::open(&db)?)),
                ..CacheState::default()
            }),
        });
        let db = Arc::new(RwLock::new(Some(db)));
        let mut writer = Writer {
            path: path.to_owned(),
            slot: Arc::clone(&db),
            cache: Arc::clone(&cache),
            limits,
            failing: None,
        };
        let writer = std::thread::Builder::new()
            .name("xapsd-store".into())
            .spawn(move || writer.run(&rx))
            .map_err(StoreError::Io)?;
        Ok(Store {
            db,
            ops,
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
            cache,
        })
    }

    /// Stores (or refreshes) a registration; returns once it is on disk.
    pub async fn register(&self, device: Device) -> Result<Written, StoreError> {
        self.write(Op::Register(device)).await
    }

    /// Stores many registrations in one transaction: if any fails, none is
    /// stored. Registering what is already stored changes nothing, so an
    /// import can be repeated.
    pub async fn import(&self, devices: Vec<Device>) -> Result<Written, StoreError> {
        self.write(Op::Import(devices)).await
    }

    /// Removes the device with this token, if the condition holds.
    pub async fn remove(&self, token: &str, condition: RemoveIf) -> Result<Written, StoreError> {
        self.write(Op::Remove {
            token: token.to_owned(),
            condition,
        })
        .await
    }

    /// Removes every device of a user.
    pub async fn remove_user(&self, user: &str) -> Result<Written, StoreError> {
        self.write(Op::RemoveUser {
            user: user.to_owned(),
        })
        .await
    }

    /// Removes devices last registered before `cutoff` (unix seconds).
    pub async fn sweep(&self, cutoff: u64) -> Result<Written, StoreError> {
        self.write(Op::Sweep { cutoff }).await
    }

    /// Replaces the stored certificates with `certs` (all or none); returns
    /// once they are on disk.
    pub async fn put_certs(&self, certs: Vec<StoredCert>) -> Result<Written, StoreError> {
        self.write(Op::PutCerts(certs)).await
    }

    /// Every stored certificate, ordered by name.
    pub fn certs(&self) -> Result<Vec<StoredCert>, StoreError> {
        let slot = self.slot();
        let txn = open(&slot)?.begin_read()?;
        let table = txn.open_table(APPLE_CERTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (name, value) = entry?;
            let (cert, key) = value.value();
            out.push(StoredCert {
                name: name.value().to_owned(),
                cert_der: cert.to_vec(),
                key_der: key.to_vec(),
            });
        }
        Ok(out)
    }

    /// Sets a named number durably (e.g. the time of the last request).
    pub async fn set_meta(&self, name: &str, value: u64) -> Result<Written, StoreError> {
        self.write(Op::SetMeta {
            name: name.to_owned(),
            value,
        })
        .await
    }

    /// A named number set with [`Store::set_meta`].
    pub fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let slot = self.slot();
        let txn = open(&slot)?.begin_read()?;
        let table = txn.open_table(APPLE_META)?;
        Ok(table.get(name)?.map(|v| v.value()))
    }

    async fn write(&self, op: Op) -> Result<Written, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.ops.try_send((op, reply)).map_err(|e| match e {
            async_channel::TrySendError::Full(_) => StoreError::Busy,
            async_channel::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        answer.recv().await.map_err(|_| StoreError::Closed)?
    }

    /// The devices registered for `user` (already lower-cased by the
    /// caller), from the cache when it has them: the notify path.
    pub fn devices_to_notify(&self, user: &str) -> Result<Arc<[Device]>, StoreError> {
        if let Ok(devices) = self.cache.get(user) {
            return Ok(devices);
        }
        // A miss reads the file: hold the handle so that a reopen waits for
        // this read, and this read for a reopen, rather than read a closed one.
        let slot = self.slot();
        let miss = match self.cache.get(user) {
            Ok(devices) => return Ok(devices),
            Err(miss) => miss,
        };
        let devices: Arc<[Device]> = match &miss.snapshot {
            Some(snapshot) => snapshot.devices_of(user)?,
            None => Snapshot::open(open(&slot)?)?.devices_of(user)?,
        }
        .into();
        self.cache.fill(user, miss.seen_commits, &devices);
        Ok(devices)
    }

    /// The devices registered for `user` (already lower-cased by the
    /// caller), read from the file.
    pub fn devices_for_user(&self, user: &str) -> Result<Vec<Device>, StoreError> {
        Snapshot::open(open(&self.slot())?)?.devices_of(user)
    }

    /// Every device, for admin listings.
    pub fn all_devices(&self) -> Result<Vec<Device>, StoreError> {
        let slot = self.slot();
        let txn = open(&slot)?.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in devices.iter()? {
            let (token, bytes) = entry?;
            out.push(decode(token.value(), bytes.value())?);
        }
        Ok(out)
    }

    /// Number of registered devices.
    pub fn device_count(&self) -> Result<u64, StoreError> {
        let slot = self.slot();
        let txn = open(&slot)?.begin_read()?;
        Ok(txn.open_table(DEVICES)?.len()?)
    }

    fn slot(&self) -> RwLockReadGuard<'_, Option<Database>> {
        read_slot(&self.db)
    }

    /// Stops the writer after it has finished what is queued. Later writes
    /// fail with [`StoreError::Closed`]; the file is closed when the last
    /// handle is dropped.
    pub fn close(&self) {
        self.ops.close();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

/// The handle in the slot, or why there is none.
fn open(slot: &Option<Database>) -> Result<&Database, StoreError> {
    slot.as_ref().ok_or(StoreError::NotOpen)
}

fn init_schema(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema(v)),
            // Migrations from older versions go here as the schema evolves.
            Some(_) => {}
        }
        txn.open_table(DEVICES)?;
        txn.open_multimap_table(USER_DEVICES)?;
        txn.open_table(APPLE_CERTS)?;
        txn.open_table(APPLE_META)?;
    }
    txn.commit()?;
    Ok(())
}

fn decode(token: &str, bytes: &[u8]) -> Result<Device, StoreError> {
    let bad = || StoreError::BadRecord {
        token_len: token.len(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    let r: Record = miniserde::json::from_str(text).map_err(|_| bad())?;
    Ok(Device {
        token: token.to_owned(),
        account_id: r.account,
        user: r.user,
        mailboxes: r.mailboxes,
        registered_at: r.registered,
    })
}

fn encode(d: &Device) -> String {
    miniserde::json::to_string(&Record {
        account: d.account_id.clone(),
        user: d.user.clone(),
        mailboxes: d.mailboxes.clone(),
        registered: d.registered_at,
    })
}

/// Whether redb latched the error: the handle refuses every later write
/// ([`redb::StorageError::PreviousIo`] after an I/O error) until the file is
/// closed and opened again.
fn needs_reopen(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Db(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed)
    )
}

/// Reopen delay after `reopens` reopens in one episode of failing writes.
fn reopen_backoff(reopens: u32) -> Duration {
    STORE_REOPEN_BACKOFF_MIN
        .saturating_mul(1 << reopens.min(16))
        .min(STORE_REOPEN_BACKOFF_MAX)
}

/// An episode of failing writes: from a write error that spent the handle
/// until a commit succeeds again.
struct Failing {
    /// What the last failure said; writes refused meanwhile are told it.
    reason: String,
    /// The handle is spent and is reopened at this time (writes before it
    /// are refused without touching the file).
    reopen_at: Option<Instant>,
    /// Reopens tried in this episode, for the backoff.
    reopens: u32,
}

/// The writer thread: group commits, and reopening the file when redb
/// gives up on its handle.
struct Writer {
    path: PathBuf,
    slot: Arc<DbSlot>,
    cache: Arc<DeviceCache>,
    limits: StoreLimits,
    failing: Option<Failing>,
}

impl Writer {
    fn run(&mut self, rx: &async_channel::Receiver<(Op, Reply)>) {
        let mut batch = Vec::with_capacity(self.limits.max_batch);
        loop {
            let reopen_at = self.failing.as_ref().and_then(|f| f.reopen_at);
            let first = match reopen_at {
                None => rx.recv_blocking().ok(),
                // Reopen on time even if no write comes, so readers get the
                // file back; a write that comes first waits no longer either.
                Some(at) => match async_io::block_on(futures_lite::future::or(
                    async { Some(rx.recv().await.ok()) },
                    async {
                        async_io::Timer::at(at).await;
                        None
                    },
                )) {
                    Some(op) => op,
                    None => {
                        self.reopen();
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < self.limits.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if reopen_at.is_some_and(|at| Instant::now() >= at) {
                self.reopen();
            }
            match self.failing.as_ref().filter(|f| f.reopen_at.is_some()) {
                // Spent handle, reopen not due yet: the write cannot land.
                Some(failing) => refuse(&mut batch, &failing.reason),
                None => self.commit(&mut batch),
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<(Op, Reply)>) {
        let slot = read_slot(&self.slot);
        let Ok(db) = open(&slot) else {
            drop(slot);
            return refuse(batch, &StoreError::NotOpen.to_string());
        };
        let mut touched = Touched::Users(Vec::new());
        match apply_batch(db, batch, self.limits, &mut touched) {
            Ok(results) => {
                // Before anyone hears back: after a 200, no reader sees the old devices.
                let snapshot = match Snapshot::open(db) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        log::warn!("store: cannot open the new state for readers: {e}");
                        None
                    }
                };
                self.cache.invalidate(&touched, snapshot);
                drop(slot);
                if self.failing.take().is_some() {
                    log::info!("store writes work again");
                }
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.try_send(Ok(result));
                }
            }
            Err(e) => {
                drop(slot);
                // Nothing of the batch was committed and the handle still
                // shows the last commit, so the snapshot and the cached lists
                // stay: notifies go on as before.
                let reason = e.to_string();
                if needs_reopen(&e) {
                    let now = Instant::now();
                    match &mut self.failing {
                        None => {
                            log::warn!("store writes failing: {reason}; retrying");
                            self.failing = Some(Failing {
                                reason: reason.clone(),
                                reopen_at: Some(now + reopen_backoff(0)),
                                reopens: 0,
                            });
                        }
                        Some(failing) => {
                            log::debug!("store writes still failing: {reason}");
                            failing.reason.clone_from(&reason);
                            failing.reopen_at = Some(now + reopen_backoff(failing.reopens));
                        }
                    }
                } else {
                    log::error!("store commit failed: {reason}");
                }
                refuse(batch, &reason);
            }
        }
    }

    /// Closes the spent handle and opens the file again. Readers wait for
    /// the swap only if they miss the cache; a failed open leaves no handle
    /// and is tried again after the backoff.
    fn reopen(&mut self) {
        let Some(failing) = self.failing.as_mut() else {
            return;
        };
        failing.reopens = failing.reopens.saturating_add(1);
        let mut slot = write_slot(&self.slot);
        if let Some(spent) = slot.take() {
            // Closing reports the latched error again; it is why we are here.
            if let Err(e) = spent.close() {
                log::debug!("store: closing the failed handle: {e}");
            }
        }
        match open_db(&self.path, self.limits.cache_bytes) {
            Ok(db) => {
                let snapshot = Snapshot::open(&db)
                    .map_err(|e| {
                        log::warn!("store: cannot open the reopened state for readers: {e}")
                    })
                    .ok();
                *slot = Some(db);
                // A commit whose fsync failed may have reached the file after
                // all: every cached list is read anew.
                self.cache.invalidate(&Touched::All, snapshot);
                failing.reopen_at = None;
                log::debug!("store file reopened");
            }
            Err(e) => {
                // The old snapshot cannot read a closed file; cached lists
                // are still those of the last commit and stay.
                self.cache.invalidate(&Touched::Users(Vec::new()), None);
                let wait = reopen_backoff(failing.reopens);
                failing.reopen_at = Some(Instant::now() + wait);
                log::debug!("store reopen failed: {e}; next try in {wait:?}");
            }
        }
    }
}

/// Answers every write of the batch with why it was not stored.
fn refuse(batch: &mut Vec<(Op, Reply)>, reason: &str) {
    for (_, reply) in batch.drain(..) {
        let _ = reply.try_send(Err(StoreError::Io(std::io::Error::other(
            reason.to_owned(),
        ))));
    }
}

fn apply_batch(
    db: &Database,
    batch: &[(Op, Reply)],
    limits: StoreLimits,
    touched: &mut Touched,
) -> Result<Vec<Written>, StoreError> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        results.push(apply(&txn, op, limits, touched)?);
    }
    txn.commit()?;
    Ok(results)
}

fn apply(
    txn: &WriteTransaction,
    op: &Op,
    limits: StoreLimits,
    touched: &mut Touched,
) -> Result<Written, StoreError> {
    match op {
        Op::PutCerts(certs) => {
            let mut table = txn.open_table(APPLE_CERTS)?;
            table.retain(|_, _| false)?;
            for cert in certs {
                table.insert(
                    cert.name.as_str(),
                    (cert.cert_der.as_slice(), cert.key_der.as_slice()),
                )?;
            }
            Ok(Written::Stored)
        }
        Op::SetMeta { name, value } => {
            txn.open_table(APPLE_META)?.insert(name.as_str(), *value)?;
            Ok(Written::Stored)
        }
        _ => apply_device_op(txn, op, limits, touched),
    }
}

fn apply_device_op(
    txn: &WriteTransaction,
    op: &Op,
    limits: StoreLimits,
    touched: &mut Touched,
) -> Result<Written, StoreError> {
    let mut devices = txn.open_table(DEVICES)?;
    let mut index = txn.open_multimap_table(USER_DEVICES)?;
    match op {
        Op::Register(device) => register(&mut devices, &mut index, device, limits, touched),
        Op::Import(list) => {
            let mut evicted_total = 0;
            for device in list {
                if let Written::Registered { evicted } =
                    register(&mut devices, &mut index, device, limits, touched)?
                {
                    evicted_total += evicted;
                }
            }
            Ok(Written::Registered {
                evicted: evicted_total,
            })
        }
        Op::Remove { token, condition } => {
            let Some(device) = devices
                .get(token.as_str())?
                .map(|b| decode(token, b.value()))
            else {
                return Ok(Written::Removed(0));
            };
            let device = device?;
            if let RemoveIf::RegisteredBefore(t) = condition {
                if device.registered_at > *t {
                    return Ok(Written::Removed(0));
                }
            }
            devices.remove(token.as_str())?;
            index.remove(device.user.as_str(), token.as_str())?;
            touched.user(&device.user);
            Ok(Written::Removed(1))
        }
        Op::RemoveUser { user } => {
            let tokens: Vec<String> = index
                .get(user.as_str())?
                .map(|t| t.map(|t| t.value().to_owned()))
                .collect::<Result<_, _>>()?;
            for token in &tokens {
                devices.remove(token.as_str())?;
            }
            index.remove_all(user.as_str())?;
            touched.user(user);
            Ok(Written::Removed(tokens.len()))
        }
        Op::Sweep { cutoff } => {
            let mut stale = Vec::new();
            for entry in devices.iter()? {
                let (token, bytes) = entry?;
                let device = decode(token.value(), bytes.value())?;
                if device.registered_at < *cutoff {
                    stale.push((device.user, device.token));
                }
            }
            for (user, token) in &stale {
                devices.remove(token.as_str())?;
                index.remove(user.as_str(), token.as_str())?;
            }
            if !stale.is_empty() {
                *touched = Touched::All;
            }
            Ok(Written::Removed(stale.len()))
        }
        // Not device operations; `apply` handles them.
        Op::PutCerts(_) | Op::SetMeta { .. } => Ok(Written::Stored),
    }
}

type Devices<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type Index<'t> = redb::MultimapTable<'t, &'static str, &'static str>;

fn register(
    devices: &mut Devices<'_>,
    index: &mut Index<'_>,
    device: &Device,
    limits: StoreLimits,
    touched: &mut Touched,
) -> Result<Written, StoreError> {
    let previous = devices
        .get(device.token.as_str())?
        .map(|b| decode(&device.token, b.value()));
    if let Some(previous) = previous {
        let previous = previous?;
        if previous.user != device.user {
            index.remove(previous.user.as_str(), device.token.as_str())?;
            touched.user(&previous.user);
        }
    }
    // Evictions below are this user's too.
    touched.user(&device.user);
    devices.insert(device.token.as_str(), encode(device).as_bytes())?;
    index.insert(device.user.as_str(), device.token.as_str())?;

    // A user with more devices than allowed loses the stalest ones.
    let mut evicted = 0;
    let count = index.get(device.user.as_str())?.len() as usize;
    if count > limits.max_devices_per_user {
        let mut owned: Vec<(u64, String)> = Vec::with_capacity(count);
        for token in index.get(device.user.as_str())? {
            let token = token?.value().to_owned();
            if let Some(bytes) = devices.get(token.as_str())? {
                owned.push((decode(&token, bytes.value())?.registered_at, token));
            }
        }
        owned.sort();
        for (_, token) in owned.into_iter().take(count - limits.max_devices_per_user) {
            devices.remove(token.as_str())?;
            index.remove(device.user.as_str(), token.as_str())?;
            evicted += 1;
        }
    }
    Ok(Written::Registered { evicted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits {
            cache_bytes: 1 << 20,
            queue_len: 64,
            max_batch: 16,
            max_devices_per_user: 3,
            device_cache_users: 2,
        }
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xapsd-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("db.redb")
    }

    fn device(token: &str, account: &str, user: &str, at: u64) -> Device {
        Device {
            token: token.into(),
            account_id: account.into(),
            user: user.into(),
            mailboxes: vec!["INBOX".into()],
            registered_at: at,
        }
    }

    #[test]
    fn token_moves_between_users_and_clones_are_kept() {
        let store = Store::open(&temp_path("move"), limits()).unwrap();
        async_io::block_on(async {
            store
                .register(device("aa", "acct", "alice", 1))
                .await
                .unwrap();
            // A phone restored from alice's backup: same account, new token.
            store
                .register(device("bb", "acct", "alice", 2))
                .await
                .unwrap();
            assert_eq!(store.devices_for_user("alice").unwrap().len(), 2);
            // Token aa now shows up under bob.
            store
                .register(device("aa", "acct2", "bob", 3))
                .await
                .unwrap();
        });
        let alice = store.devices_for_user("alice").unwrap();
        assert_eq!(
            alice.iter().map(|d| d.token.as_str()).collect::<Vec<_>>(),
            ["bb"]
        );
        assert_eq!(
            store.devices_for_user("bob").unwrap()[0].account_id,
            "acct2"
        );
        store.close();
    }

    #[test]
    fn removal_respects_a_newer_registration() {
        let store = Store::open(&temp_path("remove"), limits()).unwrap();
        async_io::block_on(async {
            store
                .register(device("aa", "a", "alice", 100))
                .await
                .unwrap();
            let kept = store
                .remove("aa", RemoveIf::RegisteredBefore(50))
                .await
                .unwrap();
            assert_eq!(kept, Written::Removed(0));
            let gone = store
                .remove("aa", RemoveIf::RegisteredBefore(100))
                .await
                .unwrap();
            assert_eq!(gone, Written::Removed(1));
        });
        assert!(store.devices_for_user("alice").unwrap().is_empty());
        store.close();
    }

    #[test]
    fn sweep_and_per_user_cap() {
        let store = Store::open(&temp_path("sweep"), limits()).unwrap();
        async_io::block_on(async {
            for (i, token) in ["a1", "a2", "a3", "a4"].iter().enumerate() {
                store
                    .register(device(token, "x", "alice", 10 + i as u64))
                    .await
                    .unwrap();
            }
            store.register(device("b1", "y", "bob", 5)).await.unwrap();
            assert_eq!(store.device_count().unwrap(), 4, "cap of 3 evicted a1");
            assert_eq!(
                store.sweep(12).await.unwrap(),
                Written::Removed(2),
                "b1 and a2"
            );
        });
        let mut left: Vec<String> = store
            .all_devices()
            .unwrap()
            .into_iter()
            .map(|d| d.token)
            .collect();
        left.sort();
        assert_eq!(left, ["a3", "a4"]);
        store.close();
    }

    #[test]
    fn reopens_with_data_and_refuses_newer_schema() {
        let path = temp_path("reopen");
        let store = Store::open(&path, limits()).unwrap();
        async_io::block_on(store.register(device("aa", "a", "alice", 1))).unwrap();
        store.close();
        drop(store);
        let store = Store::open(&path, limits()).unwrap();
        assert_eq!(store.device_count().unwrap(), 1);
        store.close();
        drop(store);

        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        match Store::open(&path, limits()) {
            Err(StoreError::NewerSchema(99)) => {}
            other => panic!("expected NewerSchema, got {:?}", other.err()),
        }
    }

    #[test]
    fn import_is_one_repeatable_write_under_the_cap() {
        let store = Store::open(&temp_path("import"), limits()).unwrap();
        let list: Vec<Device> = ["a1", "a2", "a3", "a4", "b1"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                device(
                    t,
                    "x",
                    if t.starts_with('a') { "alice" } else { "bob" },
                    i as u64,
                )
            })
            .collect();
        async_io::block_on(async {
            assert_eq!(
                store.import(list.clone()).await.unwrap(),
                Written::Registered { evicted: 1 },
                "alice's oldest goes past the cap of 3"
            );
            let first = store.all_devices().unwrap();
            assert_eq!(first.len(), 4);
            store.import(list).await.unwrap();
            assert_eq!(
                store.all_devices().unwrap(),
                first,
                "importing again changes nothing"
            );
        });
        store.close();
    }

    fn tokens(devices: &[Device]) -> Vec<&str> {
        let mut t: Vec<&str> = devices.iter().map(|d| d.token.as_str()).collect();
        t.sort();
        t
    }

    #[test]
    fn cached_devices_follow_every_committed_write() {
        let store = Store::open(&temp_path("cache"), limits()).unwrap();
        async_io::block_on(async {
            // "No devices" is cached too, and a registration replaces it.
            assert!(store.devices_to_notify("alice").unwrap().is_empty());
            store.register(device("a1", "x", "alice", 1)).await.unwrap();
            assert_eq!(tokens(&store.devices_to_notify("alice").unwrap()), ["a1"]);
            store.register(device("a2", "x", "alice", 2)).await.unwrap();
            assert_eq!(
                tokens(&store.devices_to_notify("alice").unwrap()),
                ["a1", "a2"]
            );
            store.remove("a1", RemoveIf::Always).await.unwrap();
            assert_eq!(tokens(&store.devices_to_notify("alice").unwrap()), ["a2"]);
            // A token moving to bob leaves alice's cached list.
            assert!(store.devices_to_notify("bob").unwrap().is_empty());
            store.register(device("a2", "y", "bob", 3)).await.unwrap();
            assert!(store.devices_to_notify("alice").unwrap().is_empty());
            assert_eq!(tokens(&store.devices_to_notify("bob").unwrap()), ["a2"]);
            store.remove_user("bob").await.unwrap();
            assert!(store.devices_to_notify("bob").unwrap().is_empty());
            store
                .import(vec![device("c1", "z", "carol", 4)])
                .await
                .unwrap();
            assert_eq!(tokens(&store.devices_to_notify("carol").unwrap()), ["c1"]);
            store.sweep(5).await.unwrap();
            assert!(store.devices_to_notify("carol").unwrap().is_empty());
            // Past the cap of 3 the oldest goes, in the cache too.
            for (i, t) in ["d1", "d2", "d3", "d4"].iter().enumerate() {
                store
                    .register(device(t, "w", "dave", 10 + i as u64))
                    .await
                    .unwrap();
                assert_eq!(
                    store.devices_to_notify("dave").unwrap().len(),
                    (i + 1).min(3)
                );
            }
            assert_eq!(
                tokens(&store.devices_to_notify("dave").unwrap()),
                ["d2", "d3", "d4"]
            );
        });
        store.close();
    }

    fn missed(cache: &DeviceCache, user: &str) -> u64 {
        match cache.get(user) {
            Ok(_) => panic!("{user} is cached"),
            Err(miss) => miss.seen_commits,
        }
    }

    #[test]
    fn a_read_that_raced_a_commit_is_not_cached() {
        let cache = DeviceCache {
            capacity: 2,
            state: Mutex::default(),
        };
        let old: Arc<[Device]> = vec![device("aa", "x", "alice", 1)].into();
        // Reader misses and starts reading; a commit for alice lands before
        // the reader comes back with what it read.
        let seen = missed(&cache, "alice");
        cache.invalidate(&Touched::Users(vec!["alice".into()]), None);
        cache.fill("alice", seen, &old);
        assert!(cache.get("alice").is_err(), "stale read was cached");
        // A read begun after the commit is cached; capacity holds.
        let seen = missed(&cache, "alice");
        cache.fill("alice", seen, &old);
        assert_eq!(cache.get("alice").map(|d| d.len()).ok(), Some(1));
        for user in ["bob", "carol", "dave"] {
            let seen = missed(&cache, user);
            cache.fill(user, seen, &old);
        }
        assert_eq!(cache.state().by_user.len(), 2);
        cache.invalidate(&Touched::All, None);
        assert!(cache.state().by_user.is_empty());
    }

    #[test]
    fn cache_filled_during_a_commit_is_never_stale() {
        // A reader races the writer; after each write returns, the cache
        // must already show it, whatever the reader filled meanwhile.
        let store = Store::open(
            &temp_path("cache-race"),
            StoreLimits {
                max_devices_per_user: 64,
                ..limits()
            },
        )
        .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for user in ["alice", "bob", "carol"] {
                        store.devices_to_notify(user).unwrap();
                        reads += 1;
                    }
                }
                reads
            })
        };
        async_io::block_on(async {
            for i in 0..40u64 {
                let token = format!("{i:02x}");
                let user = ["alice", "bob", "carol"][i as usize % 3];
                store.register(device(&token, "x", user, i)).await.unwrap();
                assert!(
                    tokens(&store.devices_to_notify(user).unwrap()).contains(&token.as_str()),
                    "registration {i} not visible"
                );
                if i % 2 == 1 {
                    store.remove(&token, RemoveIf::Always).await.unwrap();
                    assert!(
                        !tokens(&store.devices_to_notify(user).unwrap()).contains(&token.as_str()),
                        "removal {i} not visible"
                    );
                }
            }
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        store.close();
    }

    #[test]
    fn certificates_and_meta_survive_a_reopen_and_are_replaced_whole() {
        let path = temp_path("certs");
        let store = Store::open(&path, limits()).unwrap();
        let cert = |name: &str, n: u8| StoredCert {
            name: name.into(),
            cert_der: vec![n; 3],
            key_der: vec![n + 1; 2],
        };
        assert_eq!(store.meta("last_request").unwrap(), None);
        async_io::block_on(async {
            store
                .put_certs(vec![cert("b", 1), cert("a", 2)])
                .await
                .unwrap();
            store.set_meta("last_request", 1234).await.unwrap();
        });
        store.close();
        drop(store);
        let store = Store::open(&path, limits()).unwrap();
        assert_eq!(store.certs().unwrap(), vec![cert("a", 2), cert("b", 1)]);
        assert_eq!(store.meta("last_request").unwrap(), Some(1234));
        async_io::block_on(store.put_certs(vec![cert("c", 5)])).unwrap();
        assert_eq!(store.certs().unwrap(), vec![cert("c", 5)]);
        store.close();
    }

    #[test]
    fn reopens_back_off_doubling_up_to_the_bound() {
        assert_eq!(reopen_backoff(0), STORE_REOPEN_BACKOFF_MIN);
        assert_eq!(reopen_backoff(1), STORE_REOPEN_BACKOFF_MIN * 2);
        assert_eq!(reopen_backoff(3), STORE_REOPEN_BACKOFF_MIN * 8);
        assert_eq!(reopen_backoff(u32::MAX), STORE_REOPEN_BACKOFF_MAX);
        assert!(needs_reopen(&StoreError::Db(redb::Error::PreviousIo)));
        assert!(!needs_reopen(&StoreError::BadRecord { token_len: 2 }));
    }

    #[test]
    fn inbox_matches_without_case() {
        let mut d = device("aa", "a", "alice", 1);
        d.mailboxes = vec!["Inbox".into(), "Sent Messages".into()];
        assert!(d.wants("INBOX"));
        assert!(d.wants("Sent Messages"));
        assert!(!d.wants("sent messages"));
    }
}
