//! Command line: `xapsd run`, `xapsd check-config`, `xapsd pass`, the
//! operator commands `xapsd devices`, `xapsd remove`, `xapsd push`, and the
//! migration commands `xapsd import-go`, `xapsd import-go-config`.
//!
//! Every config key is also a flag of `run` and `check-config`, and a flag
//! wins over the file. Exit codes: 0 success, 1 runtime failure, 2 bad
//! usage, 78 (EX_CONFIG) unusable configuration.

use std::path::{Path, PathBuf};

use argh::FromArgs;
use miniserde::json::{Number, Value};

use crate::admin;
use crate::config::{Config, ConfigError};
use crate::store::{Store, StoreError, StoreLimits};

/// Exit code for a configuration the daemon refuses (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(FromArgs, Debug)]
/// xapsd: real push for iOS Mail on self-hosted Dovecot.
#[argh(
    note = "Configuration keys (JSON file given with --config, or flags of `xapsd run`):
  listen         plugin API addresses, addr:port (default 127.0.0.1:11619 and [::1]:11619)
  db             redb store file (default /var/lib/xapsd/xapsd.redb if writable, else the user's state dir)
  cert_file      PEM push certificate; its subject UID is the topic (default none: dry run)
  key_file       PEM private key of the push certificate (default: read from cert_file)
  p12_file       PKCS#12 bundle (.p12) with the push certificate and its key, instead of cert_file (default none)
  p12_password_file  file whose first line is the p12_file password (default: empty password)
  p8_file        provider token key (.p8) from Apple, with key_id, team_id and topic (default none)
  key_id         key ID of p8_file, ten letters and digits (default none)
  team_id        team ID of the Apple developer account for p8_file (default none)
  topic          APNs topic to push to with p8_file (default none)
  apns_endpoint  production, sandbox or host:port (default production)
  apns_ca_file   extra PEM trust anchor for the APNs server and the Apple certificate service (default none)
  delay_secs     seconds non-urgent events are held and folded (default 30)
  expire_days    days a device stays registered without re-registering (default 30)
  log_level      error, warn, info, debug or trace (default info)
  legacy_socket  Unix socket for the pre-2021 line-protocol plugin, e.g. /var/run/dovecot/xapsd.sock (default none: off)
  legacy_socket_mode
                 permissions of the legacy socket, octal (default 0660)
  legacy_socket_group
                 group owning the legacy socket, e.g. dovecot (default the daemon's group)
  plugin_auth    user:password the plugin must send as HTTP Basic auth, or @/path/to/file holding that line (default none: no auth)
  daemon_user    account to switch to after start when started as root (default xapsd)
  daemon_group   group to switch to after start when started as root (default: the user's primary group)
  allow_root     true: keep running as root instead of switching to daemon_user (default false)
  tls_listen     plugin API addresses served over TLS, addr:port (default none)
  tls_cert_file  PEM certificate chain of the TLS listener (default none)
  tls_key_file   PEM private key of the TLS listener (default none)
  apple_id       Apple ID whose push certificates the daemon requests and renews itself (default none)
  apple_id_hashed_password
                 lower-case hex SHA-256 of the Apple ID password, from `xapsd pass` (default none)
  vendor_key_file
                 PEM RSA key of the macOS Server vendor identity, for apple_id (default none)
  vendor_chain_file
                 PEM certificate chain of the macOS Server vendor identity, for apple_id (default none)
  apple_cert_service_url
                 Apple's push certificate service (default https://identity.apple.com/pushcert/caservice)
  apple_cert_request_interval_hours
                 at most one request to the certificate service per this many hours, 1 or more (default 24)
  memory_budget_kib
                 memory the daemon may use, in KiB; every connection, queue and cache bound is derived from it (default 8192, at least 4096)"
)]
pub struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Run(RunArgs),
    CheckConfig(CheckConfigArgs),
    Devices(DevicesArgs),
    Remove(RemoveArgs),
    Push(PushArgs),
    ImportGo(ImportGoArgs),
    ImportGoConfig(ImportGoConfigArgs),
    Pass(PassArgs),
}

#[derive(FromArgs, Debug)]
/// Read an Apple ID password (no echo on a terminal, else one line of
/// stdin) and print its SHA-256 for `apple_id_hashed_password`.
#[argh(subcommand, name = "pass")]
pub struct PassArgs {}

