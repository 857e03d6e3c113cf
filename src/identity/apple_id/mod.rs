//! Push certificates from Apple's certificate service, requested with an
//! Apple ID and renewed by the daemon itself.
//!
//! This is what macOS Server did: five new RSA keys and CSRs, a plist
//! signed with the macOS Server vendor key, POSTed to
//! `.../caservice/new` (or `/renew` with the current serial numbers); the
//! mail certificate pushes. Apple retired the service in October 2024, and
//! a daemon that crash-looped once made it issue tens of thousands of
//! certificates for one account. So the one rule above all: the time of a
//! request is stored durably *before* it is sent, and no second request
//! goes out within `apple_cert_request_interval_hours`, whatever restarts in
//! between. Failures are logged with Apple's codes and the daemon keeps
//! serving with what it has (or in dry run). Certificates and their keys
//! live in the store, which keeps them as opaque bytes.

pub mod csr;
pub mod plist;
pub mod service;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use self::plist::{Account, CertRequest, ServiceAnswer, MAIL_SERVICE, SERVICES};
use self::service::Endpoint;
use super::pem::{certificate_facts, CertificateFacts, PemIdentity};
use super::{IdentitySlot, PushIdentity};
use crate::clock::{format_utc, format_utc_minute, unix_now};
use crate::config::AppleIdConfig;
use crate::limits;
use crate::privacy::Short;
use crate::store::{Store, StoreError, StoredCert};

/// What the startup report calls this identity.
pub const KIND: &str = "Apple ID certificate";

/// The store's meta name for the unix time of the last request to Apple.
pub const LAST_REQUEST: &str = "apple_cert_last_request";

/// A wall clock before this (2025-01-01) is not set yet (routers without an
/// RTC boot in 1970): no request is made on such a clock.
const PLAUSIBLE_TIME: u64 = 1_735_689_600;

/// Why a request for certificates failed.
#[derive(Debug)]
pub enum AppleIdError {
    Vendor(csr::CsrError),
    Key(csr::CsrError),
    Service(service::ServiceError),
    Http {
        status: u16,
    },
    Answer(plist::PlistError),
    Refused {
        code: i64,
        message: String,
        description: String,
    },
    /// The answer's certificates do not fit what was asked.
    Unusable(String),
    Store(StoreError),
}

/// A sentence of help for the service's known error codes.
pub fn help_for(code: i64) -> Option<&'static str> {
    match code {
        -80010 => Some(
            "Apple retired this certificate service in October 2024: it issues and renews \
             nothing any more; certificates it issued keep working until they expire, then \
             configure cert_file, p12_file or a provider token (p8_file).",
        ),
        -20358 => Some(
            "Apple refuses Apple IDs with two-factor authentication here; use an Apple ID \
             without it.",
        ),
        _ => None,
    }
}

impl fmt::Display for AppleIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppleIdError::Vendor(e) => write!(f, "vendor identity: {e}"),
            AppleIdError::Key(e) => f.write_str(&e.to_string()),
            AppleIdError::Service(e) => write!(f, "certificate service: {e}"),
            AppleIdError::Http { status } => {
                write!(f, "certificate service answered HTTP {status}")
            }
            AppleIdError::Answer(e) => write!(f, "certificate service: {e}"),
            AppleIdError::Refused {
                code,
                message,
                description,
            } => {
                write!(
                    f,
                    "certificate service refused: ErrorCode {code}, ErrorMessage {message:?}, \
                     ErrorDescription {description:?}"
                )?;
                if let Some(help) = help_for(*code) {
                    write!(f, ". {help}")?;
                }
                Ok(())
            }
            AppleIdError::Unusable(why) => write!(f, "certificate service answer: {why}"),
            AppleIdError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AppleIdError {}

/// The mail certificate among stored ones, as a push identity.
pub fn stored_identity(certs: &[StoredCert]) -> Result<Option<PemIdentity>, AppleIdError> {
    let Some(mail) = certs.iter().find(|c| c.name == MAIL_SERVICE) else {
        return Ok(None);
    };
    identity_from(&mail.cert_der, &mail.key_der).map(Some)
}

