//! Provider-token authentication: a signed JWT per request instead of a
//! client certificate.
//!
//! An admin with an Apple developer account can download a `.p8` signing
//! key (P-256, PKCS#8) and push with it to any topic the team owns, without
//! a certificate that expires every year. APNs wants
//! `authorization: bearer <JWT>` with an ES256 JWT naming the key (`kid`)
//! and the team (`iss`) and the time it was made (`iat`); it refuses tokens
//! older than an hour and answers 429 TooManyProviderTokenUpdates to a
//! provider that makes new ones more often than every 20 minutes. So one
//! token is reused for `provider_token_reuse`, replaced early when Apple
//! says `ExpiredProviderToken`, and never replaced sooner than
//! `provider_token_min_interval` after the last one (both in [`Limits`]).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;

use super::{IdentityError, PushIdentity};
use crate::limits::Limits;

/// What reports call a token identity.
pub const KIND: &str = "provider token";

/// The reason APNs gives for a token past its hour.
const EXPIRED: &str = "ExpiredProviderToken";

/// Apple's key and team identifiers: ten upper-case letters and digits; we
/// accept any short run of ASCII letters and digits so the JWT needs no escaping.
pub fn valid_apple_id_field(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why a token could not be made (the system RNG failed).
#[derive(Debug)]
pub struct SignError;

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot sign the provider token (system random source failed)")
    }
}

/// Monotonic time since the first token identity of this process: one
/// origin for all of them, so a reloaded identity can take over the
/// schedule of the one it replaces.
fn mono_now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// What a token identity hands to its replacement (SIGHUP) when both sign
/// with the same key for the same team, so a reload does not make a new
/// token and count against Apple's 20-minute minimum.
#[derive(Clone)]
pub struct TokenHandoff {
    key_id: String,
    team_id: String,
    public_key: Vec<u8>,
    schedule: Schedule,
    header: Option<Arc<str>>,
}

/// When to make a new token; pure so it can be tested with any clock.
#[derive(Clone, Debug, Default)]
struct Schedule {
    /// Monotonic time the current token was made, if there is one.
    minted_at: Option<Duration>,
    /// APNs said the token expired: replace it as soon as the minimum
    /// interval allows.
    refresh_wanted: bool,
}

/// How long a token is reused and how soon it may be replaced; from
/// [`Limits`] so the integration tests can shorten both.
#[derive(Clone, Copy, Debug)]
struct Timing {
    reuse: Duration,
    min_interval: Duration,
}

impl Schedule {
    fn due(&self, now: Duration, timing: Timing) -> bool {
        match self.minted_at {
            None => true,
            Some(at) => {
                let age = now.saturating_sub(at);
                age >= timing.reuse || (self.refresh_wanted && age >= timing.min_interval)
            }
        }
    }
}

impl From<&Limits> for Timing {
    fn from(limits: &Limits) -> Timing {
        Timing {
            reuse: limits.provider_token_reuse,
            min_interval: limits.provider_token_min_interval,
        }
    }
}

struct Current {
    schedule: Schedule,
    /// The `authorization` header value in use.
    header: Option<Arc<str>>,
}

/// A `.p8` key with its key ID, team ID and the topic to push to.
pub struct TokenIdentity {
    key_id: String,
    team_id: String,
    topic: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    timing: Timing,
    current: Mutex<Current>,
}