/// Declares a subcommand that takes the config file and every config key
/// as a flag (plus its own flags, if given), so `run`, `check-config` and
/// the operator commands can never disagree on where the store and the
/// daemon are.
macro_rules! config_command {
    ($name:ident, $cmd:literal, $about:literal) => {
        config_command!($name, $cmd, $about, {});
    };
    ($name:ident, $cmd:literal, $about:literal, { $($extra:tt)* }) => {
        #[derive(FromArgs, Debug)]
        #[doc = $about]
        #[argh(subcommand, name = $cmd)]
        pub struct $name {
            $($extra)*
            /// JSON config file (default: none, embedded defaults)
            #[argh(option)]
            config: Option<PathBuf>,
            /// plugin API address, addr:port; repeat for several (default 127.0.0.1:11619 and [::1]:11619)
            #[argh(option)]
            listen: Vec<String>,
            /// redb store file (default /var/lib/xapsd/xapsd.redb if writable, else the user's state dir)
            #[argh(option)]
            db: Option<String>,
            /// PEM push certificate; its subject UID is the topic (default none: dry run)
            #[argh(option)]
            cert_file: Option<String>,
            /// PEM private key of the push certificate (default: read from cert-file)
            #[argh(option)]
            key_file: Option<String>,
            /// PKCS#12 bundle (.p12) with the push certificate and its key (default none)
            #[argh(option)]
            p12_file: Option<String>,
            /// file whose first line is the p12-file password (default: empty password)
            #[argh(option)]
            p12_password_file: Option<String>,
            /// provider token key (.p8) from Apple, with key-id, team-id and topic (default none)
            #[argh(option)]
            p8_file: Option<String>,
            /// key ID of p8-file, ten letters and digits (default none)
            #[argh(option)]
            key_id: Option<String>,
            /// team ID of the Apple developer account for p8-file (default none)
            #[argh(option)]
            team_id: Option<String>,
            /// APNs topic to push to with p8-file (default none)
            #[argh(option)]
            topic: Option<String>,
            /// production, sandbox or host:port (default production)
            #[argh(option)]
            apns_endpoint: Option<String>,
            /// extra PEM trust anchor for the APNs server and the Apple certificate service (default none)
            #[argh(option)]
            apns_ca_file: Option<String>,
            /// seconds non-urgent events are held and folded (default 30)
            #[argh(option)]
            delay_secs: Option<u64>,
            /// days a device stays registered without re-registering (default 30)
            #[argh(option)]
            expire_days: Option<u64>,
            /// error, warn, info, debug or trace (default info)
            #[argh(option)]
            log_level: Option<String>,
            /// unix socket for the pre-2021 line-protocol plugin (default none: off)
            #[argh(option)]
            legacy_socket: Option<String>,
            /// permissions of the legacy socket, octal (default 0660)
            #[argh(option)]
            legacy_socket_mode: Option<String>,
            /// group owning the legacy socket (default the daemon's group)
            #[argh(option)]
            legacy_socket_group: Option<String>,
            /// user:password the plugin must send as HTTP Basic auth, or @/path/to/file (default none: no auth)
            #[argh(option)]
            plugin_auth: Option<String>,
            /// account to switch to after start when started as root (default xapsd)
            #[argh(option)]
            daemon_user: Option<String>,
            /// group to switch to when started as root (default: the user's primary group)
            #[argh(option)]
            daemon_group: Option<String>,
            /// keep running as root instead of switching to --daemon-user (default false)
            #[argh(switch)]
            allow_root: bool,
            /// plugin API address served over TLS, addr:port; repeat for several (default none)
            #[argh(option)]
            tls_listen: Vec<String>,
            /// PEM certificate chain of the TLS listener (default none)
            #[argh(option)]
            tls_cert_file: Option<String>,
            /// PEM private key of the TLS listener (default none)
            #[argh(option)]
            tls_key_file: Option<String>,
            /// the Apple ID whose push certificates the daemon requests and renews itself (default none)
            #[argh(option)]
            apple_id: Option<String>,
            /// hex SHA-256 of the Apple ID password, from `xapsd pass` (default none)
            #[argh(option)]
            apple_id_hashed_password: Option<String>,
            /// PEM RSA key of the macOS Server vendor identity (default none)
            #[argh(option)]
            vendor_key_file: Option<String>,
            /// PEM certificate chain of the macOS Server vendor identity (default none)
            #[argh(option)]
            vendor_chain_file: Option<String>,
            /// the push certificate service of Apple (default https://identity.apple.com/pushcert/caservice)
            #[argh(option)]
            apple_cert_service_url: Option<String>,
            /// at most one certificate service request per this many hours, 1 or more (default 24)
            #[argh(option)]
            apple_cert_request_interval_hours: Option<u64>,
            /// memory the daemon may use, in KiB; all bounds derive from it (default 8192, at least 4096)
            #[argh(option)]
            memory_budget_kib: Option<u64>,
        }

        impl $name {
            /// The config file (if any) with the flags applied over it.
            pub fn load(&self) -> Result<Config, ConfigError> {
                let mut config = match &self.config {
                    Some(path) => Config::from_file(path)?,
                    None => Config::default(),
                };
                let s = |v: &Option<String>| v.clone().map(Value::String);
                let n = |v: &Option<u64>| v.map(|n| Value::Number(Number::U64(n)));
                let listen = (!self.listen.is_empty()).then(|| {
                    Value::Array(self.listen.iter().cloned().map(Value::String).collect())
                });
                let tls_listen = (!self.tls_listen.is_empty()).then(|| {
                    Value::Array(self.tls_listen.iter().cloned().map(Value::String).collect())
                });
                let flags = [
                    ("listen", listen),
                    ("tls_listen", tls_listen),
                    ("tls_cert_file", s(&self.tls_cert_file)),
                    ("tls_key_file", s(&self.tls_key_file)),
                    ("db", s(&self.db)),
                    ("cert_file", s(&self.cert_file)),
                    ("key_file", s(&self.key_file)),
                    ("p12_file", s(&self.p12_file)),
                    ("p12_password_file", s(&self.p12_password_file)),
                    ("p8_file", s(&self.p8_file)),
                    ("key_id", s(&self.key_id)),
                    ("team_id", s(&self.team_id)),
                    ("topic", s(&self.topic)),
                    ("apns_endpoint", s(&self.apns_endpoint)),
                    ("apns_ca_file", s(&self.apns_ca_file)),
                    ("delay_secs", n(&self.delay_secs)),
                    ("expire_days", n(&self.expire_days)),
                    ("log_level", s(&self.log_level)),
                    ("legacy_socket", s(&self.legacy_socket)),
                    ("legacy_socket_mode", s(&self.legacy_socket_mode)),
                    ("legacy_socket_group", s(&self.legacy_socket_group)),
                    ("plugin_auth", s(&self.plugin_auth)),
                    ("daemon_user", s(&self.daemon_user)),
                    ("daemon_group", s(&self.daemon_group)),
                    ("allow_root", self.allow_root.then_some(Value::Bool(true))),
                    ("apple_id", s(&self.apple_id)),
                    ("apple_id_hashed_password", s(&self.apple_id_hashed_password)),
                    ("vendor_key_file", s(&self.vendor_key_file)),
                    ("vendor_chain_file", s(&self.vendor_chain_file)),
                    ("apple_cert_service_url", s(&self.apple_cert_service_url)),
                    ("apple_cert_request_interval_hours", n(&self.apple_cert_request_interval_hours)),
                    ("memory_budget_kib", n(&self.memory_budget_kib)),
                ];
                for (key, value) in flags {
                    if let Some(value) = value {
                        config.set(key, &value)?;
                    }
                }
                config.validate()?;
                Ok(config)
            }
        }
    };
}