fn identity_from(cert_der: &[u8], key_der: &[u8]) -> Result<PemIdentity, AppleIdError> {
    let unusable = |e: super::IdentityError| AppleIdError::Unusable(e.to_string());
    let facts = certificate_facts(cert_der, "the mail certificate").map_err(unusable)?;
    PemIdentity::from_parts(
        KIND,
        vec![CertificateDer::from(cert_der.to_vec())],
        PrivateKeyDer::Pkcs8(key_der.to_vec().into()),
        facts,
        "the store",
    )
    .map_err(unusable)
}

fn mail_facts(certs: &[StoredCert]) -> Option<CertificateFacts> {
    let mail = certs.iter().find(|c| c.name == MAIL_SERVICE)?;
    certificate_facts(&mail.cert_der, "the mail certificate").ok()
}

/// Upper-case hex of a DER certificate's serial number.
fn serial_hex(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(data_encoding::HEXUPPER.encode(cert.raw_serial()))
}

/// What the renewal task decided to do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask the service.
    Request(Endpoint),
    /// Nothing due, or not allowed yet: look again after this long.
    Wait(Duration, Hold),
}

/// Why no request goes out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The mail certificate is not within 30 days of expiry.
    NotDue,
    /// The wall clock is before 2025.
    ClockNotSet,
    /// The last request was less than the interval ago.
    RateLimit,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hold::NotDue => "renewal not due yet",
            Hold::ClockNotSet => "the system clock is not set",
            Hold::RateLimit => "rate limit",
        })
    }
}

/// The renewal decision at unix time `now`, from the mail certificate's
/// notAfter (if one is stored) and the last request's time. Pure, so the
/// rate gate can be tested at any clock.
pub fn decide(
    now: u64,
    mail_not_after: Option<i64>,
    last: Option<u64>,
    interval: Duration,
) -> Next {
    let endpoint = match mail_not_after {
        None => Endpoint::New,
        Some(not_after) => {
            let due = not_after - limits::APPLE_CERT_RENEW_DAYS * 86_400;
            if (now as i64) < due {
                return Next::Wait(Duration::from_secs((due - now as i64) as u64), Hold::NotDue);
            }
            Endpoint::Renew
        }
    };
    if now < PLAUSIBLE_TIME {
        return Next::Wait(Duration::from_secs(3600), Hold::ClockNotSet);
    }
    if let Some(last) = last {
        // A last request "in the future" (the clock went back) waits too.
        let next = last.saturating_add(interval.as_secs());
        if now < next {
            return Next::Wait(Duration::from_secs(next - now), Hold::RateLimit);
        }
    }
    Next::Request(endpoint)
}

/// Requests and renews the certificates, forever; see the module text.
pub struct Renewer {
    config: AppleIdConfig,
    store: Store,
    slot: IdentitySlot,
    tls: Arc<rustls::ClientConfig>,
}

impl Renewer {
    pub fn new(
        config: AppleIdConfig,
        store: Store,
        slot: IdentitySlot,
        tls: Arc<rustls::ClientConfig>,
    ) -> Renewer {
        Renewer {
            config,
            store,
            slot,
            tls,
        }
    }

    /// Runs until cancelled (shutdown).
    pub async fn run(self) {
        log::debug!(
            "Apple-ID certificate service for {} at {}",
            Short(&self.config.apple_id),
            self.config.service_url.host
        );
        loop {
            let wait = self.step().await;
            async_io::Timer::after(wait.min(limits::APPLE_CERT_RECHECK)).await;
        }
    }

