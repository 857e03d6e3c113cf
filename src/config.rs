//! The daemon's settings: embedded defaults, a JSON file, command-line flags.
//!
//! Every key has one name (snake_case in the file, kebab-case as a flag) and
//! one parser, so the file and the flags cannot drift apart. Anything the
//! parser cannot accept stops the daemon at start with one line naming the
//! key: a typo in a router's config must not become a silent default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use log::LevelFilter;
use miniserde::json::{Number, Value};

use crate::auth::AuthSetting;

/// Port the Dovecot plugin's default URL (`http://localhost:11619`) uses.
pub const DEFAULT_PORT: u16 = 11619;
/// Where packages put the store; used when the directory is writable.
pub const SYSTEM_DB: &str = "/var/lib/xapsd/xapsd.redb";
/// The account a daemon started as root switches to.
pub const DEFAULT_USER: &str = "xapsd";

/// The keys the daemon understands, with the text `--help` shows.
/// `cli.rs` checks in a test that each one has a flag and appears in help.
pub const KEYS: &[(&str, &str)] = &[
    ("listen", "plugin API addresses, addr:port (default 127.0.0.1:11619 and [::1]:11619)"),
    ("db", "redb store file (default /var/lib/xapsd/xapsd.redb if writable, else the user's state dir)"),
    ("cert_file", "PEM push certificate; its subject UID is the topic (default none: dry run)"),
    ("key_file", "PEM private key of the push certificate (default: read from cert_file)"),
    ("p12_file", "PKCS#12 bundle (.p12) with the push certificate and its key, instead of cert_file (default none)"),
    ("p12_password_file", "file whose first line is the p12_file password (default: empty password)"),
    ("p8_file", "provider token key (.p8) from Apple, with key_id, team_id and topic (default none)"),
    ("key_id", "key ID of p8_file, ten letters and digits (default none)"),
    ("team_id", "team ID of the Apple developer account for p8_file (default none)"),
    ("topic", "APNs topic to push to with p8_file (default none)"),
    ("apns_endpoint", "production, sandbox or host:port (default production)"),
    ("apns_ca_file", "extra PEM trust anchor for the APNs server and the Apple certificate service (default none)"),
    ("delay_secs", "seconds non-urgent events are held and folded (default 30)"),
    ("expire_days", "days a device stays registered without re-registering (default 30)"),
    ("log_level", "error, warn, info, debug or trace (default info)"),
    ("legacy_socket", "Unix socket for the pre-2021 line-protocol plugin, e.g. /var/run/dovecot/xapsd.sock (default none: off)"),
    ("legacy_socket_mode", "permissions of the legacy socket, octal (default 0660)"),
    ("legacy_socket_group", "group owning the legacy socket, e.g. dovecot (default the daemon's group)"),
    ("plugin_auth", "user:password the plugin must send as HTTP Basic auth, or @/path/to/file holding that line (default none: no auth)"),
    ("daemon_user", "account to switch to after start when started as root (default xapsd)"),
    ("daemon_group", "group to switch to after start when started as root (default: the user's primary group)"),
    ("allow_root", "true: keep running as root instead of switching to daemon_user (default false)"),
    ("tls_listen", "plugin API addresses served over TLS, addr:port (default none)"),
    ("tls_cert_file", "PEM certificate chain of the TLS listener (default none)"),
    ("tls_key_file", "PEM private key of the TLS listener (default none)"),
    ("apple_id", "Apple ID whose push certificates the daemon requests and renews itself (default none)"),
    ("apple_id_hashed_password", "lower-case hex SHA-256 of the Apple ID password, from `xapsd pass` (default none)"),
    ("vendor_key_file", "PEM RSA key of the macOS Server vendor identity, for apple_id (default none)"),
    ("vendor_chain_file", "PEM certificate chain of the macOS Server vendor identity, for apple_id (default none)"),
    ("apple_cert_service_url", "Apple's push certificate service (default https://identity.apple.com/pushcert/caservice)"),
    ("apple_cert_request_interval_hours", "at most one request to the certificate service per this many hours, 1 or more (default 24)"),
    ("memory_budget_kib", "memory the daemon may use, in KiB; every connection, queue and cache bound is derived from it (default 8192, at least 4096)"),
];