config_command!(
    RunArgs,
    "run",
    "Run the daemon in the foreground (init systems supervise it)."
);
config_command!(
    CheckConfigArgs,
    "check-config",
    "Check the configuration and push identity, print what is in force."
);

config_command!(
    DevicesArgs,
    "devices",
    "List registered devices (tokens shortened), their mailboxes and last registration.",
    {
        /// only this user's devices
        #[argh(option)]
        user: Option<String>,
    }
);
config_command!(
    RemoveArgs,
    "remove",
    "Remove a user's devices, or only those whose token starts with --token.",
    {
        /// whose devices to remove
        #[argh(option)]
        user: String,
        /// only devices whose token starts with this (hex)
        #[argh(option)]
        token: Option<String>,
    }
);
config_command!(
    PushArgs,
    "push",
    "Send a test push to a user's devices through the running daemon; print Apple's answer.",
    {
        /// whose devices to push to
        #[argh(option)]
        user: String,
        /// only devices whose token starts with this (hex)
        #[argh(option)]
        token: Option<String>,
    }
);

config_command!(
    ImportGoArgs,
    "import-go",
    "Import the Go daemon's database.json (daemon stopped): registrations into the store, all or nothing, and its mail push certificate as PEM files; repeatable.",
    {
        /// the Go daemon's database.json
        #[argh(positional)]
        file: PathBuf,
        /// where to write the mail push certificate and key PEM files (default: the store's directory)
        #[argh(option)]
        out_dir: Option<PathBuf>,
        /// import the registrations only, not the file's AppleCerts
        #[argh(switch)]
        skip_certs: bool,
    }
);

