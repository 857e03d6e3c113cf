//! The Apple-ID certificate service end to end: the real daemon asks the
//! mock certificate service (which checks plists, the vendor signature and
//! the five CSRs) for certificates, stores them with their keys in redb,
//! pushes to the mock APNs with the mail certificate, renews it without
//! losing a push, never asks twice within the rate limit however often it
//! restarts, and keeps serving when Apple says no.
#![cfg(feature = "apple-id")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use support::certs::{TestCa, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::{MockApns, Request};
use support::mock_caservice::{MockCaService, Reply};
use support::plugin::PluginClient;
use support::tempdir::TempDir;
use support::TIMEOUT;
use xapsd::identity::apple_id::LAST_REQUEST;
use xapsd::identity::DRY_RUN_TOPIC;
use xapsd::store::{Store, StoreLimits};

const APPLE_ID: &str = "postmaster@example.org";
/// `printf '%s' 'correct horse battery staple' | sha256sum`
const PASSWORD_HASH: &str = "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a";
const ALICE_TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const ALICE_ACCOUNT: &str = "0715A26B-CA09-4730-A419-793000CA982E";
const DAY: Duration = Duration::from_secs(86_400);
/// Five RSA-2048 key generations in a debug build on a busy CI box.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);

/// A test CA, the mock APNs and certificate service it signs for, and
/// the vendor identity files (the committed RSA test key, not Apple's).
struct Apple {
    apns: MockApns,
    service: MockCaService,
    _files: TempDir,
    vendor_key: PathBuf,
    vendor_chain: PathBuf,
}

impl Apple {
    fn new(reply: Reply) -> Apple {
        let ca = Arc::new(TestCa::new());
        let apns = MockApns::start(&ca);
        let vendor = ca.vendor_cert_rsa();
        let files = TempDir::new("vendor");
        let vendor_key = files.write("vendor.key.pem", &vendor.key_pem);
        let vendor_chain = files.write(
            "vendor.chain.pem",
            format!("{}{}", vendor.cert_pem, ca.cert_pem()),
        );
        let service = MockCaService::start(ca, APPLE_ID, PASSWORD_HASH, &vendor.cert_der, reply);
        Apple {
            apns,
            service,
            _files: files,
            vendor_key,
            vendor_chain,
        }
    }

    fn config(&self) -> DaemonConfig {
        DaemonConfig::new()
            .str("apns_endpoint", &self.apns.endpoint())
            .path("apns_ca_file", self.apns.ca_pem_path())
            .str("apple_id", APPLE_ID)
            .str("apple_id_hashed_password", PASSWORD_HASH)
            .path("vendor_key_file", &self.vendor_key)
            .path("vendor_chain_file", &self.vendor_chain)
            .str("apple_cert_service_url", &self.service.url())
            .num("delay_secs", 0)
    }
}

fn issue(days: u64) -> Reply {
    Reply::Issue {
        mail_topic: TEST_TOPIC.to_string(),
        not_after: SystemTime::now() + DAY * days as u32,
    }
}

