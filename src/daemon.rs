//! Wires the parts together and runs them on smol until a signal says stop.
//!
//! One executor thread serves the plugin connections; a second one runs the
//! dispatcher and the APNs connection, so a burst of APNs answers (up to a
//! hundred streams completing at once) never queues in front of a plugin's
//! notify; the store has its own writer thread so an fsync never stalls
//! either.

use std::fmt;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_executor::{Executor, Task};
use async_io::{Async, Timer};
use log::LevelFilter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::apns::connection::root_store;
use crate::apns::ApnsClient;
use crate::auth::{AuthError, AuthSetting, PluginAuth};
use crate::clock::{ExpiryClock, Step};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::identity::pem::PemIdentity;
use crate::identity::token::TokenIdentity;
use crate::identity::{assess, describe, Finding, IdentityError, IdentitySlot, PushIdentity};
use crate::limits::Limits;
use crate::metrics::Sources;
use crate::plugin::http::HttpFrontEnd;
use crate::plugin::legacy::{self, LegacyFrontEnd, SocketError};
use crate::plugin::FrontEndStats;
use crate::privileges::{self, Plan, PrivilegeError, Target};
use crate::secrets::{self, SecretFileError};
use crate::service::Service;
use crate::store::{Store, StoreError, StoreLimits};

