//! `GET /health` and `GET /metrics`: what the daemon's counters say, rendered.
//!
//! The counters stay where the work is counted (the dispatcher, each plugin
//! front end, the APNs client); this module only reads them and renders a
//! health verdict for supervisors and load balancers, and the Prometheus
//! text format for scrapers. It never shows a token, an account id or a user
//! name: only counts and the daemon's own topic.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::apns::ApnsClient;
use crate::dispatch::Dispatcher;
use crate::identity::IdentitySlot;
use crate::plugin::FrontEndStats;
use crate::store::Store;

/// Everything the reports read; built once by the daemon.
pub struct Sources {
    pub store: Store,
    pub identity: IdentitySlot,
    pub apns: ApnsClient,
    pub dispatcher: Dispatcher,
    pub http: Arc<FrontEndStats>,
    /// Present when `legacy_socket` is configured.
    pub legacy: Option<Arc<FrontEndStats>>,
}

/// The health verdict and its few lines of explanation.
#[derive(Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub text: String,
}

/// Healthy when the store can be read, the identity (if any) has not
/// expired, and the last attempt to reach APNs (if any) did not fail. No
/// APNs connection yet is fine: the client connects on the first push.
pub fn health(src: &Sources, now: i64) -> Health {
    let mut problems = 0;
    let mut lines = Vec::new();
    match src.store.device_count() {
        Ok(n) => lines.push(format!("store: readable, {n} device(s)")),
        Err(e) => {
            problems += 1;
            lines.push(format!("store: UNREADABLE: {e}"));
        }
    }
    match src.identity.get().1 {
        None => lines.push("identity: none (dry run)".to_owned()),
        Some(identity) => match identity.not_after() {
            Some(t) if t <= now => {
                problems += 1;
                lines.push(format!("identity: EXPIRED {}", crate::clock::format_utc(t)));
            }
            Some(t) => lines.push(format!(
                "identity: {} valid until {}",
                identity.kind(),
                crate::clock::format_utc(t)
            )),
            None => lines.push(format!("identity: {}", identity.kind())),
        },
    }
    let apns = &src.apns;
    if src.identity.is_dry_run() {
        lines.push("apns: not used (dry run)".to_owned());
    } else if apns.stats().failing.load(Ordering::Relaxed) {
        problems += 1;
        lines.push("apns: FAILING (the last connection attempt failed)".to_owned());
    } else if apns_connected(apns) {
        lines.push("apns: connected".to_owned());
    } else {
        lines.push("apns: not connected (connects on the next push)".to_owned());
    }
    let healthy = problems == 0;
    let mut text = String::from(if healthy { "ok\n" } else { "unhealthy\n" });
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    Health { healthy, text }
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn metrics(src: &Sources, now: i64) -> String {
    let mut out = Metrics(String::with_capacity(2048));
    let d = src.dispatcher.stats();
    let load = |a: &portable_atomic::AtomicU64| a.load(Ordering::Relaxed);

    out.family(
        "xapsd_registrations",
        "gauge",
        "Devices registered in the store.",
    );
    match src.store.device_count() {
        Ok(n) => out.sample("xapsd_registrations", "", n),
        Err(_) => out.comment("store unreadable"),
    }

    out.family(
        "xapsd_pushes_total",
        "counter",
        "Pushes by result: delivered, device_gone (registration removed), retried, given_up, credential_error, dry_run (logged, not sent), dropped (queue full).",
    );
    for (result, n) in [
        ("delivered", load(&d.delivered)),
        ("device_gone", load(&d.devices_removed)),
        ("retried", load(&d.retried)),
        ("given_up", load(&d.given_up)),
        ("credential_error", load(&d.credential_errors)),
        ("dry_run", load(&d.dry_run)),
        ("dropped", load(&d.dropped)),
    ] {
        out.sample("xapsd_pushes_total", &format!("result=\"{result}\""), n);
    }

    out.family(
        "xapsd_push_queue_depth",
        "gauge",
        "Pushes waiting for APNs.",
    );
    out.sample(
        "xapsd_push_queue_depth",
        "",
        src.dispatcher.queue_depth() as u64,
    );
    out.family(
        "xapsd_pushes_in_flight",
        "gauge",
        "Pushes sent to APNs and not yet answered.",
    );
    out.sample(
        "xapsd_pushes_in_flight",
        "",
        d.in_flight.load(Ordering::Relaxed) as u64,
    );

    let mut front_ends = vec![("http", &src.http)];
    if let Some(legacy) = &src.legacy {
        front_ends.push(("legacy", legacy));
    }
    for (name, kind, help) in [
        (
            "xapsd_plugin_connections_open",
            "gauge",
            "Plugin connections open now.",
        ),
        (
            "xapsd_plugin_connections_refused_total",
            "counter",
            "Plugin connections closed at once because too many were open.",
        ),
        (
            "xapsd_plugin_requests_total",
            "counter",
            "Requests read from the plugin.",
        ),
        (
            "xapsd_plugin_errors_total",
            "counter",
            "Requests answered with an error.",
        ),
    ] {
        out.family(name, kind, help);
        for (front_end, stats) in &front_ends {
            let n = match name {
                "xapsd_plugin_connections_open" => stats.open.load(Ordering::Relaxed) as u64,
                "xapsd_plugin_connections_refused_total" => load(&stats.refused_over_limit),
                "xapsd_plugin_requests_total" => load(&stats.requests),
                _ => load(&stats.bad_requests),
            };
            out.sample(name, &format!("frontend=\"{front_end}\""), n);
        }
    }

    let a = src.apns.stats();
    out.family(
        "xapsd_apns_connects_total",
        "counter",
        "APNs connections established.",
    );
    out.sample("xapsd_apns_connects_total", "", load(&a.connects));
    out.family(
        "xapsd_apns_connect_failures_total",
        "counter",
        "Failed attempts to connect to APNs.",
    );
    out.sample(
        "xapsd_apns_connect_failures_total",
        "",
        load(&a.connect_failures),
    );
    out.family(
        "xapsd_apns_connected",
        "gauge",
        "1 while an APNs connection is up.",
    );
    out.sample(
        "xapsd_apns_connected",
        "",
        u64::from(apns_connected(&src.apns)),
    );

    out.family(
        "xapsd_certificate_expiry_seconds",
        "gauge",
        "Seconds until the push identity expires (negative: expired); absent in dry run.",
    );
    if let Some(t) = src.identity.get().1.and_then(|i| i.not_after()) {
        let _ = writeln!(out.0, "xapsd_certificate_expiry_seconds {}", t - now);
    }
    out.0
}

/// Up, and not between failed attempts (while the client retries, its
/// connection slot is busy and reads as connected).
fn apns_connected(apns: &ApnsClient) -> bool {
    !apns.stats().failing.load(Ordering::Relaxed) && apns.connected()
}

struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.0, "# {text}");
    }
}
