//! Push identities: what the APNs client authenticates with.
//!
//! Admins arrive with a PEM certificate, a PKCS#12 bundle, a provider token
//! key or an Apple ID. The APNs client should not care which: it asks the
//! current [`PushIdentity`] for a TLS client certificate and/or a request
//! `authorization` header and for the topic, the way rustls asks a crypto
//! provider. [`IdentitySlot`] holds the identity in force so it can be
//! swapped (SIGHUP, renewal) while pushes keep flowing.

#[cfg(feature = "apple-id")]
pub mod apple_id;
#[cfg(feature = "pkcs12")]
pub mod p12;
pub mod pem;
pub mod token;

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

/// Topic handed to devices in dry run. It only has to be longer than 50
/// bytes: the plugin aborts the IMAP process on a shorter answer.
pub const DRY_RUN_TOPIC: &str = "com.apple.mail.XServer.00000000-0000-0000-0000-000000000000";

/// Something that can authenticate pushes to APNs.
pub trait PushIdentity: Send + Sync + 'static {
    /// What the admin configured, for logs: "PEM certificate", ...
    fn kind(&self) -> &'static str;
    /// The APNs topic devices must register with.
    fn topic(&self) -> &str;
    /// Unix seconds after which the identity stops working, if known.
    fn not_after(&self) -> Option<i64>;
    /// The TLS client certificate to present, for certificate identities.
    fn client_certificate(&self) -> Option<Arc<CertifiedKey>>;
    /// The `authorization` header for each request, for token identities.
    fn authorization(&self) -> Option<String> {
        None
    }
    /// APNs refused the credentials with this reason (e.g. a token identity
    /// refreshes early on `ExpiredProviderToken`).
    fn rejected(&self, _reason: &str) {}
    /// Token identities: the token in use and its schedule, for a reload.
    fn token_handoff(&self) -> Option<token::TokenHandoff> {
        None
    }
    /// Called on the new identity before it replaces `previous` (SIGHUP),
    /// so it can take over state that must outlive a reload.
    fn adopt(&self, _previous: &dyn PushIdentity) {}
}

/// Why an identity could not be loaded.
#[derive(Debug)]
pub enum IdentityError {
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    NoCertificate {
        path: String,
    },
    NoKey {
        path: String,
    },
    BadCertificate {
        path: String,
        reason: String,
    },
    NoTopic {
        path: String,
    },
    KeyRejected {
        path: String,
        reason: String,
    },
    /// A PKCS#12 bundle that cannot be opened (wrong password, unsupported
    /// encryption, not PKCS#12 at all).
    P12 {
        path: String,
        reason: String,
    },
    /// This build leaves out PKCS#12 support (cargo feature `pkcs12`).
    P12Unsupported,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Read { what, path, source } => {
                write!(f, "cannot read {what} {path}: {source}")
            }
            IdentityError::NoCertificate { path } => write!(f, "{path} holds no PEM certificate"),
            IdentityError::NoKey { path } => write!(f, "{path} holds no PEM private key"),
            IdentityError::BadCertificate { path, reason } => {
                write!(f, "certificate in {path} cannot be parsed: {reason}")
            }
            IdentityError::NoTopic { path } => write!(
                f,
                "certificate in {path} has no UID in its subject, so it names no push topic; \
                 is it an Apple push certificate?"
            ),
            IdentityError::KeyRejected { path, reason } => {
                write!(f, "private key in {path} is not usable: {reason}")
            }
            IdentityError::P12 { path, reason } => {
                write!(f, "cannot open PKCS#12 file {path}: {reason}")
            }
            IdentityError::P12Unsupported => f.write_str(
                "this xapsd was built without PKCS#12 support (cargo feature `pkcs12`); \
                 convert the bundle to PEM with `openssl pkcs12 -nodes` and use cert_file",
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

/// A human summary of an identity: the startup report line.
pub fn describe(identity: &dyn PushIdentity, now: i64) -> String {
    match identity.not_after() {
        Some(t) => {
            let days = (t - now).div_euclid(86_400);
            format!(
                "push identity: {}, topic {}, valid until {} ({} days left)",
                identity.kind(),
                identity.topic(),
                crate::clock::format_utc(t),
                days
            )
        }
        None => format!(
            "push identity: {}, topic {}, no expiry date (tokens are renewed as they are used)",
            identity.kind(),
            identity.topic()
        ),
    }
}

/// Something the startup report and `check-config` point out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Works now, needs attention soon.
    Warning(String),
    /// Pushes (or the plugin) will fail with it.
    Unusable(String),
}

/// What is wrong or soon wrong with an identity at unix time `now`.
pub fn assess(identity: &dyn PushIdentity, now: i64) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(t) = identity.not_after() {
        let days = (t - now).div_euclid(86_400);
        if t <= now {
            findings.push(Finding::Unusable(format!(
                "the push certificate expired on {}: APNs will refuse every push",
                crate::clock::format_utc(t)
            )));
        } else if days < crate::limits::CERT_WARN_DAYS {
            findings.push(Finding::Warning(format!(
                "the push certificate expires in {days} days ({}): renew it",
                crate::clock::format_utc(t)
            )));
        }
    }
    if identity.topic().len() <= 50 {
        findings.push(Finding::Unusable(format!(
            "topic `{}` is 50 bytes or shorter: the Dovecot plugin aborts on such answers",
            identity.topic()
        )));
    }
    findings
}

struct Current {
    generation: u64,
    identity: Option<Arc<dyn PushIdentity>>,
}

/// The identity in force, shared by the service (topic) and the APNs client.
/// `None` means dry run.
#[derive(Clone)]
pub struct IdentitySlot {
    current: Arc<RwLock<Current>>,
}

impl IdentitySlot {
    pub fn new(identity: Option<Arc<dyn PushIdentity>>) -> Self {
        IdentitySlot {
            current: Arc::new(RwLock::new(Current {
                generation: 0,
                identity,
            })),
        }
    }

    /// The identity and its generation; the generation changes on every swap
    /// so a connection can tell it was made with an older one.
    pub fn get(&self) -> (u64, Option<Arc<dyn PushIdentity>>) {
        let c = self.current.read().unwrap_or_else(|e| e.into_inner());
        (c.generation, c.identity.clone())
    }

    /// Puts a new identity in force; returns the topic it replaced, if any.
    pub fn replace(&self, identity: Arc<dyn PushIdentity>) -> Option<String> {
        let mut c = self.current.write().unwrap_or_else(|e| e.into_inner());
        let old = c.identity.as_ref().map(|i| i.topic().to_owned());
        c.identity = Some(identity);
        c.generation += 1;
        old
    }

    /// The topic to hand to registering devices.
    pub fn topic(&self) -> String {
        match self.get().1 {
            Some(identity) => identity.topic().to_owned(),
            None => DRY_RUN_TOPIC.to_owned(),
        }
    }

    pub fn is_dry_run(&self) -> bool {
        self.get().1.is_none()
    }
}