/// Why the daemon could not start (or had to stop).
#[derive(Debug)]
pub enum DaemonError {
    Identity(IdentityError),
    Store(PathBuf, StoreError),
    Bind(std::net::SocketAddr, std::io::Error),
    NothingBound,
    CaFile(PathBuf, String),
    Signals(std::io::Error),
    Thread(std::io::Error),
    LegacySocket(SocketError),
    PluginAuth(AuthError),
    Privileges(PrivilegeError),
    SecretFile(SecretFileError),
    TlsListener(PathBuf, String),
    /// `XAPSD_TEST_TIMEOUTS` could not be read.
    TestHook(String),
    Budget(crate::limits::BudgetError),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Identity(e) => write!(f, "push identity: {e}"),
            DaemonError::Store(path, e) => write!(f, "cannot open store {}: {e}", path.display()),
            DaemonError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            DaemonError::NothingBound => f.write_str("no listen address could be bound"),
            DaemonError::CaFile(path, e) => write!(f, "apns_ca_file {}: {e}", path.display()),
            DaemonError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            DaemonError::Thread(e) => write!(f, "cannot start the APNs thread: {e}"),
            DaemonError::LegacySocket(e) => write!(f, "legacy_socket: {e}"),
            DaemonError::PluginAuth(e) => write!(f, "plugin_auth: {e}"),
            DaemonError::Privileges(e) => f.write_str(&e.to_string()),
            DaemonError::SecretFile(e) => f.write_str(&e.to_string()),
            DaemonError::TlsListener(path, e) => write!(f, "TLS listener: {}: {e}", path.display()),
            DaemonError::TestHook(e) => write!(f, "{}: {e}", crate::limits::TEST_TIMEOUTS_ENV),
            DaemonError::Budget(e) => write!(f, "memory_budget_kib: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// simplelog to stderr (procd, OpenRC and journald capture it), our crate only.
pub fn init_logging(level: LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .add_filter_allow_str("xapsd")
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    let _ = simplelog::WriteLogger::init(level, config, std::io::stderr());
}

/// Loads the configured identity; `None` means dry run. The config was
/// validated, so at most one kind is set.
pub fn load_identity(
    config: &Config,
    limits: &Limits,
) -> Result<Option<Arc<dyn PushIdentity>>, IdentityError> {
    if let (Some(cert), Some(key)) = (&config.cert_file, config.key_path()) {
        return Ok(Some(Arc::new(PemIdentity::load(cert, key)?)));
    }
    if let Some(p12) = &config.p12_file {
        return load_p12(p12, config.p12_password_file.as_deref());
    }
    if let (Some(p8), Some(key_id), Some(team_id), Some(topic)) = (
        &config.p8_file,
        &config.key_id,
        &config.team_id,
        &config.topic,
    ) {
        return Ok(Some(Arc::new(
            TokenIdentity::load(p8, key_id, team_id, topic)?.with_limits(limits),
        )));
    }
    Ok(None)
}

#[cfg(feature = "pkcs12")]
fn load_p12(
    p12: &std::path::Path,
    password: Option<&std::path::Path>,
) -> Result<Option<Arc<dyn PushIdentity>>, IdentityError> {
    Ok(Some(Arc::new(crate::identity::p12::load(p12, password)?)))
}

#[cfg(not(feature = "pkcs12"))]
fn load_p12(
    _p12: &std::path::Path,
    _password: Option<&std::path::Path>,
) -> Result<Option<Arc<dyn PushIdentity>>, IdentityError> {
    Err(IdentityError::P12Unsupported)
}

fn store_limits(limits: &Limits) -> StoreLimits {
    StoreLimits {
        cache_bytes: limits.store_cache_bytes,
        queue_len: limits.store_queue_len,
        max_batch: limits.max_store_batch,
        max_devices_per_user: limits.max_devices_per_user,
        device_cache_users: limits.device_cache_users,
    }
}

fn report_identity(identity: &dyn PushIdentity) {
    let now = crate::clock::unix_now() as i64;
    log::info!("{}", describe(identity, now));
    for finding in assess(identity, now) {
        match finding {
            Finding::Warning(w) => log::warn!("{w}"),
            Finding::Unusable(u) => log::error!("{u}"),
        }
    }
}

/// The bounds of this run: derived from `memory_budget_kib` (validated with
/// the config), with the test hook's timeouts when it is set.
fn limits_for(config: &Config) -> Result<Limits, DaemonError> {
    let limits = Limits::from_budget(config.memory_budget_kib).map_err(DaemonError::Budget)?;
    match std::env::var(crate::limits::TEST_TIMEOUTS_ENV) {
        Ok(spec) => {
            log::warn!(
                "test hook {} in force: {spec}",
                crate::limits::TEST_TIMEOUTS_ENV
            );
            limits
                .with_test_timeouts(&spec)
                .map_err(DaemonError::TestHook)
        }
        Err(_) => Ok(limits),
    }
}

/// `xapsd check-config`: prints what would be in force; non-zero if unusable.
pub fn check_config(mut config: Config) -> i32 {
    let why = config.resolve_db();
    let limits = match limits_for(&config) {
        Ok(l) => l,
        Err(e) => {
            println!("UNUSABLE: {e}");
            return 1;
        }
    };
    println!(
        "listen: {:?}",
        config
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    if let Some(db) = &config.db {
        println!(
            "db: {}{}",
            db.display(),
            why.map(|w| format!(" ({w})")).unwrap_or_default()
        );
    }
    println!("apns_endpoint: {}", config.apns_endpoint);
    if config.tls_listen.is_empty() {
        println!("tls_listen: off");
    } else {
        let addrs: Vec<String> = config.tls_listen.iter().map(ToString::to_string).collect();
        println!("tls_listen: {addrs:?}");
        if let Err(e) = tls_acceptor(&config) {
            println!("UNUSABLE: {e}");
            return 1;
        }
    }
    if let Err(e) = secrets::check(&config) {
        println!("UNUSABLE: {e}");
        return 1;
    }
    match &config.legacy_socket {
        Some(path) => println!(
            "legacy_socket: {} (mode {:04o}, group {})",
            path.display(),
            config.legacy_socket_mode,
            config
                .legacy_socket_group
                .as_deref()
                .unwrap_or("of the daemon")
        ),
        None => println!("legacy_socket: off"),
    }
    match &config.plugin_auth {
        Some(setting) => match PluginAuth::load(setting) {
            Ok(_) => println!("plugin_auth: HTTP Basic, {}", describe_auth(setting)),
            Err(e) => {
                println!("plugin_auth: UNUSABLE: {e}");
                return 1;
            }
        },
        None => println!("plugin_auth: off (no credentials needed)"),
    }
    // Depends on who starts the daemon, not on the config alone: reported
    // for this user, and no reason to fail the check.
    match privilege_plan(&config) {
        Ok(Plan::NotRoot) => println!("privileges: not root, nothing to drop"),
        Ok(Plan::StayRoot) => println!("privileges: stays root (allow_root)"),
        Ok(Plan::Drop { user, uid, gid }) => {
            println!("privileges: switches to {user} (uid {uid}, gid {gid}) after start")
        }
        Err(e) => println!("warning: run as root, the daemon would stop: {e}"),
    }
    println!(
        "delay_secs: {}, expire_days: {}",
        config.delay_secs, config.expire_days
    );
    println!("{}", limits.describe());
    if config.apple_id.is_some() {
        return check_apple_id(&config);
    }
    match load_identity(&config, &limits) {
        Ok(Some(identity)) => print_identity(identity.as_ref()),
        Ok(None) => {
            println!("push identity: none (dry run: pushes are logged, not sent)");
            0
        }
        Err(e) => {
            println!("push identity: UNUSABLE: {e}");
            1
        }
    }
}

/// `check-config`'s identity lines; 1 when the identity is unusable.
fn print_identity(identity: &dyn PushIdentity) -> i32 {
    let now = crate::clock::unix_now() as i64;
    println!("{}", describe(identity, now));
    let mut code = 0;
    for finding in assess(identity, now) {
        match finding {
            Finding::Warning(w) => println!("warning: {w}"),
            Finding::Unusable(u) => {
                println!("push identity: UNUSABLE: {u}");
                code = 1;
            }
        }
    }
    code
}

/// `check-config` for the Apple-ID identity: the vendor files, and the
/// certificate in the store if the store exists and is free (a running
/// daemon holds it; its startup log has the same line).
#[cfg(feature = "apple-id")]
fn check_apple_id(config: &Config) -> i32 {
    use crate::identity::apple_id;
    let Some(apple) = config.apple_id_config() else {
        return 1;
    };
    println!(
        "apple_id: {}, certificate service {}{}, at most one request per {} hours",
        crate::privacy::Short(&apple.apple_id),
        apple.service_url.host,
        apple.service_url.path,
        apple.request_interval.as_secs() / 3600
    );
    if let Err(e) = apple_id::csr::Vendor::load(&apple.vendor_key_file, &apple.vendor_chain_file) {
        println!("push identity: UNUSABLE: {e}");
        return 1;
    }
    let Some(db) = config.db.as_deref().filter(|db| db.exists()) else {
        println!(
            "push identity: {}, none stored yet (the daemon asks Apple at start)",
            apple_id::KIND
        );
        return 0;
    };
    let store = match Store::open(db, store_limits(&Limits::default())) {
        Ok(store) => store,
        Err(e) => {
            println!(
                "push identity: {}, store not readable now ({e}); see the daemon's startup log",
                apple_id::KIND
            );
            return 0;
        }
    };
    let found = store
        .certs()
        .map_err(apple_id::AppleIdError::Store)
        .and_then(|c| apple_id::stored_identity(&c));
    let last = store.meta(apple_id::LAST_REQUEST).ok().flatten();
    store.close();
    if let Some(last) = last {
        println!(
            "apple_id: last request to Apple {}",
            crate::clock::format_utc_minute(last as i64)
        );
    }
    match found {
        Ok(Some(identity)) => print_identity(&identity),
        Ok(None) => {
            println!(
                "push identity: {}, none stored yet (the daemon asks Apple at start)",
                apple_id::KIND
            );
            0
        }
        Err(e) => {
            println!("push identity: UNUSABLE: {e}");
            1
        }
    }
}

#[cfg(not(feature = "apple-id"))]
fn check_apple_id(_config: &Config) -> i32 {
    // Config validation refuses apple_id in such a build.
    1
}

/// Reads `plugin_auth` (once, at start) and says what it guards.
fn load_auth(config: &Config) -> Result<Option<PluginAuth>, DaemonError> {
    let Some(setting) = &config.plugin_auth else {
        return Ok(None);
    };
    let auth = PluginAuth::load(setting).map_err(DaemonError::PluginAuth)?;
    log::info!(
        "plugin requests need HTTP Basic credentials ({})",
        describe_auth(setting)
    );
    Ok(Some(auth))
}

fn describe_auth(setting: &AuthSetting) -> String {
    match setting {
        AuthSetting::Inline(_) => "from the config".into(),
        AuthSetting::File(path) => format!("from {}", path.display()),
    }
}

fn bind_all(config: &Config) -> Result<Vec<Async<TcpListener>>, DaemonError> {
    // The default binds both loopbacks; a box without IPv6 still starts.
    let tolerant = config.listen == Config::default().listen;
    let mut bound = Vec::new();
    for addr in &config.listen {
        match TcpListener::bind(addr).and_then(Async::new) {
            Ok(listener) => {
                let local = listener.get_ref().local_addr().unwrap_or(*addr);
                log::info!("listening on {local}");
                warn_if_open(config, local);
                bound.push(listener);
            }
            Err(e) if tolerant => log::warn!("cannot listen on {addr}: {e} (skipped)"),
            Err(e) => return Err(DaemonError::Bind(*addr, e)),
        }
    }
    if bound.is_empty() {
        return Err(DaemonError::NothingBound);
    }
    Ok(bound)
}

/// Off loopback and without `plugin_auth`, anyone who reaches the port can
/// register devices and trigger pushes: allowed (a firewall may guard it),
/// but said at start.
fn warn_if_open(config: &Config, local: std::net::SocketAddr) {
    if config.plugin_auth.is_none() && !local.ip().is_loopback() {
        log::warn!(
            "plugin API open on non-loopback {local} without plugin_auth: any host that reaches it can register devices"
        );
    }
}

/// Binds the TLS plugin listeners; every address must bind.
fn bind_tls(config: &Config) -> Result<Vec<Async<TcpListener>>, DaemonError> {
    let mut bound = Vec::new();
    for addr in &config.tls_listen {
        let listener = TcpListener::bind(addr)
            .and_then(Async::new)
            .map_err(|e| DaemonError::Bind(*addr, e))?;
        let local = listener.get_ref().local_addr().unwrap_or(*addr);
        log::info!("plugin API over TLS at {local}");
        warn_if_open(config, local);
        bound.push(listener);
    }
    Ok(bound)
}

/// The TLS listener's server side: ring only, TLS 1.2 and 1.3, no client
/// certificates (the plugin authenticates with `plugin_auth`).
fn tls_acceptor(config: &Config) -> Result<Option<futures_rustls::TlsAcceptor>, DaemonError> {
    use rustls::pki_types::PrivateKeyDer;
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| DaemonError::TlsListener(cert_path.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(DaemonError::TlsListener(
            cert_path.clone(),
            "holds no PEM certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| DaemonError::TlsListener(key_path.clone(), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| DaemonError::TlsListener(key_path.clone(), e.to_string()))?;
    Ok(Some(futures_rustls::TlsAcceptor::from(Arc::new(server))))
}

fn extra_anchors(config: &Config) -> Result<Vec<CertificateDer<'static>>, DaemonError> {
    let Some(path) = &config.apns_ca_file else {
        return Ok(Vec::new());
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| DaemonError::CaFile(path.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(DaemonError::CaFile(
            path.clone(),
            "holds no PEM certificate".into(),
        ));
    }
    Ok(certs)
}

/// What to do about root, from the config and who we are.
fn privilege_plan(config: &Config) -> Result<Plan, PrivilegeError> {
    let target = Target {
        user: config.daemon_user.clone(),
        group: config.daemon_group.clone(),
    };
    let plan = privileges::decide(
        nix::unistd::geteuid(),
        &target,
        config.allow_root,
        privileges::resolve,
    );
    // Packages create the `xapsd` account; a root user trying xapsd from a
    // checkout has none. With nothing configured, run as `nobody` rather
    // than refuse (or stay root), and say how to do better.
    match plan {
        Err(PrivilegeError::NoSuchUser(name))
            if name == crate::config::DEFAULT_USER && target.group.is_none() =>
        {
            log::warn!(
                "user `{name}` does not exist: running as `nobody`; create `{name}` (e.g. `useradd --system {name}`) for an account of its own"
            );
            let nobody = Target {
                user: FALLBACK_USER.to_owned(),
                group: None,
            };
            privileges::decide(nix::unistd::geteuid(), &nobody, false, privileges::resolve)
        }
        other => other,
    }
}

/// Who a root-started daemon runs as when the default account is missing.
const FALLBACK_USER: &str = "nobody";

/// Hands what the daemon must still write to the account, then switches.
fn drop_privileges(
    plan: &Plan,
    config: &Config,
    db_path: &std::path::Path,
    created_db_dir: bool,
) -> Result<(), PrivilegeError> {
    match plan {
        Plan::NotRoot => log::debug!("not started as root: no privileges to drop"),
        Plan::StayRoot => log::warn!("running as root: allow_root is set"),
        Plan::Drop { user, uid, gid } => {
            privileges::give(db_path, *uid, *gid)?;
            if created_db_dir {
                if let Some(dir) = db_path.parent() {
                    privileges::give(dir, *uid, *gid)?;
                }
            }
            if let Some(socket) = &config.legacy_socket {
                // The configured socket group stays; otherwise "the daemon's
                // group" is the one it runs as from now on.
                let group = config.legacy_socket_group.is_none().then_some(*gid);
                nix::unistd::chown(socket, Some(*uid), group).map_err(|source| {
                    PrivilegeError::Chown {
                        path: socket.clone(),
                        source,
                    }
                })?;
            }
            privileges::drop_to(*uid, *gid)?;
            log::info!("dropped root privileges: running as {user} (uid {uid}, gid {gid})");
        }
    }
    Ok(())
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(mut config: Config) -> Result<(), DaemonError> {
    // Whatever the daemon creates (store, its directory) is its own.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    log::info!("xapsd {} starting", env!("CARGO_PKG_VERSION"));
    // Before anything else: a missing account must not cost a half start.
    let plan = privilege_plan(&config).map_err(DaemonError::Privileges)?;
    secrets::check(&config).map_err(DaemonError::SecretFile)?;
    let limits = Arc::new(limits_for(&config)?);
    let why = config.resolve_db();
    let db_path = config.db.clone().unwrap_or_default();
    if let Some(why) = why {
        log::info!("store: {} ({why})", db_path.display());
    }

    let identity = load_identity(&config, &limits).map_err(DaemonError::Identity)?;
    match &identity {
        Some(identity) => report_identity(identity.as_ref()),
        // Its certificates are in the store, reported once it is open.
        None if config.apple_id.is_some() => {}
        None => log::warn!("no push identity configured: dry run, pushes are logged and not sent"),
    }
    let slot = IdentitySlot::new(identity);
    let anchors = extra_anchors(&config)?;
    let auth = load_auth(&config)?;
    let tls = tls_acceptor(&config)?;

    let created_db_dir = db_path
        .parent()
        .is_some_and(|d| !d.as_os_str().is_empty() && !d.exists());
    let store = Store::open(&db_path, store_limits(&limits))
        .map_err(|e| DaemonError::Store(db_path.clone(), e))?;
    log::info!(
        "store open: {} device(s) registered",
        store.device_count().unwrap_or(0)
    );
    #[cfg(feature = "apple-id")]
    let renewer = apple_id_renewer(&config, &store, &slot, &anchors);
    // The legacy socket first: once the TCP listeners say "listening on",
    // every front end is up.
    let legacy_socket = match &config.legacy_socket {
        Some(path) => {
            let bound = legacy::bind(
                path,
                config.legacy_socket_mode,
                config.legacy_socket_group.as_deref(),
            )
            .map_err(DaemonError::LegacySocket)?;
            log::info!(
                "legacy plugin socket at {} (mode {:04o})",
                path.display(),
                config.legacy_socket_mode
            );
            Some(bound)
        }
        None => None,
    };
    let listeners = bind_all(&config)?;
    let tls_listeners = bind_tls(&config)?;
    drop_privileges(&plan, &config, &db_path, created_db_dir).map_err(DaemonError::Privileges)?;

    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(DaemonError::Signals)?;
    // A file-size limit (RLIMIT_FSIZE from the init system, a quota) must
    // fail the store's write with EFBIG, answered 503, rather than kill the
    // daemon with SIGXFSZ's default action.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .map_err(DaemonError::Signals)?;
    let signal_handle = signals.handle();
    let (signal_tx, signal_rx) = async_channel::bounded::<i32>(8);
    let signal_thread = std::thread::Builder::new()
        .name("xapsd-signals".into())
        .spawn(move || {
            let mut signals = signals;
            for signal in signals.forever() {
                if signal_tx.send_blocking(signal).is_err() {
                    break;
                }
            }
        })
        .map_err(DaemonError::Signals)?;

    let executor = Arc::new(Executor::new());
    let apns_executor = Arc::new(Executor::new());
    let (apns_stop, apns_stopped) = async_channel::bounded::<()>(1);
    let apns_thread = std::thread::Builder::new()
        .name("xapsd-apns".into())
        .spawn({
            let apns_executor = Arc::clone(&apns_executor);
            move || {
                async_io::block_on(apns_executor.run(async {
                    let _ = apns_stopped.recv().await;
                }))
            }
        })
        .map_err(DaemonError::Thread)?;
    let apns = ApnsClient::new(
        config.apns_endpoint.clone(),
        root_store(&anchors),
        slot.clone(),
        Arc::clone(&limits),
        Arc::clone(&apns_executor),
    );
    let dispatcher = Dispatcher::new(
        store.clone(),
        apns.clone(),
        Arc::clone(&apns_executor),
        Arc::clone(&limits),
        Duration::from_secs(config.delay_secs),
    );
    let service = Arc::new(Service::new(
        store.clone(),
        dispatcher.clone(),
        slot.clone(),
        Arc::clone(&limits),
    ));
    let (legacy_listener, legacy_file) = legacy_socket.unzip();
    let http_stats = Arc::new(FrontEndStats::default());
    let legacy_stats = legacy_listener
        .as_ref()
        .map(|_| Arc::new(FrontEndStats::default()));
    let report = Arc::new(Sources {
        store: store.clone(),
        identity: slot.clone(),
        apns,
        dispatcher: dispatcher.clone(),
        http: Arc::clone(&http_stats),
        legacy: legacy_stats.clone(),
    });
    let http = Arc::new(HttpFrontEnd {
        service: Arc::clone(&service),
        limits: Arc::clone(&limits),
        stats: http_stats,
        executor: Arc::clone(&executor),
        report,
        auth,
        buffers: crate::plugin::http::BufferPool::new(limits.request_buffer_pool),
    });
    let legacy = Arc::new(LegacyFrontEnd {
        service,
        limits: Arc::clone(&limits),
        stats: legacy_stats.unwrap_or_default(),
        executor: Arc::clone(&executor),
    });

    let main = async {
        let mut accepting: Vec<Task<()>> = listeners
            .into_iter()
            .map(|l| executor.spawn(Arc::clone(&http).serve(l, None)))
            .collect();
        for listener in tls_listeners {
            accepting.push(executor.spawn(Arc::clone(&http).serve(listener, tls.clone())));
        }
        if let Some(listener) = legacy_listener {
            accepting.push(executor.spawn(Arc::clone(&legacy).serve(listener)));
        }
        let timers = apns_executor.spawn({
            let d = dispatcher.clone();
            async move { d.run_timers().await }
        });
        let sender = apns_executor.spawn({
            let d = dispatcher.clone();
            async move { d.run_sender().await }
        });
        #[cfg(feature = "apple-id")]
        let renewing = renewer.map(|r| executor.spawn(r.run()));
        let sweeper = executor.spawn(sweep_forever(
            store.clone(),
            config.expire_days,
            limits.expiry_sweep_interval,
        ));
        log::info!("ready");

        while let Ok(signal) = signal_rx.recv().await {
            if signal == SIGHUP {
                reload(&config, &limits, &slot);
            } else {
                log::info!("signal {signal}: shutting down");
                break;
            }
        }
        drop(accepting); // stop accepting; open connections end with the executor
        sweeper.cancel().await;
        #[cfg(feature = "apple-id")]
        if let Some(task) = renewing {
            task.cancel().await;
        }
        dispatcher.shutdown(limits.shutdown_grace).await;
        timers.cancel().await;
        sender.cancel().await;
    };
    async_io::block_on(executor.run(main));
    apns_stop.close();
    let _ = apns_thread.join();

    store.close();
    drop(legacy_file); // removes the socket file
    signal_handle.close();
    let _ = signal_thread.join();
    log::info!("stopped");
    Ok(())
}

/// Puts the stored Apple-ID certificate in force and makes the task that
/// requests and renews certificates, when `apple_id` is configured.
#[cfg(feature = "apple-id")]
fn apple_id_renewer(
    config: &Config,
    store: &Store,
    slot: &IdentitySlot,
    anchors: &[CertificateDer<'static>],
) -> Option<crate::identity::apple_id::Renewer> {
    use crate::identity::apple_id;
    let apple = config.apple_id_config()?;
    if let Err(e) = apple_id::csr::Vendor::load(&apple.vendor_key_file, &apple.vendor_chain_file) {
        log::error!("Apple-ID certificates cannot be requested: {e}");
    }
    match store.certs().map_err(apple_id::AppleIdError::Store).and_then(|c| apple_id::stored_identity(&c)) {
        Ok(Some(identity)) => {
            report_identity(&identity);
            slot.replace(Arc::new(identity));
        }
        Ok(None) => log::warn!(
            "no Apple-ID certificate stored yet: dry run until Apple's certificate service issues one"
        ),
        Err(e) => log::error!("the stored Apple-ID certificate is unusable: {e}; dry run"),
    }
    let tls = match apple_id::service::tls_config(root_store(anchors)) {
        Ok(tls) => tls,
        Err(e) => {
            log::error!("Apple-ID certificate service: TLS setup failed: {e}");
            return None;
        }
    };
    Some(apple_id::Renewer::new(
        apple,
        store.clone(),
        slot.clone(),
        tls,
    ))
}

/// SIGHUP: reload the identity files; on failure keep the one in force.
fn reload(config: &Config, limits: &Limits, slot: &IdentitySlot) {
    match load_identity(config, limits) {
        Ok(Some(identity)) => {
            report_identity(identity.as_ref());
            let topic = identity.topic().to_owned();
            if let Some(previous) = slot.get().1 {
                identity.adopt(previous.as_ref());
            }
            let old = slot.replace(identity);
            log::info!("SIGHUP: push identity reloaded; queued pushes continue with it");
            if old.is_some_and(|old| old != topic) {
                log::warn!(
                    "the push topic changed: devices must register again before they get pushes"
                );
            }
        }
        Ok(None) if config.apple_id.is_some() => {
            log::info!("SIGHUP: the Apple-ID certificate comes from the store; nothing to reload")
        }
        Ok(None) => log::info!("SIGHUP: no push identity configured; nothing to reload"),
        Err(e) => log::error!("SIGHUP: reload failed, keeping the current identity: {e}"),
    }
}

/// Removes registrations not renewed for `expire_days`, at start and then
/// every `interval`, against an [`ExpiryClock`] so that a wall-clock jump
/// does not expire everything at once.
async fn sweep_forever(store: Store, expire_days: u64, interval: Duration) {
    let mut clock = ExpiryClock::new(crate::clock::unix_now(), std::time::Instant::now());
    loop {
        match clock.advance(crate::clock::unix_now(), std::time::Instant::now()) {
            Step::Steady => {}
            Step::JumpedForward(s) => log::warn!(
                "wall clock jumped forward by {s} s: expiry counts only the time that passed"
            ),
            Step::JumpedBack(s) => log::warn!("wall clock jumped back by {s} s"),
        }
        let cutoff = clock.now().saturating_sub(expire_days * 86_400);
        match store.sweep(cutoff).await {
            Ok(crate::store::Written::Removed(n)) if n > 0 => {
                log::info!("expired {n} registration(s) not renewed for {expire_days} days")
            }
            Ok(_) => log::debug!("expiry sweep: nothing to expire"),
            Err(e) => log::warn!("expiry sweep failed: {e}"),
        }
        Timer::after(interval).await;
    }
}