/// Where Apple's push certificate service is.
pub const APPLE_CERT_SERVICE_URL: &str = "https://identity.apple.com/pushcert/caservice";

/// An `https://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

impl HttpsUrl {
    pub fn parse(s: &str) -> Result<HttpsUrl, String> {
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| format!("`{s}` does not start with https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = || format!("`{s}` is not an https://host[:port]/path URL");
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let (host, port) = match authority.strip_prefix('[') {
            // [v6-address] or [v6-address]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(bad)?;
                match after.strip_prefix(':') {
                    Some(p) => (host, port(p)?),
                    None if after.is_empty() => (host, 443),
                    None => return Err(bad()),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, p)) => (host, port(p)?),
                None => (authority, 443),
            },
        };
        let printable = |c: char| c.is_ascii_graphic() && !"?#@".contains(c);
        if host.is_empty() || !host.chars().all(printable) || !path.chars().all(printable) {
            return Err(bad());
        }
        Ok(HttpsUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// The Apple-ID certificate service settings, all given or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppleIdConfig {
    pub apple_id: String,
    pub password_hash: String,
    pub vendor_key_file: PathBuf,
    pub vendor_chain_file: PathBuf,
    pub service_url: HttpsUrl,
    pub request_interval: std::time::Duration,
}

/// Which APNs server pushes go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApnsEndpoint {
    Production,
    Sandbox,
    /// Any `host:port`, e.g. a test server.
    Custom {
        host: String,
        port: u16,
    },
}

impl ApnsEndpoint {
    pub fn host(&self) -> &str {
        match self {
            ApnsEndpoint::Production => "api.push.apple.com",
            ApnsEndpoint::Sandbox => "api.sandbox.push.apple.com",
            ApnsEndpoint::Custom { host, .. } => host,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            ApnsEndpoint::Production | ApnsEndpoint::Sandbox => 443,
            ApnsEndpoint::Custom { port, .. } => *port,
        }
    }
}

impl fmt::Display for ApnsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApnsEndpoint::Production => f.write_str("production"),
            ApnsEndpoint::Sandbox => f.write_str("sandbox"),
            ApnsEndpoint::Custom { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The effective settings of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// `None` until [`Config::resolve_db`] picks the default.
    pub db: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub p12_file: Option<PathBuf>,
    pub p12_password_file: Option<PathBuf>,
    pub p8_file: Option<PathBuf>,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub topic: Option<String>,
    pub apns_endpoint: ApnsEndpoint,
    pub apns_ca_file: Option<PathBuf>,
    pub delay_secs: u64,
    pub expire_days: u64,
    pub log_level: LevelFilter,
    pub legacy_socket: Option<PathBuf>,
    /// Permission bits, at most 0o777.
    pub legacy_socket_mode: u32,
    pub legacy_socket_group: Option<String>,
    pub plugin_auth: Option<AuthSetting>,
    pub daemon_user: String,
    pub daemon_group: Option<String>,
    pub allow_root: bool,
    /// Not a key: the config file, when it holds `plugin_auth` inline and so
    /// must be as private as any secret file.
    pub secret_config_file: Option<PathBuf>,
    pub tls_listen: Vec<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub apple_id: Option<String>,
    pub apple_id_hashed_password: Option<String>,
    pub vendor_key_file: Option<PathBuf>,
    pub vendor_chain_file: Option<PathBuf>,
    pub apple_cert_service_url: HttpsUrl,
    pub apple_cert_request_interval_hours: u64,
    /// Validated: [`crate::limits::Limits::from_budget`] accepts it.
    pub memory_budget_kib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), DEFAULT_PORT),
            ],
            db: None,
            cert_file: None,
            key_file: None,
            p12_file: None,
            p12_password_file: None,
            p8_file: None,
            key_id: None,
            team_id: None,
            topic: None,
            apns_endpoint: ApnsEndpoint::Production,
            apns_ca_file: None,
            delay_secs: 30,
            expire_days: 30,
            log_level: LevelFilter::Info,
            legacy_socket: None,
            legacy_socket_mode: 0o660,
            legacy_socket_group: None,
            plugin_auth: None,
            daemon_user: DEFAULT_USER.to_owned(),
            daemon_group: None,
            allow_root: false,
            secret_config_file: None,
            tls_listen: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            apple_id: None,
            apple_id_hashed_password: None,
            vendor_key_file: None,
            vendor_chain_file: None,
            apple_cert_service_url: HttpsUrl {
                host: "identity.apple.com".into(),
                port: 443,
                path: "/pushcert/caservice".into(),
            },
            apple_cert_request_interval_hours: 24,
            memory_budget_kib: crate::limits::DEFAULT_BUDGET_KIB,
        }
    }
}