impl TokenIdentity {
    /// Loads the `.p8` file (PEM, PKCS#8 P-256) Apple hands out.
    pub fn load(
        p8_path: &Path,
        key_id: &str,
        team_id: &str,
        topic: &str,
    ) -> Result<TokenIdentity, IdentityError> {
        let name = p8_path.display().to_string();
        let pem = super::pem::read(p8_path, "provider token key file")?;
        let pkcs8 = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(_) => {
                return Err(IdentityError::KeyRejected {
                    path: name,
                    reason: "a .p8 key must be PKCS#8 (-----BEGIN PRIVATE KEY-----)".into(),
                })
            }
            Err(_) => return Err(IdentityError::NoKey { path: name }),
        };
        Self::from_pkcs8(pkcs8.secret_pkcs8_der(), key_id, team_id, topic, &name)
    }

    /// Builds the identity from PKCS#8 DER; `name` is used in errors.
    pub fn from_pkcs8(
        pkcs8: &[u8],
        key_id: &str,
        team_id: &str,
        topic: &str,
        name: &str,
    ) -> Result<TokenIdentity, IdentityError> {
        let rejected = |reason: String| IdentityError::KeyRejected {
            path: name.to_owned(),
            reason,
        };
        if !valid_apple_id_field(key_id) || !valid_apple_id_field(team_id) {
            return Err(rejected(
                "key_id and team_id must be letters and digits".into(),
            ));
        }
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| rejected(format!("not a P-256 (ES256) key: {e}")))?;
        let identity = TokenIdentity {
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            topic: topic.to_owned(),
            key,
            rng,
            timing: Timing::from(&Limits::default()),
            current: Mutex::new(Current {
                schedule: Schedule::default(),
                header: None,
            }),
        };
        // Prove the key signs now rather than at the first push.
        identity
            .jwt(crate::clock::unix_now())
            .map_err(|e| rejected(e.to_string()))?;
        Ok(identity)
    }

    /// Takes the reuse time and minimum interval from `limits` (the
    /// defaults until this is called).
    pub fn with_limits(mut self, limits: &Limits) -> TokenIdentity {
        self.timing = Timing::from(limits);
        self
    }

    /// The key ID (`kid`), for reports; it is not a secret.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A new JWT with `iat` = `unix`.
    pub fn jwt(&self, unix: u64) -> Result<String, SignError> {
        let header = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, self.key_id);
        let claims = format!(r#"{{"iss":"{}","iat":{unix}}}"#, self.team_id);
        let mut token = BASE64URL_NOPAD.encode(header.as_bytes());
        token.push('.');
        token.push_str(&BASE64URL_NOPAD.encode(claims.as_bytes()));
        let signature = self
            .key
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| SignError)?;
        token.push('.');
        token.push_str(&BASE64URL_NOPAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// The header value at monotonic time `now` (since an arbitrary origin)
    /// and wall-clock `unix`: the clock is a parameter so tests can move it.
    pub fn authorization_at(&self, now: Duration, unix: u64) -> Option<Arc<str>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.schedule.due(now, self.timing) || current.header.is_none() {
            match self.jwt(unix) {
                Ok(jwt) => {
                    log::debug!("made a new provider token (iat {unix})");
                    current.header = Some(Arc::from(format!("bearer {jwt}")));
                    current.schedule = Schedule {
                        minted_at: Some(now),
                        refresh_wanted: false,
                    };
                }
                // Keep using the old token; APNs will say if it is too old.
                Err(e) => log::error!("{e}"),
            }
        }
        current.header.clone()
    }

    /// Records APNs' refusal at monotonic time `now`.
    pub fn rejected_at(&self, reason: &str, now: Duration) {
        if reason != EXPIRED {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !current.schedule.refresh_wanted {
            current.schedule.refresh_wanted = true;
            let wait = current
                .schedule
                .minted_at
                .map(|at| {
                    self.timing
                        .min_interval
                        .saturating_sub(now.saturating_sub(at))
                })
                .unwrap_or_default();
            log::warn!(
                "APNs says the provider token expired (is the clock right?); \
                 a new one is made in {}s",
                wait.as_secs()
            );
        }
    }
}

impl PushIdentity for TokenIdentity {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    fn not_after(&self) -> Option<i64> {
        None
    }

    fn client_certificate(&self) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn authorization(&self) -> Option<String> {
        self.authorization_at(mono_now(), crate::clock::unix_now())
            .map(|h| h.to_string())
    }

    fn rejected(&self, reason: &str) {
        self.rejected_at(reason, mono_now());
    }

