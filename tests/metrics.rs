//! `GET /health` and `GET /metrics` on the real binary: the verdict follows
//! the APNs connection, and the counters follow what the plugin and APNs did.

mod support;

use support::certs::{TestCa, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::MockApns;
use support::plugin::{PluginClient, Response};
use support::TIMEOUT;

fn get(daemon: &Daemon, path: &str) -> Response {
    let mut client = PluginClient::connect(daemon.addr()).unwrap();
    client
        .raw(format!("GET {path} HTTP/1.1\r\nHost: xapsd\r\n\r\n").as_bytes())
        .unwrap()
}

/// The value of one sample line, `name{labels} value`.
fn sample(metrics: &str, series: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample `{series}` in:\n{metrics}"))
}

/// Scrapes until `ready` holds for the metrics text (an event the daemon
/// records after it logs it), or panics after [`TIMEOUT`].
fn wait_metrics(daemon: &Daemon, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let text = get(daemon, "/metrics").body_str();
        if ready(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never got there:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn health_and_metrics_follow_pushes_and_the_apns_connection() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
    let daemon = Daemon::start(DaemonConfig::new().apns(&mock, &push));

    let health = get(&daemon, "/health");
    assert_eq!(health.status, 200, "{}", health.body_str());
    assert!(health.body_str().starts_with("ok\n"));
    assert!(health.body_str().contains("apns: not connected"));

    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for f in ["01-register.http", "02-register.http", "03-notify.http"] {
        assert_eq!(plugin.replay_fixture(f).unwrap().status, 200);
    }
    mock.wait_for_requests(1, TIMEOUT);
    wait_metrics(&daemon, |t| {
        sample(t, "xapsd_pushes_total{result=\"delivered\"}") == 1
    });

    let m = get(&daemon, "/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = m.body_str();
    for family in [
        "xapsd_registrations gauge",
        "xapsd_pushes_total counter",
        "xapsd_push_queue_depth gauge",
        "xapsd_plugin_connections_open gauge",
        "xapsd_plugin_connections_refused_total counter",
        "xapsd_apns_connects_total counter",
        "xapsd_apns_connect_failures_total counter",
        "xapsd_certificate_expiry_seconds gauge",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
    }
    assert_eq!(
        text.matches("# HELP ").count(),
        text.matches("# TYPE ").count()
    );
    assert_eq!(sample(&text, "xapsd_registrations"), 2);
    assert_eq!(sample(&text, "xapsd_pushes_total{result=\"delivered\"}"), 1);
    assert_eq!(sample(&text, "xapsd_pushes_total{result=\"dropped\"}"), 0);
    assert_eq!(sample(&text, "xapsd_push_queue_depth"), 0);
    assert_eq!(sample(&text, "xapsd_apns_connects_total"), 1);
    assert_eq!(sample(&text, "xapsd_apns_connected"), 1);
    // At least this scrape's connection and the plugin's keep-alive one
    // (earlier scrapes' connections may still be closing).
    let open = sample(&text, "xapsd_plugin_connections_open{frontend=\"http\"}");
    assert!(open >= 2, "{open}");
    assert!(sample(&text, "xapsd_plugin_requests_total{frontend=\"http\"}") >= 5);
    assert_eq!(
        sample(
            &text,
            "xapsd_plugin_connections_refused_total{frontend=\"http\"}"
        ),
        0
    );
    let expiry = sample(&text, "xapsd_certificate_expiry_seconds");
    assert!(expiry > 86_400, "{expiry}");
    assert!(!text.contains("2918"), "no tokens in metrics");
    assert!(!text.contains("alice"), "no users in metrics");

    let health = get(&daemon, "/health");
    assert_eq!(health.status, 200);
    assert!(health.body_str().contains("apns: connected"));

    // APNs goes away: the next push cannot connect, and health says so.
    mock.set_down(true);
    assert_eq!(plugin.replay_fixture("04-notify.http").unwrap().status, 200);
    daemon.wait_log("cannot connect to APNs", TIMEOUT);
    let health = get(&daemon, "/health");
    assert_eq!(health.status, 503, "{}", health.body_str());
    assert!(health.body_str().starts_with("unhealthy\n"));
    assert!(health.body_str().contains("apns: FAILING"));
    let text = get(&daemon, "/metrics").body_str();
    assert!(sample(&text, "xapsd_apns_connect_failures_total") >= 1);
    assert_eq!(sample(&text, "xapsd_apns_connected"), 0);

    let mut client = PluginClient::connect(daemon.addr()).unwrap();
    let r = client
        .raw(b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
}

#[test]
fn dry_run_is_healthy_and_counts_what_it_did_not_send() {
    let daemon = Daemon::start(DaemonConfig::new());
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for f in ["01-register.http", "03-notify.http"] {
        assert_eq!(plugin.replay_fixture(f).unwrap().status, 200);
    }
    wait_metrics(&daemon, |t| {
        sample(t, "xapsd_pushes_total{result=\"dry_run\"}") == 1
    });
    let health = get(&daemon, "/health");
    assert_eq!(health.status, 200);
    assert!(health.body_str().contains("identity: none (dry run)"));
    let text = get(&daemon, "/metrics").body_str();
    assert_eq!(sample(&text, "xapsd_pushes_total{result=\"dry_run\"}"), 1);
    assert_eq!(sample(&text, "xapsd_registrations"), 1);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("xapsd_certificate_expiry_seconds")),
        "no identity, no expiry sample"
    );
}