/// Why a configuration was refused. Display is the one line the admin sees.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    NotJson {
        path: PathBuf,
    },
    NotAnObject {
        path: PathBuf,
    },
    UnknownKey {
        key: String,
    },
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    Invalid {
        key: &'static str,
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::NotJson { path } => {
                write!(f, "config file {} is not valid JSON", path.display())
            }
            ConfigError::NotAnObject { path } => {
                write!(
                    f,
                    "config file {} must hold one JSON object",
                    path.display()
                )
            }
            ConfigError::UnknownKey { key } => write!(f, "unknown config key `{key}`"),
            ConfigError::WrongType { key, expected } => {
                write!(f, "config key `{key}` must be {expected}")
            }
            ConfigError::Invalid { key, reason } => write!(f, "config key `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a JSON config file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::default();
        config.apply_json(&text, path)?;
        if matches!(config.plugin_auth, Some(AuthSetting::Inline(_)))
            || config.apple_id_hashed_password.is_some()
        {
            config.secret_config_file = Some(path.to_owned());
        }
        Ok(config)
    }

    /// Applies every key of a JSON object, refusing unknown keys.
    pub fn apply_json(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let value: Value = miniserde::json::from_str(text).map_err(|_| ConfigError::NotJson {
            path: path.to_owned(),
        })?;
        let Value::Object(object) = value else {
            return Err(ConfigError::NotAnObject {
                path: path.to_owned(),
            });
        };
        for (key, value) in object.iter() {
            self.set(key, value)?;
        }
        Ok(())
    }

    /// Sets one key. Flags come through here too, as JSON values.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), ConfigError> {
        match key {
            "listen" => self.listen = parse_listen("listen", value)?,
            "tls_listen" => self.tls_listen = parse_listen("tls_listen", value)?,
            "tls_cert_file" => self.tls_cert_file = Some(path("tls_cert_file", value)?),
            "tls_key_file" => self.tls_key_file = Some(path("tls_key_file", value)?),
            "db" => self.db = Some(path("db", value)?),
            "cert_file" => self.cert_file = Some(path("cert_file", value)?),
            "key_file" => self.key_file = Some(path("key_file", value)?),
            "p12_file" => self.p12_file = Some(path("p12_file", value)?),
            "p12_password_file" => self.p12_password_file = Some(path("p12_password_file", value)?),
            "p8_file" => self.p8_file = Some(path("p8_file", value)?),
            "key_id" => self.key_id = Some(apple_field("key_id", value)?),
            "team_id" => self.team_id = Some(apple_field("team_id", value)?),
            "topic" => {
                let topic = string("topic", value)?;
                if topic.is_empty() || topic.len() > 255 || topic.chars().any(char::is_whitespace) {
                    return Err(ConfigError::Invalid {
                        key: "topic",
                        reason: "must be a bundle-id-like name without spaces".into(),
                    });
                }
                self.topic = Some(topic.to_owned())
            }
            "apns_endpoint" => {
                self.apns_endpoint = parse_endpoint(string("apns_endpoint", value)?)?
            }
            "apns_ca_file" => self.apns_ca_file = Some(path("apns_ca_file", value)?),
            "delay_secs" => self.delay_secs = bounded("delay_secs", value, 0, 24 * 3600)?,
            "expire_days" => self.expire_days = bounded("expire_days", value, 1, 3650)?,
            "log_level" => self.log_level = parse_level(string("log_level", value)?)?,
            "legacy_socket" => self.legacy_socket = Some(path("legacy_socket", value)?),
            "legacy_socket_mode" => {
                self.legacy_socket_mode = parse_mode(string("legacy_socket_mode", value)?)?
            }
            "legacy_socket_group" => {
                let group = string("legacy_socket_group", value)?;
                if group.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "legacy_socket_group",
                        reason: "must not be empty".into(),
                    });
                }
                self.legacy_socket_group = Some(group.to_owned());
            }
            "plugin_auth" => {
                let setting = AuthSetting::parse(string("plugin_auth", value)?).map_err(|e| {
                    ConfigError::Invalid {
                        key: "plugin_auth",
                        reason: e.to_string(),
                    }
                })?;
                self.plugin_auth = Some(setting);
            }
            "memory_budget_kib" => {
                let kib = bounded("memory_budget_kib", value, 0, u64::MAX)?;
                crate::limits::Limits::from_budget(kib).map_err(|e| ConfigError::Invalid {
                    key: "memory_budget_kib",
                    reason: e.to_string(),
                })?;
                self.memory_budget_kib = kib;
            }
            "daemon_user" => self.daemon_user = account_name("daemon_user", value)?,
            "daemon_group" => self.daemon_group = Some(account_name("daemon_group", value)?),
            "allow_root" => match value {
                Value::Bool(b) => self.allow_root = *b,
                _ => {
                    return Err(ConfigError::WrongType {
                        key: "allow_root",
                        expected: "true or false",
                    })
                }
            },
            "apple_id" => {
                let id = string("apple_id", value)?;
                if id.is_empty() || id.len() > 255 || id.chars().any(char::is_whitespace) {
                    return Err(ConfigError::Invalid {
                        key: "apple_id",
                        reason: "must be an Apple ID (an e-mail address) without spaces".into(),
                    });
                }
                self.apple_id = Some(id.to_owned());
            }
            "apple_id_hashed_password" => {
                let hash = string("apple_id_hashed_password", value)?;
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigError::Invalid {
                        key: "apple_id_hashed_password",
                        reason: "must be the 64 hex digits `xapsd pass` prints".into(),
                    });
                }
                self.apple_id_hashed_password = Some(hash.to_ascii_lowercase());
            }
            "vendor_key_file" => self.vendor_key_file = Some(path("vendor_key_file", value)?),
            "vendor_chain_file" => self.vendor_chain_file = Some(path("vendor_chain_file", value)?),
            "apple_cert_service_url" => {
                let url = string("apple_cert_service_url", value)?;
                self.apple_cert_service_url =
                    HttpsUrl::parse(url).map_err(|reason| ConfigError::Invalid {
                        key: "apple_cert_service_url",
                        reason,
                    })?;
            }
            "apple_cert_request_interval_hours" => {
                // Fewer than one hour between requests is how accounts got
                // tens of thousands of certificates: refused, not clamped.
                self.apple_cert_request_interval_hours =
                    bounded("apple_cert_request_interval_hours", value, 1, 24 * 365)?
            }
            other => {
                return Err(ConfigError::UnknownKey {
                    key: other.to_owned(),
                })
            }
        }
        Ok(())
    }

    /// Checks relations between keys once all layers are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key_file.is_some() && self.cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "key_file",
                reason: "is set but cert_file is not".into(),
            });
        }
        if self.p12_password_file.is_some() && self.p12_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "p12_password_file",
                reason: "is set but p12_file is not".into(),
            });
        }
        // The token keys come as a set: name the first one missing.
        let token = [
            ("p8_file", self.p8_file.is_some()),
            ("key_id", self.key_id.is_some()),
            ("team_id", self.team_id.is_some()),
            ("topic", self.topic.is_some()),
        ];
        if token.iter().any(|(_, set)| *set) {
            if let Some((missing, _)) = token.iter().find(|(_, set)| !*set) {
                let given: Vec<&str> = token
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(k, _)| *k)
                    .collect();
                return Err(ConfigError::Invalid {
                    key: missing,
                    reason: format!(
                        "is required with {} (a provider token needs p8_file, key_id, team_id and topic)",
                        given.join(", ")
                    ),
                });
            }
        }
        self.validate_apple_id()?;
        let kinds = [
            ("cert_file", self.cert_file.is_some()),
            ("p12_file", self.p12_file.is_some()),
            ("p8_file", self.p8_file.is_some()),
            ("apple_id", self.apple_id.is_some()),
        ];
        let mut chosen = kinds.iter().filter(|(_, set)| *set).map(|(k, _)| *k);
        if let (Some(first), Some(second)) = (chosen.next(), chosen.next()) {
            return Err(ConfigError::Invalid {
                key: second,
                reason: format!("cannot be combined with {first}: configure one push identity"),
            });
        }
        self.validate_tls()
    }

    /// The Apple-ID keys come as a set of four (URL and interval have defaults).
    fn validate_apple_id(&self) -> Result<(), ConfigError> {
        let keys = [
            ("apple_id", self.apple_id.is_some()),
            (
                "apple_id_hashed_password",
                self.apple_id_hashed_password.is_some(),
            ),
            ("vendor_key_file", self.vendor_key_file.is_some()),
            ("vendor_chain_file", self.vendor_chain_file.is_some()),
        ];
        if !keys.iter().any(|(_, set)| *set) {
            return Ok(());
        }
        if let Some((missing, _)) = keys.iter().find(|(_, set)| !*set) {
            return Err(ConfigError::Invalid {
                key: missing,
                reason: "is required for the Apple-ID certificate service (apple_id, apple_id_hashed_password, vendor_key_file, vendor_chain_file)".into(),
            });
        }
        if !cfg!(feature = "apple-id") {
            return Err(ConfigError::Invalid {
                key: "apple_id",
                reason: "this xapsd was built without the Apple-ID certificate service (cargo feature `apple-id`)".into(),
            });
        }
        Ok(())
    }

    /// The Apple-ID settings, when configured (after [`Config::validate`]).
    pub fn apple_id_config(&self) -> Option<AppleIdConfig> {
        Some(AppleIdConfig {
            apple_id: self.apple_id.clone()?,
            password_hash: self.apple_id_hashed_password.clone()?,
            vendor_key_file: self.vendor_key_file.clone()?,
            vendor_chain_file: self.vendor_chain_file.clone()?,
            service_url: self.apple_cert_service_url.clone(),
            request_interval: std::time::Duration::from_secs(
                self.apple_cert_request_interval_hours * 3600,
            ),
        })
    }

    /// The TLS listener's keys come as a set of three.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = [
            ("tls_listen", !self.tls_listen.is_empty()),
            ("tls_cert_file", self.tls_cert_file.is_some()),
            ("tls_key_file", self.tls_key_file.is_some()),
        ];
        if tls.iter().any(|(_, set)| *set) {
            if let Some((missing, _)) = tls.iter().find(|(_, set)| !*set) {
                return Err(ConfigError::Invalid {
                    key: missing,
                    reason: "is required for the TLS listener (tls_listen, tls_cert_file and tls_key_file)".into(),
                });
            }
        }
        Ok(())
    }

    /// Where the private key of `cert_file` is: its own file, or the same PEM.
    pub fn key_path(&self) -> Option<&Path> {
        self.key_file.as_deref().or(self.cert_file.as_deref())
    }

    /// Fills in `db` when no layer set it: the system path when its directory
    /// is writable, else the user's state directory. Returns why it chose.
    pub fn resolve_db(&mut self) -> Option<&'static str> {
        if self.db.is_some() {
            return None;
        }
        let system = Path::new(SYSTEM_DB);
        let dir = system.parent().unwrap_or(Path::new("/"));
        if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok() {
            self.db = Some(system.to_owned());
            return Some("system state directory is writable");
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        self.db = Some(state.join("xapsd").join("xapsd.redb"));
        Some("/var/lib/xapsd is missing or not writable for this user")
    }
}

