//! The core daemon end to end: the real binary, a real redb file, the real
//! plugin's bytes over keep-alive HTTP/1.1, and pushes received by a mock
//! APNs that speaks TLS 1.3 + HTTP/2 and requires a client certificate.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::apple::Apple;
use support::certs::{TestCa, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::Answer;
use support::plugin::{fixture_dir, PluginClient};
use support::TIMEOUT;

const ALICE_TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const ALICE_ACCOUNT: &str = "0715A26B-CA09-4730-A419-793000CA982E";
const BOB_TOKEN: &str = "abababababababababababababababababababababababababababababababab";
const BOB_ACCOUNT: &str = "B0B00000-0000-0000-0000-000000000001";

fn register_json(account: &str, token: &str, user: &str, mailboxes: &[&str]) -> String {
    let boxes: Vec<String> = mailboxes.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        r#"{{"ApsAccountId":"{account}","ApsDeviceToken":"{token}","ApsSubtopic":"com.apple.mobilemail","Username":"{user}","Mailboxes": [{}]}}"#,
        boxes.join(",")
    )
}

fn notify_json(user: &str, mailbox: &str, events: &[&str]) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"{{"Username":"{user}","Mailbox":"{mailbox}","Events": [{}]}}"#,
        events.join(",")
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn fixtures_replayed_byte_for_byte_reach_apns_exactly() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    // One keep-alive connection for the whole session, as one Dovecot process.
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();

    for fixture in ["01-register.http", "02-register.http"] {
        let r = plugin.replay_fixture(fixture).unwrap();
        assert_eq!(r.status, 200, "{fixture}: {}", r.body_str());
        assert_eq!(r.body_str(), TEST_TOPIC, "raw topic, no quotes, no newline");
        assert!(r.body.len() > 50, "the plugin asserts a body over 50 bytes");
        assert!(!r.closes_connection());
    }

    let r = plugin.replay_fixture("03-notify.http").unwrap();
    assert_eq!(r.status, 200);
    let push = &apple.mock.wait_for_requests(1, TIMEOUT)[0];
    assert_eq!(push.method, "POST");
    assert_eq!(push.path, format!("/3/device/{ALICE_TOKEN}"));
    assert_eq!(push.header("apns-topic"), Some(TEST_TOPIC));
    assert_eq!(push.header("apns-push-type"), Some("background"));
    assert_eq!(push.header("apns-priority"), Some("5"));
    let expiration: u64 = push.header("apns-expiration").unwrap().parse().unwrap();
    let expected = unix_now() + 24 * 3600;
    assert!(
        expiration.abs_diff(expected) < 120,
        "expiration {expiration} vs {expected}"
    );
    assert_eq!(
        push.body_str(),
        format!(r#"{{"aps":{{"account-id":"{ALICE_ACCOUNT}"}}}}"#)
    );
    assert_eq!(
        push.client_uid.as_deref(),
        Some(TEST_TOPIC),
        "pushed with the client certificate"
    );

    // Bob registered as "Bob"; the notify says "Bob" too; stored lower-cased.
    assert_eq!(plugin.replay_fixture("04-notify.http").unwrap().status, 200);
    let pushes = apple.mock.wait_for_requests(2, TIMEOUT);
    assert_eq!(pushes[1].path, format!("/3/device/{BOB_TOKEN}"));
    assert_eq!(
        pushes[1].body_str(),
        format!(r#"{{"aps":{{"account-id":"{BOB_ACCOUNT}"}}}}"#)
    );

    // Flag changes are held for delay_secs, then pushed.
    assert_eq!(plugin.replay_fixture("05-notify.http").unwrap().status, 200);
    let pushes = apple.mock.wait_for_requests(3, TIMEOUT);
    assert_eq!(pushes[2].device_token(), Some(ALICE_TOKEN));
    assert_eq!(
        apple.mock.connections_accepted(),
        1,
        "one connection reused for every push"
    );
}

#[test]
fn basic_auth_captures_are_served_when_no_auth_is_configured() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for fixture in [
        "01-register.http",
        "02-register.http",
        "03-notify.http",
        "04-notify.http",
    ] {
        let r = plugin
            .replay_fixture(format!("basic-auth/{fixture}"))
            .unwrap();
        assert_eq!(r.status, 200, "{fixture}");
    }
    apple.mock.wait_for_requests(2, TIMEOUT);
}