    fn token_handoff(&self) -> Option<TokenHandoff> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Some(TokenHandoff {
            key_id: self.key_id.clone(),
            team_id: self.team_id.clone(),
            public_key: self.key.public_key().as_ref().to_vec(),
            schedule: current.schedule.clone(),
            header: current.header.clone(),
        })
    }

    fn adopt(&self, previous: &dyn PushIdentity) {
        let Some(old) = previous.token_handoff() else {
            return;
        };
        let same = old.key_id == self.key_id
            && old.team_id == self.team_id
            && old.public_key == self.key.public_key().as_ref();
        if same && old.header.is_some() {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            current.schedule = old.schedule;
            current.header = old.header;
            log::debug!("reload: the provider token in use is kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    const TOPIC: &str = "com.apple.mail.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab";
    const MIN: Duration = Duration::from_secs(60);

    fn identity() -> (TokenIdentity, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let id =
            TokenIdentity::from_pkcs8(pkcs8.as_ref(), "ABC123DEFG", "TEAM456789", TOPIC, "k.p8")
                .unwrap();
        let public = id.key.public_key().as_ref().to_vec();
        (id, public)
    }

    #[test]
    fn jwt_has_apples_shape_and_verifies() {
        let (id, public) = identity();
        let jwt = id.jwt(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = BASE64URL_NOPAD.decode(parts[0].as_bytes()).unwrap();
        let claims = BASE64URL_NOPAD.decode(parts[1].as_bytes()).unwrap();
        assert_eq!(header, br#"{"alg":"ES256","kid":"ABC123DEFG"}"#);
        assert_eq!(claims, br#"{"iss":"TEAM456789","iat":1700000000}"#);
        let signature = BASE64URL_NOPAD.decode(parts[2].as_bytes()).unwrap();
        assert_eq!(signature.len(), 64, "ES256 is r||s, not DER");
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        assert!(id.client_certificate().is_none());
        assert!(id.not_after().is_none());
    }

    #[test]
    fn one_token_is_reused_for_forty_minutes() {
        let (id, _) = identity();
        let t0 = Duration::from_secs(1000);
        let first = id.authorization_at(t0, 1).unwrap();
        assert!(first.starts_with("bearer "));
        assert_eq!(id.authorization_at(t0 + 39 * MIN, 2).unwrap(), first);
        let second = id.authorization_at(t0 + 40 * MIN, 3).unwrap();
        assert_ne!(second, first);
        assert_eq!(id.authorization_at(t0 + 41 * MIN, 4).unwrap(), second);
    }

    #[test]
    fn expired_token_is_refreshed_early_but_not_within_twenty_minutes() {
        let (id, _) = identity();
        let t0 = Duration::from_secs(5);
        let first = id.authorization_at(t0, 1).unwrap();
        // Apple says expired five minutes in: too soon to make a new one.
        id.rejected_at(EXPIRED, t0 + 5 * MIN);
        assert_eq!(id.authorization_at(t0 + 5 * MIN, 2).unwrap(), first);
        assert_eq!(id.authorization_at(t0 + 19 * MIN, 3).unwrap(), first);
        // At twenty minutes the refresh happens, before the forty-minute reuse ends.
        let second = id.authorization_at(t0 + 20 * MIN, 4).unwrap();
        assert_ne!(second, first);
        // Another "expired" right away waits twenty minutes from the new token.
        id.rejected_at(EXPIRED, t0 + 21 * MIN);
        assert_eq!(id.authorization_at(t0 + 39 * MIN, 5).unwrap(), second);
        assert_ne!(id.authorization_at(t0 + 40 * MIN, 6).unwrap(), second);
    }

    #[test]
    fn the_schedule_comes_from_the_limits_given() {
        let limits = Limits {
            provider_token_reuse: 3 * MIN,
            provider_token_min_interval: MIN,
            ..Limits::default()
        };
        let id = identity().0.with_limits(&limits);
        let first = id.authorization_at(Duration::ZERO, 1).unwrap();
        id.rejected_at(EXPIRED, Duration::ZERO);
        assert_eq!(id.authorization_at(MIN / 2, 2).unwrap(), first);
        let second = id.authorization_at(MIN, 3).unwrap();
        assert_ne!(second, first);
        assert_eq!(id.authorization_at(MIN * 3 + MIN / 2, 4).unwrap(), second);
        assert_ne!(id.authorization_at(MIN * 4, 5).unwrap(), second);
    }

    #[test]
    fn other_rejections_do_not_churn_tokens() {
        let (id, _) = identity();
        let first = id.authorization_at(Duration::ZERO, 1).unwrap();
        for reason in ["InvalidProviderToken", "BadTopic", "MissingProviderToken"] {
            id.rejected_at(reason, 25 * MIN);
        }
        assert_eq!(id.authorization_at(25 * MIN, 2).unwrap(), first);
    }

    #[test]
    fn a_reload_with_the_same_key_keeps_the_token_and_another_key_does_not() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let load = |kid: &str| {
            TokenIdentity::from_pkcs8(pkcs8.as_ref(), kid, "TEAM1", TOPIC, "k.p8").unwrap()
        };
        let old = load("KEY1");
        let t = 3 * MIN;
        let token = old.authorization_at(t, 1).unwrap();
        let reloaded = load("KEY1");
        reloaded.adopt(&old);
        assert_eq!(reloaded.authorization_at(t + MIN, 2).unwrap(), token);
        // The schedule came along: the token is still replaced at 40 minutes.
        assert_ne!(reloaded.authorization_at(t + 40 * MIN, 3).unwrap(), token);
        let other = load("KEY2");
        other.adopt(&old);
        assert_ne!(other.authorization_at(t + MIN, 4).unwrap(), token);
    }

    #[test]
    fn bad_keys_and_ids_are_refused() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        assert!(TokenIdentity::from_pkcs8(b"junk", "A", "B", TOPIC, "k").is_err());
        for (kid, team) in [("", "B"), ("A\"", "B"), ("A", "B.C")] {
            assert!(TokenIdentity::from_pkcs8(pkcs8.as_ref(), kid, team, TOPIC, "k").is_err());
        }
    }
}