/// File names of the imported mail push certificate and its key.
const GO_CERT_FILE: &str = "go-mail-push.crt.pem";
const GO_KEY_FILE: &str = "go-mail-push.key.pem";

/// The Go daemon's mail certificate, ready to be placed after the
/// registrations are stored.
struct CertFiles {
    cert: crate::import::GoCertificate,
    cert_path: PathBuf,
    key_path: PathBuf,
    cert_pem: String,
    key_pem: String,
    /// Both files already hold exactly this.
    unchanged: bool,
}

impl CertFiles {
    /// Where the files go, and whether they can: refuses existing files
    /// with other contents before anything is changed.
    fn plan(
        cert: crate::import::GoCertificate,
        dir: &Path,
    ) -> Result<CertFiles, crate::files::PlaceError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let (cert_pem, key_pem) = (cert.cert_pem(), cert.key_pem());
        let (cert_path, key_path) = (dir.join(GO_CERT_FILE), dir.join(GO_KEY_FILE));
        let found = [
            crate::files::check(&cert_path, cert_pem.as_bytes())?,
            crate::files::check(&key_path, key_pem.as_bytes())?,
        ];
        Ok(CertFiles {
            cert,
            unchanged: found == [crate::files::Found::Same; 2],
            cert_path,
            key_path,
            cert_pem,
            key_pem,
        })
    }

    /// Writes the files (key 0600), then loads them the way the daemon
    /// will. Prints the config lines, never the key.
    fn place(&self) -> Result<(), String> {
        use crate::files::place;
        use crate::identity::PushIdentity;
        place(&self.cert_path, self.cert_pem.as_bytes(), 0o644).map_err(|e| e.to_string())?;
        place(&self.key_path, self.key_pem.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        let identity = crate::identity::pem::PemIdentity::load(&self.cert_path, &self.key_path)
            .map_err(|e| e.to_string())?;
        let facts = &self.cert.facts;
        if identity.topic() != facts.topic {
            return Err(format!(
                "{} reads back with topic {}, not {}",
                self.cert_path.display(),
                identity.topic(),
                facts.topic
            ));
        }
        println!(
            "mail push certificate ({}): topic {}, valid until {}; {} in {}",
            self.cert.at,
            facts.topic,
            crate::clock::format_utc_minute(facts.not_after),
            if self.unchanged {
                "unchanged"
            } else {
                "written"
            },
            self.cert_path.parent().unwrap_or(Path::new("/")).display()
        );
        println!("push with it: put these two lines in the xapsd config:");
        let json =
            |p: &Path| miniserde::json::to_string(&Value::String(p.to_string_lossy().into_owned()));
        println!("  \"cert_file\": {},", json(&self.cert_path));
        println!("  \"key_file\": {}", json(&self.key_path));
        let now = crate::clock::unix_now() as i64;
        for finding in crate::identity::assess(&identity, now) {
            match finding {
                crate::identity::Finding::Warning(w) => eprintln!("xapsd: warning: {w}"),
                crate::identity::Finding::Unusable(u) => eprintln!("xapsd: warning: {u}"),
            }
        }
        Ok(())
    }
}

#[derive(FromArgs, Debug)]
/// Print the xapsd JSON config equivalent to the Go daemon's xapsd.yaml.
#[argh(subcommand, name = "import-go-config")]
pub struct ImportGoConfigArgs {
    /// the Go daemon's xapsd.yaml
    #[argh(positional)]
    file: PathBuf,
}