#[test]
fn notify_is_answered_before_apns_answers() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();
    // APNs accepts the push and never answers; the plugin must not notice.
    apple.mock.set_stall(true);
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    let first = &apple.mock.wait_for_requests(1, TIMEOUT)[0];
    assert!(
        first.answer.is_none(),
        "the push is still unanswered at the mock"
    );
}

#[test]
fn held_events_fold_into_one_push_and_new_mail_cancels_them() {
    let apple = Apple::new();
    let daemon = apple.daemon(2);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();

    // Three flag events within the delay: one push after it.
    for _ in 0..3 {
        assert_eq!(plugin.replay_fixture("05-notify.http").unwrap().status, 200);
    }
    apple.mock.wait_for_requests(1, TIMEOUT);
    apple
        .mock
        .expect_at_most_requests(1, Duration::from_secs(3));

    // A flag event is held; new mail pushes now and cancels the held push.
    assert_eq!(plugin.replay_fixture("05-notify.http").unwrap().status, 200);
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    apple.mock.wait_for_requests(2, TIMEOUT);
    apple
        .mock
        .expect_at_most_requests(2, Duration::from_secs(4));
}

#[test]
fn cloned_devices_users_in_any_case_and_other_mailboxes() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let clone_token = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    // Two phones restored from one backup: same account id, two tokens.
    for token in [ALICE_TOKEN, clone_token] {
        let body = register_json(ALICE_ACCOUNT, token, "Alice", &["INBOX", "Notes"]);
        assert_eq!(plugin.post("/register", &body).unwrap().status, 200);
    }

    assert_eq!(
        plugin
            .post("/notify", &notify_json("ALICE", "INBOX", &["MessageNew"]))
            .unwrap()
            .status,
        200
    );
    let pushes = apple.mock.wait_for_requests(2, TIMEOUT);
    let mut tokens: Vec<&str> = pushes.iter().filter_map(|p| p.device_token()).collect();
    tokens.sort();
    assert_eq!(tokens, [ALICE_TOKEN, clone_token]);

    // A mailbox other than INBOX that the devices registered.
    assert_eq!(
        plugin
            .post("/notify", &notify_json("alice", "Notes", &["MessageNew"]))
            .unwrap()
            .status,
        200
    );
    apple.mock.wait_for_requests(4, TIMEOUT);
    // A mailbox they did not register, and a user nobody registered.
    assert_eq!(
        plugin
            .post("/notify", &notify_json("alice", "Archive", &["MessageNew"]))
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        plugin
            .post("/notify", &notify_json("carol", "INBOX", &["MessageNew"]))
            .unwrap()
            .status,
        404
    );
    apple
        .mock
        .expect_at_most_requests(4, Duration::from_millis(1500));
}

#[test]
fn a_token_moves_to_the_account_it_shows_up_under() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(
        plugin.replay_fixture("01-register.http").unwrap().status,
        200
    );
    let moved = register_json(BOB_ACCOUNT, ALICE_TOKEN, "bob", &["INBOX"]);
    assert_eq!(plugin.post("/register", &moved).unwrap().status, 200);
    assert_eq!(
        plugin.replay_fixture("03-notify.http").unwrap().status,
        404,
        "alice has no device left"
    );
    assert_eq!(
        plugin
            .post("/notify", &notify_json("bob", "INBOX", &["MessageNew"]))
            .unwrap()
            .status,
        200
    );
    let push = &apple.mock.wait_for_requests(1, TIMEOUT)[0];
    assert_eq!(
        push.body_str(),
        format!(r#"{{"aps":{{"account-id":"{BOB_ACCOUNT}"}}}}"#)
    );
}