fn string<'v>(key: &'static str, value: &'v Value) -> Result<&'v str, ConfigError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(ConfigError::WrongType {
            key,
            expected: "a string",
        }),
    }
}

/// A user or group name: what `adduser` accepts, nothing that could be
/// mistaken for a number or an option.
fn account_name(key: &'static str, value: &Value) -> Result<String, ConfigError> {
    let s = string(key, value)?;
    let ok = !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && !s.bytes().all(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("`{s}` is not a user or group name"),
        });
    }
    Ok(s.to_owned())
}

fn apple_field(key: &'static str, value: &Value) -> Result<String, ConfigError> {
    let s = string(key, value)?;
    if !crate::identity::token::valid_apple_id_field(s) {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be letters and digits, as shown in Apple's developer account".into(),
        });
    }
    Ok(s.to_owned())
}

fn path(key: &'static str, value: &Value) -> Result<PathBuf, ConfigError> {
    let s = string(key, value)?;
    if s.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            reason: "must not be empty".into(),
        });
    }
    Ok(PathBuf::from(s))
}

fn bounded(key: &'static str, value: &Value, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = match value {
        Value::Number(Number::U64(n)) => *n,
        Value::Number(Number::I64(_)) => {
            return Err(ConfigError::Invalid {
                key,
                reason: "must not be negative".into(),
            })
        }
        _ => {
            return Err(ConfigError::WrongType {
                key,
                expected: "a whole number",
            })
        }
    };
    if n < min || n > max {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("{n} is outside {min}..={max}"),
        });
    }
    Ok(n)
}