/// `xapsd import-go`: validates the whole file (registrations, mail
/// certificate and key) and checks the certificate files can be written,
/// then stores the registrations in one transaction and only then writes
/// the certificate files. Needs the store to itself.
fn import_go(args: &ImportGoArgs) -> i32 {
    let mut config = match args.load() {
        Ok(c) => c,
        Err(e) => return config_failure(args.config.as_deref(), &e),
    };
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xapsd: cannot read {}: {e}", args.file.display());
            return 1;
        }
    };
    let limits = crate::limits::Limits::default();
    let mut go = match crate::import::go_database(&text, &limits) {
        Ok(go) => go,
        Err(e) => {
            eprintln!("xapsd: {}: {e}; nothing imported", args.file.display());
            return 1;
        }
    };
    config.resolve_db();
    let path = config.db.clone().unwrap_or_default();
    let certs = match go.mail_cert.take() {
        Some(_) if args.skip_certs => {
            println!("AppleCerts: skipped (--skip-certs)");
            None
        }
        Some(cert) => {
            let dir = match &args.out_dir {
                Some(dir) => dir.clone(),
                None => match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                    _ => PathBuf::from("."),
                },
            };
            match CertFiles::plan(cert, &dir) {
                Ok(files) => Some(files),
                Err(e) => {
                    eprintln!("xapsd: mail push certificate: {e}; nothing imported");
                    return 1;
                }
            }
        }
        None => None,
    };
    let store = match Store::open(&path, admin_store_limits()) {
        Ok(s) => s,
        Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen)) => {
            eprintln!(
                "xapsd: {} is in use (is the daemon running?); stop it for the import",
                path.display()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("xapsd: cannot open store {}: {e}", path.display());
            return 1;
        }
    };
    let before: std::collections::HashMap<String, crate::store::Device> = match store.all_devices()
    {
        Ok(all) => all.into_iter().map(|d| (d.token.clone(), d)).collect(),
        Err(e) => {
            eprintln!("xapsd: cannot read store {}: {e}", path.display());
            store.close();
            return 1;
        }
    };
    let mut lines = Vec::new();
    let (mut new, mut updated, mut unchanged) = (0, 0, 0);
    for d in &go.devices {
        let what = match before.get(&d.token) {
            None => {
                new += 1;
                "new"
            }
            Some(old) if old == d => {
                unchanged += 1;
                "unchanged"
            }
            Some(_) => {
                updated += 1;
                "updated"
            }
        };
        lines.push(format!(
            "{} {} ({}) registered {}: {what}",
            d.user,
            crate::privacy::Short(&d.token),
            d.mailboxes.join(", "),
            crate::clock::format_utc_minute(d.registered_at as i64)
        ));
    }
    let users = go
        .devices
        .iter()
        .map(|d| d.user.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let count = go.devices.len();
    let result = async_io::block_on(store.import(go.devices));
    store.close();
    match result {
        Ok(_) => {
            for line in lines {
                println!("{line}");
            }
            println!(
                "imported {count} device(s) of {users} user(s) into {}: {new} new, {updated} updated, {unchanged} unchanged",
                path.display()
            );
            match certs.map(|c| c.place()) {
                Some(Err(e)) => {
                    eprintln!(
                        "xapsd: registrations imported, but not the mail push certificate: {e}"
                    );
                    1
                }
                Some(Ok(())) | None => 0,
            }
        }
        Err(e) => {
            eprintln!("xapsd: import failed, nothing stored: {e}");
            1
        }
    }
}

/// `xapsd import-go-config`: the JSON config on stdout, notes on stderr.
fn import_go_config(args: &ImportGoConfigArgs) -> i32 {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xapsd: cannot read {}: {e}", args.file.display());
            return 1;
        }
    };
    match crate::import::go_config(&text) {
        Ok(c) => {
            print!("{}", c.json);
            for note in &c.notes {
                eprintln!("note: {note}");
            }
            if !c.unknown.is_empty() {
                eprintln!(
                    "unknown keys (not in the Go daemon's config either): {}",
                    c.unknown.join(", ")
                );
            }
            0
        }
        Err(e) => {
            eprintln!("xapsd: {}: {e}", args.file.display());
            1
        }
    }
}