fn register(plugin: &mut PluginClient) -> String {
    let body = format!(
        r#"{{"ApsAccountId":"{ALICE_ACCOUNT}","ApsDeviceToken":"{ALICE_TOKEN}","ApsSubtopic":"com.apple.mobilemail","Username":"alice","Mailboxes": ["INBOX"]}}"#
    );
    let r = plugin.post("/register", &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    r.body_str()
}

fn new_mail(plugin: &mut PluginClient) {
    let body = r#"{"Username":"alice","Mailbox":"INBOX","Events": ["MessageNew"]}"#;
    assert_eq!(plugin.post("/notify", body).unwrap().status, 200);
}

/// Sends new mail and returns the `n`th push (1-based) the mock APNs got.
fn push(plugin: &mut PluginClient, apns: &MockApns, n: usize) -> Request {
    new_mail(plugin);
    apns.wait_for_requests(n, TIMEOUT).remove(n - 1)
}

/// Moves the stored time of the last request `ago` into the past, as if
/// that much time had gone by (the daemon is stopped).
fn rewind_last_request(db: &Path, ago: Duration) {
    let limits = StoreLimits::one_shot(64, 8);
    let store = Store::open(db, limits).unwrap();
    let last = store
        .meta(LAST_REQUEST)
        .unwrap()
        .expect("a request was recorded");
    async_io::block_on(store.set_meta(LAST_REQUEST, last - ago.as_secs())).unwrap();
    store.close();
}

fn assert_private(daemon: &Daemon) {
    let log = daemon.log_text();
    assert!(!log.contains(APPLE_ID), "the Apple ID is logged");
    assert!(!log.contains(PASSWORD_HASH), "the password hash is logged");
}

#[test]
fn first_certificates_are_requested_stored_and_pushed_with() {
    let apple = Apple::new(issue(300));
    let mut daemon = Daemon::start(apple.config());
    daemon.wait_log("no Apple-ID certificate stored yet: dry run", TIMEOUT);
    daemon.wait_log("the new push certificate is in force", ISSUE_TIMEOUT);
    let requests = apple.service.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/pushcert/caservice/new");
    assert!(
        requests[0].problems.is_empty(),
        "{:?}",
        requests[0].problems
    );
    let mail = requests[0].issued_mail_der.clone().unwrap();
    let in_force = daemon.wait_log(
        &format!("push identity: Apple ID certificate, topic {TEST_TOPIC}, valid until"),
        TIMEOUT,
    );
    // "valid until <date>", as the issued certificate says (the days left
    // may tick over between the two starts).
    let validity = &in_force[in_force.find("valid until").unwrap()..];
    let validity = validity.split(" (").next().unwrap();

    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(register(&mut plugin), TEST_TOPIC);
    let first = push(&mut plugin, &apple.apns, 1);
    assert_eq!(first.client_cert_der.as_deref(), Some(&mail[..]));
    assert_eq!(first.client_uid.as_deref(), Some(TEST_TOPIC));

    // The certificate and its key come back from the store after a crash.
    daemon.restart();
    daemon.wait_log(validity, TIMEOUT);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let second = push(&mut plugin, &apple.apns, 2);
    assert_eq!(second.client_cert_der.as_deref(), Some(&mail[..]));
    assert_eq!(apple.service.requests().len(), 1, "nothing to renew yet");
    assert_private(&daemon);

    // check-config reads the same from the store once the daemon is gone.
    daemon.kill9();
    let config = daemon.dir().write("check.json", daemon.config().to_json());
    let out = Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "push identity: Apple ID certificate, topic {TEST_TOPIC}"
        )) && text.contains("days left"),
        "{text}"
    );
    assert!(
        !text.contains(APPLE_ID) && !text.contains(PASSWORD_HASH),
        "{text}"
    );
}

#[test]
fn renewal_uses_the_new_certificate_without_losing_a_push() {
    // Ten days left: renewal is due, but the first request was just made.
    let apple = Apple::new(issue(10));
    let mut daemon = Daemon::start(apple.config());
    daemon.wait_log("the new push certificate is in force", ISSUE_TIMEOUT);
    daemon.wait_log("Apple certificate request waits (rate limit)", TIMEOUT);
    let old = apple.service.requests()[0].issued_mail_der.clone().unwrap();
    daemon.kill9();

    // A day later.
    rewind_last_request(&daemon.db_path(), DAY + Duration::from_secs(60));
    apple.service.set_reply(issue(300));
    apple.service.set_hold(true);
    daemon.restart();
    let renew = apple.service.wait_for_requests(2, ISSUE_TIMEOUT).remove(1);
    assert_eq!(renew.path, "/pushcert/caservice/renew");
    assert!(renew.problems.is_empty(), "{:?}", renew.problems);
    assert!(
        renew.serials.iter().all(Option::is_some),
        "{:?}",
        renew.serials
    );

    // Until the answer is stored, the old certificate pushes.
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(register(&mut plugin), TEST_TOPIC);
    let mark = daemon.log_mark();
    let before = push(&mut plugin, &apple.apns, 1);
    assert_eq!(before.client_cert_der.as_deref(), Some(&old[..]));
    daemon.wait_log_since(mark, ": delivered", TIMEOUT);

    // A push in flight while the certificate changes still gets through.
    let mark = daemon.log_mark();
    apple.apns.set_stall(true);
    new_mail(&mut plugin);
    apple.apns.wait_for_requests(2, TIMEOUT);
    apple.service.set_hold(false);
    daemon.wait_log_since(mark, "the new push certificate is in force", TIMEOUT);
    apple.apns.set_stall(false);
    daemon.wait_log_since(mark, ": delivered", TIMEOUT);

    let new = apple.service.requests()[1].issued_mail_der.clone().unwrap();
    assert_ne!(new, old);
    let n = apple.apns.request_count() + 1;
    let mark = daemon.log_mark();
    let after = push(&mut plugin, &apple.apns, n);
    daemon.wait_log_since(mark, ": delivered", TIMEOUT);
    assert_eq!(after.client_cert_der.as_deref(), Some(&new[..]));
    assert!(
        !daemon.log_contains("devices must register again"),
        "same topic: no re-registration warning"
    );
    let delivered = daemon
        .log_lines()
        .iter()
        .filter(|l| l.contains(": delivered"))
        .count();
    assert_eq!(delivered, 3, "every push of this run was delivered");
    assert_private(&daemon);
}