fn parse_listen(key: &'static str, value: &Value) -> Result<Vec<SocketAddr>, ConfigError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        // A single address is a common hand-written shorthand.
        Value::String(_) => vec![value],
        _ => {
            return Err(ConfigError::WrongType {
                key,
                expected: "a list of addr:port strings",
            })
        }
    };
    if items.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            reason: "needs at least one address".into(),
        });
    }
    items
        .into_iter()
        .map(|item| {
            let s = string(key, item)?;
            s.parse::<SocketAddr>().map_err(|_| ConfigError::Invalid {
                key,
                reason: format!("`{s}` is not addr:port (IPv6 as [::1]:11619)"),
            })
        })
        .collect()
}

fn parse_endpoint(s: &str) -> Result<ApnsEndpoint, ConfigError> {
    const KEY: &str = "apns_endpoint";
    match s {
        "production" => return Ok(ApnsEndpoint::Production),
        "sandbox" | "development" => return Ok(ApnsEndpoint::Sandbox),
        _ => {}
    }
    let invalid = || ConfigError::Invalid {
        key: KEY,
        reason: format!("`{s}` is not production, sandbox or host:port"),
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if host.is_empty() || port == 0 {
        return Err(invalid());
    }
    Ok(ApnsEndpoint::Custom {
        host: host.to_owned(),
        port,
    })
}

/// An octal permission string such as `0660` or `660`.
fn parse_mode(s: &str) -> Result<u32, ConfigError> {
    let invalid = || ConfigError::Invalid {
        key: "legacy_socket_mode",
        reason: format!("`{s}` is not an octal mode like \"0660\""),
    };
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    let mode = u32::from_str_radix(s, 8).map_err(|_| invalid())?;
    if mode > 0o777 {
        return Err(invalid());
    }
    Ok(mode)
}

fn parse_level(s: &str) -> Result<LevelFilter, ConfigError> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(ConfigError::Invalid {
            key: "log_level",
            reason: format!("`{s}` is not error, warn, info, debug or trace"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_json(text, Path::new("test.json"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn empty_object_gives_defaults() {
        assert_eq!(parse("{}").unwrap(), Config::default());
    }

    #[test]
    fn reads_every_key() {
        let c = parse(
            r#"{"listen":["127.0.0.1:1","[::1]:2"],"db":"/x.redb","cert_file":"c.pem",
                "key_file":"k.pem","apns_endpoint":"localhost:8443","apns_ca_file":"ca.pem",
                "delay_secs":0,"expire_days":7,"log_level":"debug",
                "legacy_socket":"/run/x.sock","legacy_socket_mode":"0600",
                "legacy_socket_group":"dovecot"}"#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.db.as_deref(), Some(Path::new("/x.redb")));
        assert_eq!(c.key_path(), Some(Path::new("k.pem")));
        assert_eq!(
            c.apns_endpoint,
            ApnsEndpoint::Custom {
                host: "localhost".into(),
                port: 8443
            }
        );
        assert_eq!((c.delay_secs, c.expire_days), (0, 7));
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert_eq!(c.legacy_socket.as_deref(), Some(Path::new("/run/x.sock")));
        assert_eq!(c.legacy_socket_mode, 0o600);
        assert_eq!(c.legacy_socket_group.as_deref(), Some("dovecot"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (r#"{"delay":3}"#, "unknown config key `delay`"),
            (
                r#"{"delay_secs":"3"}"#,
                "config key `delay_secs` must be a whole number",
            ),
            (
                r#"{"delay_secs":-3}"#,
                "config key `delay_secs`: must not be negative",
            ),
            (
                r#"{"expire_days":0}"#,
                "config key `expire_days`: 0 is outside 1..=3650",
            ),
            (
                r#"{"listen":[]}"#,
                "config key `listen`: needs at least one address",
            ),
            (
                r#"{"listen":["localhost"]}"#,
                "config key `listen`: `localhost` is not addr:port",
            ),
            (
                r#"{"apns_endpoint":"prod"}"#,
                "config key `apns_endpoint`: `prod` is not",
            ),
            (
                r#"{"log_level":"loud"}"#,
                "config key `log_level`: `loud` is not",
            ),
            (
                r#"{"key_file":"k.pem"}"#,
                "config key `key_file`: is set but cert_file is not",
            ),
            (
                r#"{"legacy_socket_mode":"0999"}"#,
                "config key `legacy_socket_mode`: `0999` is not an octal mode",
            ),
            (
                r#"{"legacy_socket_mode":"7777"}"#,
                "config key `legacy_socket_mode`: `7777` is not",
            ),
            (
                r#"{"legacy_socket_mode":660}"#,
                "config key `legacy_socket_mode` must be a string",
            ),
            (
                r#"{"legacy_socket_group":""}"#,
                "config key `legacy_socket_group`: must not be empty",
            ),
            (
                r#"{"p12_password_file":"pw"}"#,
                "config key `p12_password_file`: is set but p12_file is not",
            ),
            (
                r#"{"p8_file":"k.p8","key_id":"ABC","topic":"t"}"#,
                "config key `team_id`: is required with p8_file, key_id, topic",
            ),
            (
                r#"{"key_id":"ABC"}"#,
                "config key `p8_file`: is required with key_id",
            ),
            (
                r#"{"key_id":"A B"}"#,
                "config key `key_id`: must be letters and digits",
            ),
            (r#"{"topic":""}"#, "config key `topic`: must be"),
            (
                r#"{"cert_file":"c.pem","p12_file":"b.p12"}"#,
                "config key `p12_file`: cannot be combined with cert_file",
            ),
            (
                r#"{"p12_file":"b.p12","p8_file":"k.p8","key_id":"A","team_id":"B","topic":"t"}"#,
                "config key `p8_file`: cannot be combined with p12_file",
            ),
            (
                r#"{"daemon_user":"0"}"#,
                "config key `daemon_user`: `0` is not a user",
            ),
            (
                r#"{"daemon_group":"a b"}"#,
                "config key `daemon_group`: `a b` is not",
            ),
            (
                r#"{"allow_root":"yes"}"#,
                "config key `allow_root` must be true or false",
            ),
            (
                r#"{"plugin_auth":"nocolon"}"#,
                "config key `plugin_auth`: the inline value is not user:password",
            ),
            (
                r#"{"tls_listen":["127.0.0.1:1"],"tls_cert_file":"c.pem"}"#,
                "config key `tls_key_file`: is required for the TLS listener",
            ),
            (
                r#"{"apple_cert_request_interval_hours":0}"#,
                "config key `apple_cert_request_interval_hours`: 0 is outside 1..=8760",
            ),
            (
                r#"{"apple_id_hashed_password":"abc"}"#,
                "config key `apple_id_hashed_password`: must be the 64 hex digits",
            ),
            (
                r#"{"apple_cert_service_url":"http://x/y"}"#,
                "config key `apple_cert_service_url`: `http://x/y` does not start with https://",
            ),
            (
                r#"{"apple_id":"a@b.c"}"#,
                "config key `apple_id_hashed_password`: is required for the Apple-ID",
            ),
            (
                r#"{"memory_budget_kib":2048}"#,
                "config key `memory_budget_kib`: 2048 KiB is too small to run in: xapsd needs at least 4096 KiB",
            ),
            (
                r#"{"memory_budget_kib":"8M"}"#,
                "config key `memory_budget_kib` must be a whole number",
            ),
            (r#"[1]"#, "must hold one JSON object"),
            (r#"{"listen":"#, "is not valid JSON"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: got `{err}`, want `{want}`");
        }
    }

    #[test]
    fn each_identity_kind_alone_is_accepted() {
        let p12 = parse(r#"{"p12_file":"b.p12","p12_password_file":"pw"}"#).unwrap();
        assert_eq!(p12.p12_file.as_deref(), Some(Path::new("b.p12")));
        let token = parse(
            r#"{"p8_file":"k.p8","key_id":"ABC123DEFG","team_id":"TEAM1","topic":"com.x.y"}"#,
        )
        .unwrap();
        assert_eq!(token.key_id.as_deref(), Some("ABC123DEFG"));
        assert_eq!(token.topic.as_deref(), Some("com.x.y"));
    }

    #[cfg(feature = "apple-id")]
    #[test]
    fn apple_id_keys_come_as_a_set() {
        let hash = "ab".repeat(32);
        let c = parse(&format!(
            r#"{{"apple_id":"a@b.c","apple_id_hashed_password":"{}","vendor_key_file":"k",
                "vendor_chain_file":"c","apple_cert_service_url":"https://127.0.0.1:8443/ca",
                "apple_cert_request_interval_hours":1}}"#,
            hash.to_uppercase()
        ));
        let apple = c.unwrap().apple_id_config().unwrap();
        assert_eq!(apple.password_hash, hash);
        assert_eq!(apple.request_interval, std::time::Duration::from_secs(3600));
        assert_eq!(
            apple.service_url,
            HttpsUrl {
                host: "127.0.0.1".into(),
                port: 8443,
                path: "/ca".into()
            }
        );
    }

    #[test]
    fn a_config_holding_the_password_hash_is_a_secret_file() {
        let path = std::env::temp_dir().join(format!("xapsd-config-{}.json", std::process::id()));
        let hash = "ab".repeat(32);
        std::fs::write(&path, format!(r#"{{"apple_id_hashed_password":"{hash}"}}"#)).unwrap();
        let config = Config::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(config.secret_config_file.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn service_urls() {
        assert_eq!(
            HttpsUrl::parse(APPLE_CERT_SERVICE_URL).unwrap(),
            Config::default().apple_cert_service_url
        );
        assert_eq!(HttpsUrl::parse("https://[::1]:9/x").unwrap().host, "::1");
        assert_eq!(HttpsUrl::parse("https://[::1]/x").unwrap().port, 443);
        for bad in [
            "https://",
            "https://h:0/",
            "https://h/a b",
            "https://u@h/",
            "https://[::1/",
        ] {
            assert!(HttpsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[cfg(not(feature = "apple-id"))]
    #[test]
    fn apple_id_is_refused_by_a_build_without_the_feature() {
        let hash = "ab".repeat(32);
        let err = parse(&format!(
            r#"{{"apple_id":"a@b.c","apple_id_hashed_password":"{hash}","vendor_key_file":"k","vendor_chain_file":"c"}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("built without the Apple-ID certificate service"),
            "{err}"
        );
    }

    #[test]
    fn key_file_defaults_to_the_certificate_file() {
        let c = parse(r#"{"cert_file":"both.pem"}"#).unwrap();
        assert_eq!(c.key_path(), Some(Path::new("both.pem")));
    }

    #[test]
    fn endpoint_names() {
        assert_eq!(
            parse_endpoint("sandbox").unwrap().host(),
            "api.sandbox.push.apple.com"
        );
        assert_eq!(parse_endpoint("production").unwrap().port(), 443);
        assert_eq!(parse_endpoint("[::1]:9").unwrap().host(), "::1");
        assert!(parse_endpoint("host:0").is_err());
    }
}