/// Runs an operator command: through the daemon if it answers on its
/// listen addresses, else on the store directly. Returns the exit code.
fn admin_command(
    config: Result<Config, ConfigError>,
    file: Option<&Path>,
    request: admin::Request,
) -> i32 {
    let mut config = match config {
        Ok(c) => c,
        Err(e) => return config_failure(file, &e),
    };
    let authorization = match config
        .plugin_auth
        .as_ref()
        .map(crate::auth::authorization_header)
    {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(e)) => {
            eprintln!("xapsd: plugin_auth: {e}");
            return EXIT_CONFIG;
        }
    };
    match admin::call(&config.listen, &request, authorization.as_deref()) {
        Ok(answer) if answer.status == 200 => {
            print!("{}", answer.text);
            return 0;
        }
        Ok(answer) => {
            eprint!("xapsd: {}", answer.text);
            if !answer.text.ends_with('\n') {
                eprintln!();
            }
            if answer.status == 403 {
                eprintln!(
                    "xapsd: the daemon answers operator commands on loopback only; add a loopback address (e.g. 127.0.0.1:{}) to `listen`",
                    config.listen.first().map_or(crate::config::DEFAULT_PORT, |a| a.port())
                );
            }
            return 1;
        }
        Err(admin::CallError::NotRunning) => {}
        Err(e) => {
            eprintln!("xapsd: {e}");
            return 1;
        }
    }
    // Nobody answers: the daemon is not running, so the store is ours.
    config.resolve_db();
    let path = config.db.clone().unwrap_or_default();
    if !path.exists() {
        eprintln!(
            "xapsd: no store at {} (and no daemon running)",
            path.display()
        );
        return 1;
    }
    let store = match Store::open(&path, admin_store_limits()) {
        Ok(s) => s,
        Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen)) => {
            eprintln!(
                "xapsd: {} is held by another process, but no daemon answers on {:?}; is the config the daemon's?",
                path.display(),
                config.listen
            );
            return 1;
        }
        Err(e) => {
            eprintln!("xapsd: cannot open store {}: {e}", path.display());
            return 1;
        }
    };
    let result = async_io::block_on(admin::serve(request, &store, None));
    store.close();
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("xapsd: {e}");
            1
        }
    }
}

fn admin_store_limits() -> StoreLimits {
    let limits = crate::limits::Limits::default();
    StoreLimits::one_shot(limits.max_devices_per_user, limits.max_store_batch)
}

/// Parses the command line and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("xapsd {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    match cli.command {
        Some(Command::Run(args)) => match args.load() {
            Ok(config) => {
                crate::daemon::init_logging(config.log_level);
                match crate::daemon::run(config) {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("{e}");
                        1
                    }
                }
            }
            Err(e) => config_failure(args.config.as_deref(), &e),
        },
        Some(Command::CheckConfig(args)) => match args.load() {
            Ok(config) => crate::daemon::check_config(config),
            Err(e) => config_failure(args.config.as_deref(), &e),
        },
        Some(Command::Devices(args)) => admin_command(
            args.load(),
            args.config.as_deref(),
            admin::Request::Devices {
                user: args.user.clone(),
            },
        ),
        Some(Command::Remove(args)) => admin_command(
            args.load(),
            args.config.as_deref(),
            admin::Request::Remove {
                user: args.user.clone(),
                token: args.token.clone(),
            },
        ),
        Some(Command::Push(args)) => admin_command(
            args.load(),
            args.config.as_deref(),
            admin::Request::Push {
                user: args.user.clone(),
                token: args.token.clone(),
            },
        ),
        Some(Command::ImportGo(args)) => import_go(&args),
        Some(Command::ImportGoConfig(args)) => import_go_config(&args),
        Some(Command::Pass(_)) => crate::pass::main(),
        None => {
            eprintln!("xapsd: no command given; try `xapsd run` or `xapsd --help`");
            2
        }
    }
}

fn config_failure(_file: Option<&Path>, e: &ConfigError) -> i32 {
    eprintln!("xapsd: {e}");
    EXIT_CONFIG
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(args: &[&str]) -> String {
        match Cli::from_args(&["xapsd"], args) {
            Err(early) => early.output,
            Ok(_) => panic!("--help must exit early"),
        }
    }

    #[test]
    fn help_lists_every_key_with_its_default() {
        let top = help(&["--help"]);
        let run = help(&["run", "--help"]);
        for (key, text) in crate::config::KEYS {
            assert!(
                top.contains(key) && top.contains(text),
                "top-level help lacks `{key}`"
            );
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(run.contains(&flag), "run --help lacks {flag}");
            for cmd in ["devices", "remove", "push", "import-go"] {
                assert!(
                    help(&[cmd, "--help"]).contains(&flag),
                    "{cmd} --help lacks {flag}"
                );
            }
        }
        assert!(run.matches("(default").count() >= crate::config::KEYS.len());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("xapsd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(&file, r#"{"delay_secs": 5, "expire_days": 9}"#).unwrap();
        let Ok(cli) = Cli::from_args(
            &["xapsd"],
            &[
                "run",
                "--config",
                file.to_str().unwrap(),
                "--delay-secs",
                "7",
                "--listen",
                "127.0.0.1:1",
            ],
        ) else {
            panic!("arguments must parse")
        };
        let Some(Command::Run(args)) = cli.command else {
            panic!("run expected")
        };
        let config = args.load().unwrap();
        assert_eq!((config.delay_secs, config.expire_days), (7, 9));
        assert_eq!(config.listen, vec!["127.0.0.1:1".parse().unwrap()]);
    }
}