    /// One decision, and the request if it is due; returns how long to wait.
    async fn step(&self) -> Duration {
        let interval = self.config.request_interval;
        let (certs, last) = match (self.store.certs(), self.store.meta(LAST_REQUEST)) {
            (Ok(c), Ok(l)) => (c, l),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("Apple-ID certificates: cannot read the store: {e}");
                return interval;
            }
        };
        let now = unix_now();
        let not_after = mail_facts(&certs).map(|f| f.not_after);
        let endpoint = match decide(now, not_after, last, interval) {
            Next::Request(endpoint) => endpoint,
            Next::Wait(wait, why) => {
                if why != Hold::NotDue {
                    log::info!(
                        "Apple certificate request waits ({why}): next one allowed at {}{}",
                        format_utc_minute((now + wait.as_secs()) as i64),
                        last.map(|l| format!(", last request {}", format_utc_minute(l as i64)))
                            .unwrap_or_default()
                    );
                }
                return wait;
            }
        };
        // The gate first, durably: a crash after this line costs one request
        // at most, never a storm.
        if let Err(e) = self.store.set_meta(LAST_REQUEST, now).await {
            log::error!(
                "Apple-ID certificates: cannot record the request time, not asking Apple: {e}"
            );
            return interval;
        }
        log::info!(
            "asking Apple's certificate service for push certificates ({}); next request allowed in {} hours",
            endpoint.path(),
            interval.as_secs() / 3600
        );
        match self.request(endpoint, &certs).await {
            Ok(identity) => {
                let topic = identity.topic().to_owned();
                let identity: Arc<dyn PushIdentity> = Arc::new(identity);
                log::info!(
                    "Apple-ID certificates stored; {}",
                    super::describe(identity.as_ref(), now as i64)
                );
                let old = self.slot.replace(identity);
                log::info!("the new push certificate is in force; queued pushes continue with it");
                match old {
                    Some(old) if old != topic => log::warn!(
                        "the push topic changed: devices must register again before they get pushes"
                    ),
                    Some(_) => {}
                    None => log::info!(
                        "devices that registered during the dry run get pushes once they register again"
                    ),
                }
                // Decide again at once: the gate, written above, keeps
                // this from becoming a second request.
                Duration::ZERO
            }
            Err(e) => {
                let serving = match self.slot.get().1 {
                    Some(current) => format!(
                        "keeps serving with the current certificate (valid until {})",
                        current.not_after().map(format_utc).unwrap_or_default()
                    ),
                    None => "stays in dry run (no certificate yet)".into(),
                };
                log::error!("Apple-ID certificate request failed: {e}; xapsd {serving}");
                interval
            }
        }
    }

    async fn request(
        &self,
        endpoint: Endpoint,
        current: &[StoredCert],
    ) -> Result<PemIdentity, AppleIdError> {
        let vendor =
            csr::Vendor::load(&self.config.vendor_key_file, &self.config.vendor_chain_file)
                .map_err(AppleIdError::Vendor)?;
        // Five RSA key generations: seconds of CPU, off the event loop.
        let keys = blocking::unblock(|| {
            SERVICES
                .iter()
                .map(|(_, cn, _)| csr::new_key(cn))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(AppleIdError::Key)?;
        let host = hostname();
        let requests: Vec<CertRequest> = SERVICES
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(i, ((service, _, short), key))| CertRequest {
                number: i as u64,
                service_type: (*service).to_owned(),
                csr_pem: key.csr_pem.clone(),
                description: format!("{host} - apns:com.apple.{short}"),
                serial: match endpoint {
                    Endpoint::New => None,
                    Endpoint::Renew => current
                        .iter()
                        .find(|c| c.name == *service)
                        .and_then(|c| serial_hex(&c.cert_der)),
                },
            })
            .collect();
        let account = Account {
            name: &self.config.apple_id,
            password_hash: &self.config.password_hash,
        };
        let inner = plist::inner_request(&account, &requests);
        let signature = vendor.sign(&inner).map_err(AppleIdError::Vendor)?;
        let body = plist::outer_request(&vendor.chain_der, &inner, &signature);
        let answer = service::post(
            &self.config.service_url,
            endpoint,
            &body,
            Arc::clone(&self.tls),
            limits::APPLE_CERT_REQUEST_TIMEOUT,
            limits::MAX_APPLE_CERT_ANSWER,
        )
        .await
        .map_err(AppleIdError::Service)?;
        let parsed = plist::parse_response(&answer.body);
        let issued = match (answer.status, parsed) {
            (
                _,
                Ok(ServiceAnswer::Refused {
                    code,
                    message,
                    description,
                }),
            ) => {
                return Err(AppleIdError::Refused {
                    code,
                    message,
                    description,
                })
            }
            (200, Ok(ServiceAnswer::Issued(issued))) => issued,
            (200, Err(e)) => return Err(AppleIdError::Answer(e)),
            (status, _) => return Err(AppleIdError::Http { status }),
        };
        let stored = match_issued(&issued, &keys)?;
        let mail = stored
            .iter()
            .find(|c| c.name == MAIL_SERVICE)
            .ok_or_else(|| AppleIdError::Unusable("no certificate for Service_Mail".into()))?;
        let identity = identity_from(&mail.cert_der, &mail.key_der)?;
        // Stored before use: the old certificate stays in force until then.
        self.store
            .put_certs(stored)
            .await
            .map_err(AppleIdError::Store)?;
        Ok(identity)
    }
}