#[test]
fn dead_tokens_are_removed_and_credential_errors_keep_the_device() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();
    plugin.replay_fixture("02-register.http").unwrap();

    apple.mock.answer(ALICE_TOKEN, Answer::unregistered());
    apple
        .mock
        .answer(BOB_TOKEN, Answer::error(403, "BadCertificate"));
    plugin.replay_fixture("03-notify.http").unwrap();
    plugin.replay_fixture("04-notify.http").unwrap();
    apple.mock.wait_for_requests(2, TIMEOUT);
    daemon.wait_log("registration removed", TIMEOUT);
    daemon.wait_log("rejected our credentials (403 BadCertificate)", TIMEOUT);

    assert_eq!(
        plugin.replay_fixture("03-notify.http").unwrap().status,
        404,
        "alice's dead token is gone"
    );
    assert_eq!(
        plugin.replay_fixture("04-notify.http").unwrap().status,
        200,
        "bob's device is kept"
    );

    // 400 BadDeviceToken removes too.
    let token = "efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef";
    plugin
        .post(
            "/register",
            &register_json("C-1", token, "carol", &["INBOX"]),
        )
        .unwrap();
    apple
        .mock
        .answer(token, Answer::error(400, "BadDeviceToken"));
    let mark = daemon.log_mark();
    plugin
        .post("/notify", &notify_json("carol", "INBOX", &["MessageNew"]))
        .unwrap();
    daemon.wait_log_since(mark, "registration removed", TIMEOUT);
    let r = plugin
        .post("/notify", &notify_json("carol", "INBOX", &["MessageNew"]))
        .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn pushes_are_retried_after_503_and_after_apns_was_down() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();

    apple
        .mock
        .answer_next(ALICE_TOKEN, 1, Answer::error(503, "ServiceUnavailable"));
    plugin.replay_fixture("03-notify.http").unwrap();
    let pushes = apple.mock.wait_for_requests(2, TIMEOUT);
    assert_eq!(pushes[0].answer.as_ref().map(|a| a.status), Some(503));
    assert_eq!(pushes[1].answer.as_ref().map(|a| a.status), Some(200));

    // APNs goes away; the notify is still answered and the push waits.
    apple.mock.set_down(true);
    let mark = daemon.log_mark();
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    daemon.wait_log_since(mark, "cannot connect to APNs", TIMEOUT);
    apple.mock.set_down(false);
    let pushes = apple.mock.wait_for_requests(3, Duration::from_secs(40));
    assert_eq!(pushes[2].device_token(), Some(ALICE_TOKEN));
    assert!(daemon_alive(&daemon));
}

#[test]
fn goaway_leads_to_a_new_connection_without_losing_pushes() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();
    plugin.replay_fixture("03-notify.http").unwrap();
    apple.mock.wait_for_requests(1, TIMEOUT);
    apple.mock.send_goaway();
    apple.mock.wait_for_open_connections(0, TIMEOUT);
    plugin.replay_fixture("03-notify.http").unwrap();
    let pushes = apple.mock.wait_for_requests(2, TIMEOUT);
    assert_ne!(pushes[0].connection, pushes[1].connection);
}

#[test]
fn pushes_multiplex_on_one_connection() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let devices = 40;
    for i in 0..devices {
        let token = format!("{i:064x}");
        plugin
            .post(
                "/register",
                &register_json(&format!("A-{i}"), &token, "many", &["INBOX"]),
            )
            .unwrap();
    }
    apple.mock.set_delay(Duration::from_millis(300));
    plugin
        .post("/notify", &notify_json("many", "INBOX", &["MessageNew"]))
        .unwrap();
    let pushes = apple.mock.wait_for_requests(devices, TIMEOUT);
    assert!(pushes.iter().all(|p| p.connection == pushes[0].connection));
    assert!(apple.mock.peak_in_flight() > 1, "streams run concurrently");
}

#[test]
fn registrations_survive_kill_9() {
    let apple = Apple::new();
    let mut daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(
        plugin.replay_fixture("01-register.http").unwrap().status,
        200
    );
    daemon.kill9();
    daemon.restart();
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    let push = &apple.mock.wait_for_requests(1, TIMEOUT)[0];
    assert_eq!(push.device_token(), Some(ALICE_TOKEN));
}

#[test]
fn stale_registrations_are_swept() {
    let apple = Apple::new();
    let mut daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();
    plugin.replay_fixture("02-register.http").unwrap();
    daemon.terminate();
    daemon.wait_exit(TIMEOUT);

    // Age bob's registration by 40 days through the store's own API, then
    // start the daemon (it sweeps at start) with a 30-day expiry.
    {
        let limits = xapsd::store::StoreLimits::one_shot(16, 16);
        let store = xapsd::store::Store::open(&daemon.db_path(), limits).unwrap();
        let mut bob = store.devices_for_user("bob").unwrap().pop().unwrap();
        bob.registered_at = unix_now() - 40 * 86_400;
        futures_lite::future::block_on(store.register(bob)).unwrap();
        store.close();
    }
    daemon.restart();
    daemon.wait_log("expired 1 registration", TIMEOUT);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(plugin.replay_fixture("04-notify.http").unwrap().status, 404);
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
}