#[test]
fn twenty_restarts_send_one_request() {
    // The service never answers; the daemon crashes after asking.
    let apple = Apple::new(issue(300));
    apple.service.set_hold(true);
    let mut daemon = Daemon::start(apple.config());
    apple.service.wait_for_requests(1, ISSUE_TIMEOUT);
    for _ in 0..20 {
        daemon.restart();
        daemon.wait_log("Apple certificate request waits (rate limit)", TIMEOUT);
    }
    // Still serving, in dry run.
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(register(&mut plugin), DRY_RUN_TOPIC);
    assert_eq!(apple.service.requests().len(), 1);
}

#[test]
fn refusals_are_logged_with_help_and_the_daemon_keeps_serving() {
    // With a certificate: Apple's retirement answer to a renewal.
    let apple = Apple::new(issue(10));
    let mut daemon = Daemon::start(apple.config());
    daemon.wait_log("the new push certificate is in force", ISSUE_TIMEOUT);
    let mail = apple.service.requests()[0].issued_mail_der.clone().unwrap();
    daemon.kill9();
    rewind_last_request(&daemon.db_path(), DAY);
    apple.service.set_reply(Reply::Refuse {
        code: -80010,
        message: "ServiceType is Invalid".into(),
    });
    daemon.restart();
    let line = daemon.wait_log("Apple-ID certificate request failed", ISSUE_TIMEOUT);
    assert!(
        line.contains("ErrorCode -80010, ErrorMessage \"ServiceType is Invalid\"")
            && line.contains("retired this certificate service in October 2024")
            && line.contains("keeps serving with the current certificate"),
        "{line}"
    );
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(register(&mut plugin), TEST_TOPIC);
    let pushed = push(&mut plugin, &apple.apns, 1);
    assert_eq!(pushed.client_cert_der.as_deref(), Some(&mail[..]));
    assert_eq!(apple.service.requests().len(), 2);

    // Without one: two-factor refusal and an HTTP error leave a dry run.
    for (reply, want) in [
        (
            Reply::Refuse {
                code: -20358,
                message: "Invalid Session".into(),
            },
            "two-factor authentication",
        ),
        (Reply::Http(500), "answered HTTP 500"),
    ] {
        let apple = Apple::new(reply);
        let daemon = Daemon::start(apple.config());
        let line = daemon.wait_log("Apple-ID certificate request failed", ISSUE_TIMEOUT);
        assert!(
            line.contains(want) && line.contains("stays in dry run"),
            "{line}"
        );
        let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
        assert_eq!(register(&mut plugin), DRY_RUN_TOPIC);
        assert_private(&daemon);
    }
}

#[test]
fn an_interval_under_one_hour_is_refused_at_start() {
    let apple = Apple::new(issue(300));
    let mut daemon = Daemon::spawn(apple.config().num("apple_cert_request_interval_hours", 0));
    let status = daemon.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(78));
    assert!(daemon.log_contains("apple_cert_request_interval_hours"));
    assert!(apple.service.requests().is_empty());
}

#[test]
fn a_renewal_with_another_topic_says_devices_must_register_again() {
    let apple = Apple::new(issue(10));
    let mut daemon = Daemon::start(apple.config());
    daemon.wait_log("the new push certificate is in force", ISSUE_TIMEOUT);
    daemon.kill9();
    rewind_last_request(&daemon.db_path(), DAY);
    let other = "com.apple.mail.XServer.00000000-1111-2222-3333-444444444444";
    apple.service.set_reply(Reply::Issue {
        mail_topic: other.to_string(),
        not_after: SystemTime::now() + DAY * 300,
    });
    daemon.restart();
    daemon.wait_log(
        "the push topic changed: devices must register again",
        ISSUE_TIMEOUT,
    );
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(register(&mut plugin), other);
}