/// Pairs each issued certificate with the key it was asked for, checking
/// that the certificate really carries that key.
fn match_issued(
    issued: &[plist::IssuedCert],
    keys: &[csr::NewKey],
) -> Result<Vec<StoredCert>, AppleIdError> {
    let mut stored = Vec::new();
    for cert in issued {
        let index = cert
            .number
            .map(|n| n as usize)
            .or_else(|| {
                let service = cert.service_type.as_deref()?;
                SERVICES.iter().position(|(s, _, _)| *s == service)
            })
            .filter(|i| *i < SERVICES.len())
            .ok_or_else(|| AppleIdError::Unusable("a certificate for no request".into()))?;
        let der = <CertificateDer<'_> as rustls::pki_types::pem::PemObject>::from_pem_slice(
            cert.cert_pem.as_bytes(),
        )
        .map_err(|_| {
            AppleIdError::Unusable(format!("{} is not a PEM certificate", SERVICES[index].0))
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| AppleIdError::Unusable(e.to_string()))?;
        if parsed.public_key().raw != keys[index].spki_der.as_slice() {
            return Err(AppleIdError::Unusable(format!(
                "the {} certificate is not for the key it was asked for",
                SERVICES[index].0
            )));
        }
        stored.push(StoredCert {
            name: SERVICES[index].0.to_owned(),
            cert_der: der.to_vec(),
            key_der: keys[index].key_pkcs8.clone(),
        });
    }
    Ok(stored)
}

/// The name macOS Server put in each Description.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "xapsd".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: u64 = 1_800_000_000;
    const HOURS_24: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn first_request_then_the_rate_gate_then_renewal_30_days_ahead() {
        assert_eq!(
            decide(NOW, None, None, HOURS_24),
            Next::Request(Endpoint::New)
        );
        // Asked an hour ago: 23 hours to wait, however often we restart.
        assert_eq!(
            decide(NOW, None, Some(NOW - 3600), HOURS_24),
            Next::Wait(Duration::from_secs(23 * 3600), Hold::RateLimit)
        );
        assert_eq!(
            decide(NOW, None, Some(NOW - 24 * 3600), HOURS_24),
            Next::Request(Endpoint::New)
        );
        // A clock that went back behind the last request waits too.
        assert!(matches!(
            decide(NOW, None, Some(NOW + 3600), HOURS_24),
            Next::Wait(_, Hold::RateLimit)
        ));
        let not_after = NOW as i64 + 40 * DAY;
        assert_eq!(
            decide(NOW, Some(not_after), None, HOURS_24),
            Next::Wait(Duration::from_secs(10 * DAY as u64), Hold::NotDue)
        );
        assert_eq!(
            decide(
                NOW,
                Some(NOW as i64 + 29 * DAY),
                Some(NOW - 25 * 3600),
                HOURS_24
            ),
            Next::Request(Endpoint::Renew)
        );
        assert!(matches!(
            decide(1000, None, None, HOURS_24),
            Next::Wait(_, Hold::ClockNotSet)
        ));
    }

    #[test]
    fn known_codes_get_help() {
        let e = AppleIdError::Refused {
            code: -80010,
            message: "ServiceType is Invalid".into(),
            description: String::new(),
        };
        let text = e.to_string();
        assert!(
            text.contains("ErrorCode -80010, ErrorMessage \"ServiceType is Invalid\""),
            "{text}"
        );
        assert!(
            text.contains("retired this certificate service in October 2024"),
            "{text}"
        );
        assert!(help_for(-20358).unwrap().contains("two-factor"));
        assert_eq!(help_for(-1), None);
    }
}