#[test]
fn malformed_input_gets_its_status_and_the_daemon_keeps_serving() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let addr = daemon.addr();
    let valid = register_json(ALICE_ACCOUNT, ALICE_TOKEN, "alice", &["INBOX"]);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/unknown", valid.clone(), 404, "no such endpoint"),
        (
            "/register",
            "{\"ApsAccountId\":".into(),
            400,
            "not valid JSON",
        ),
        ("/register", "[]".into(), 400, "not a JSON object"),
        (
            "/register",
            valid.replace(",\"Username\":\"alice\"", ""),
            400,
            "`Username` is missing",
        ),
        (
            "/register",
            valid.replace("\"alice\"", "\"\""),
            400,
            "`Username` is empty",
        ),
        (
            "/register",
            valid.replace("com.apple.mobilemail", "com.example"),
            400,
            "ApsSubtopic",
        ),
        (
            "/register",
            valid.replace(ALICE_TOKEN, "zz"),
            400,
            "not a hex string",
        ),
        (
            "/register",
            valid.replace("[\"INBOX\"]", "[]"),
            400,
            "`Mailboxes` is empty",
        ),
        (
            "/register",
            valid.replace("[\"INBOX\"]", "\"INBOX\""),
            400,
            "list of strings",
        ),
        (
            "/notify",
            r#"{"Username":"alice"}"#.into(),
            400,
            "`Mailbox` is missing",
        ),
        (
            "/notify",
            r#"{"Username":7,"Mailbox":"INBOX"}"#.into(),
            400,
            "must be a string",
        ),
        (
            "/notify",
            format!(
                r#"{{"Username":"{}","Mailbox":"INBOX"}}"#,
                "x".repeat(20_000)
            ),
            413,
            "body over",
        ),
    ];
    for (path, body, status, reason) in cases {
        let mut plugin = PluginClient::connect(addr).unwrap();
        let r = plugin.post(path, &body).unwrap();
        assert_eq!(r.status, status, "{path} {body:.60}: {}", r.body_str());
        assert!(
            r.body_str().contains(reason),
            "{path}: `{}` lacks `{reason}`",
            r.body_str()
        );
        assert_eq!(r.body_str().lines().count(), 1, "one-line reason");
    }

    let raw_cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET /register HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        (b"POST /notify HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 411),
        (
            b"POST /notify HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            411,
        ),
        (
            b"POST /notify HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
            400,
        ),
        (b"\x00\x01\x02 garbage\r\n\r\n".to_vec(), 400),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000)).into_bytes(),
            431,
        ),
    ];
    for (bytes, status) in raw_cases {
        let mut plugin = PluginClient::connect(addr).unwrap();
        let r = plugin.raw(&bytes).unwrap();
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
    }

    // Still serving, on a fresh connection and on the plugin's own bytes.
    let mut plugin = PluginClient::connect(addr).unwrap();
    assert_eq!(
        plugin.replay_fixture("01-register.http").unwrap().status,
        200
    );
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    apple.mock.wait_for_requests(1, TIMEOUT);
    assert!(daemon_alive(&daemon));
}

#[test]
fn dry_run_registers_and_logs_pushes_instead_of_sending() {
    let daemon = Daemon::start(
        DaemonConfig::new()
            .str("log_level", "info")
            .num("delay_secs", 1),
    );
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin.replay_fixture("01-register.http").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() > 50,
        "dry-run topic must satisfy the plugin's length check"
    );
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    daemon.wait_log("dry run: would push to device #", TIMEOUT);
}

#[test]
fn sighup_swaps_the_certificate_without_losing_pushes() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    plugin.replay_fixture("01-register.http").unwrap();
    plugin.replay_fixture("03-notify.http").unwrap();
    apple.mock.wait_for_requests(1, TIMEOUT);

    let new_topic = "com.apple.mail.XServer.11111111-2222-3333-4444-555555555555";
    let renewed = apple.ca.push_cert(new_topic);
    std::fs::write(&apple.push.cert, &renewed.cert_pem).unwrap();
    std::fs::write(&apple.push.key, &renewed.key_pem).unwrap();
    // Pushes queued while APNs stalls go out with the new identity.
    let mark = daemon.log_mark();
    daemon.hangup();
    daemon.wait_log_since(mark, "push identity reloaded", TIMEOUT);
    daemon.wait_log_since(mark, "devices must register again", TIMEOUT);
    plugin.replay_fixture("03-notify.http").unwrap();
    let pushes = apple.mock.wait_for_requests(2, TIMEOUT);
    assert_eq!(pushes[1].header("apns-topic"), Some(new_topic));
    assert_eq!(pushes[1].client_uid.as_deref(), Some(new_topic));
    assert_ne!(pushes[0].connection, pushes[1].connection);

    // A broken file on SIGHUP keeps the identity in force.
    std::fs::write(&apple.push.cert, "not a certificate").unwrap();
    let mark = daemon.log_mark();
    daemon.hangup();
    daemon.wait_log_since(mark, "reload failed, keeping the current identity", TIMEOUT);
    plugin.replay_fixture("03-notify.http").unwrap();
    let pushes = apple.mock.wait_for_requests(3, TIMEOUT);
    assert_eq!(pushes[2].client_uid.as_deref(), Some(new_topic));
}

#[test]
fn sigterm_exits_zero_and_info_logs_hold_no_tokens_or_account_ids() {
    let apple = Apple::new();
    let mut daemon = Daemon::start(apple.config(1).str("log_level", "info"));
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for f in [
        "01-register.http",
        "02-register.http",
        "03-notify.http",
        "04-notify.http",
        "05-notify.http",
    ] {
        assert_eq!(plugin.replay_fixture(f).unwrap().status, 200);
    }
    apple.mock.answer(ALICE_TOKEN, Answer::unregistered());
    apple.mock.wait_for_requests(3, TIMEOUT);
    daemon.terminate();
    let status = daemon.wait_exit(TIMEOUT);
    assert!(status.success(), "exit status {status:?}");
    let log = daemon.log_text();
    assert!(log.contains("stopped"));
    for secret in [
        ALICE_TOKEN,
        BOB_TOKEN,
        ALICE_ACCOUNT,
        BOB_ACCOUNT,
        &ALICE_TOKEN[..8],
        &BOB_ACCOUNT[..8],
    ] {
        assert!(!log.contains(secret), "info log shows `{secret}`:\n{log}");
    }
}

#[test]
fn a_certificate_without_uid_and_a_bad_config_are_refused_at_start() {
    let ca = TestCa::new();
    let no_uid = ca.write(&ca.push_cert_without_uid(), "nouid");
    let mut daemon = Daemon::spawn(
        DaemonConfig::new()
            .path("cert_file", &no_uid.cert)
            .path("key_file", &no_uid.key),
    );
    let status = daemon.wait_exit(TIMEOUT);
    assert!(!status.success());
    assert!(
        daemon.log_contains("has no UID in its subject"),
        "{}",
        daemon.log_text()
    );

    let mut daemon = Daemon::spawn(DaemonConfig::new().num("delay", 3));
    let status = daemon.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(78));
    assert!(
        daemon.log_contains("unknown config key `delay`"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn in_repo_fixtures_match_the_team_captures() {
    // The repo carries a copy so a fresh clone tests on its own; where the
    // team's shared folder is beside the checkout, the copy must not drift.
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if !shared.exists() {
        eprintln!("no shared/ beside the checkout; nothing to compare");
        return;
    }
    for dir in [
        "dovecot-xaps-plugin",
        "dovecot-xaps-plugin/basic-auth",
        "dovecot-xaps-plugin-legacy",
    ] {
        for entry in std::fs::read_dir(shared.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let ours = fixture_dir()
                    .join("..")
                    .join(dir)
                    .join(path.file_name().unwrap());
                assert_eq!(
                    std::fs::read(&ours).unwrap(),
                    std::fs::read(&path).unwrap(),
                    "{}",
                    ours.display()
                );
            }
        }
    }
}

fn daemon_alive(daemon: &Daemon) -> bool {
    daemon
        .pid()
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}
