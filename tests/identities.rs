//! Push identities end to end: the real binary pushes to the mock APNs with
//! an RSA certificate from PEM (PKCS#1 key) or a PKCS#12 bundle (empty and
//! real passwords, Keychain's and OpenSSL 3's encryptions), or with a
//! provider token whose JWT the test verifies, reused and then replaced on
//! schedule or early on ExpiredProviderToken (the schedule shortened through
//! `XAPSD_TEST_TIMEOUTS`); `check-config` and `pass` are run as an admin would.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

#[cfg(feature = "pkcs12")]
use support::certs::CertAndKey;
use support::certs::{PushCertSpec, TestCa, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::{Answer, MockApns, MockOptions, Request};
use support::plugin::PluginClient;
use support::tempdir::TempDir;
use support::TIMEOUT;

const ALICE_TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const ALICE_ACCOUNT: &str = "0715A26B-CA09-4730-A419-793000CA982E";
const BOB_TOKEN: &str = "abababababababababababababababababababababababababababababababab";
const BOB_ACCOUNT: &str = "B0B00000-0000-0000-0000-000000000001";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";

fn register(plugin: &mut PluginClient, account: &str, token: &str, user: &str) {
    let body = format!(
        r#"{{"ApsAccountId":"{account}","ApsDeviceToken":"{token}","ApsSubtopic":"com.apple.mobilemail","Username":"{user}","Mailboxes": ["INBOX"]}}"#
    );
    let r = plugin.post("/register", &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), TEST_TOPIC);
}

fn new_mail(plugin: &mut PluginClient, user: &str) {
    let body = format!(r#"{{"Username":"{user}","Mailbox":"INBOX","Events": ["MessageNew"]}}"#);
    assert_eq!(plugin.post("/notify", &body).unwrap().status, 200);
}

/// Registers Alice, sends her new mail, returns the push the mock received.
fn push_once(daemon: &Daemon, mock: &MockApns) -> Request {
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    register(&mut plugin, ALICE_ACCOUNT, ALICE_TOKEN, "alice");
    new_mail(&mut plugin, "alice");
    mock.wait_for_requests(1, TIMEOUT).remove(0)
}

fn apns_only(mock: &MockApns) -> DaemonConfig {
    DaemonConfig::new()
        .str("apns_endpoint", &mock.endpoint())
        .path("apns_ca_file", mock.ca_pem_path())
}

#[cfg(feature = "pkcs12")]
/// A PKCS#12 bundle of `cert`, as Keychain (`legacy`: 3DES + RC2) or
/// OpenSSL 3 (AES-256 + PBKDF2) writes it.
fn p12_bundle(cert: &CertAndKey, password: &str, legacy: bool) -> Vec<u8> {
    use p12_keystore::{
        Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
        PrivateKeyChain,
    };
    let chain = PrivateKeyChain::new(
        b"push key".as_slice(),
        PrivateKey::from_der(&cert.key_der).unwrap(),
        [Certificate::from_der(&cert.cert_der).unwrap()],
    );
    let mut store = KeyStore::new();
    store.add_entry("push", KeyStoreEntry::PrivateKeyChain(chain));
    let writer = store.writer(password);
    let writer = if legacy {
        writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(MacAlgorithm::HmacSha1)
    } else {
        writer
    };
    writer.write().unwrap()
}

#[cfg(feature = "pkcs12")]
fn p12_pushes(password: &str, legacy: bool) {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert_rsa(TEST_TOPIC);
    let dir = TempDir::new("p12");
    let p12 = dir.write("push.p12", p12_bundle(&cert, password, legacy));
    let mut config = apns_only(&mock).path("p12_file", &p12);
    if !password.is_empty() {
        let pw = dir.write("p12.pass", format!("{password}\n"));
        config = config.path("p12_password_file", &pw);
    }
    let daemon = Daemon::start(config);
    daemon.wait_log("push identity: PKCS#12 certificate, topic", TIMEOUT);
    let push = push_once(&daemon, &mock);
    assert_eq!(push.client_uid.as_deref(), Some(TEST_TOPIC));
    assert_eq!(push.client_cert_der.as_deref(), Some(&cert.cert_der[..]));
    assert_eq!(push.header("authorization"), None);
    assert!(
        !daemon.log_contains(password) || password.is_empty(),
        "the password must not be logged"
    );
}

#[cfg(feature = "pkcs12")]
#[test]
fn p12_with_empty_password_keychain_style_pushes() {
    p12_pushes("", true);
}

#[cfg(feature = "pkcs12")]
#[test]
fn p12_with_password_openssl3_style_pushes() {
    p12_pushes("correct-horse", false);
}

#[cfg(feature = "pkcs12")]
#[test]
fn a_wrong_p12_password_is_refused_at_start_without_echoing_it() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert_rsa(TEST_TOPIC);
    let dir = TempDir::new("p12");
    let p12 = dir.write("push.p12", p12_bundle(&cert, "right-one", false));
    let pw = dir.write("p12.pass", "wrong-one\n");
    let mut daemon = Daemon::spawn(
        apns_only(&mock)
            .path("p12_file", &p12)
            .path("p12_password_file", &pw),
    );
    let status = daemon.wait_exit(TIMEOUT);
    assert!(!status.success());
    assert!(
        daemon.log_contains("wrong password"),
        "{}",
        daemon.log_text()
    );
    assert!(!daemon.log_contains("wrong-one") && !daemon.log_contains("right-one"));
}

#[test]
fn rsa_pem_certificate_with_pkcs1_key_pushes() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert_rsa(TEST_TOPIC);
    assert!(cert.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let files = ca.write(&cert, "rsa");
    let daemon = Daemon::start(DaemonConfig::new().apns(&mock, &files));
    let push = push_once(&daemon, &mock);
    assert_eq!(push.client_uid.as_deref(), Some(TEST_TOPIC));
}

/// A `.p8` key for the token tests: the key file and its public half.
fn token_key(dir: &TempDir) -> (PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let path = dir.write("AuthKey_ABC123DEFG.p8", key.serialize_pem());
    (path, key.public_key_raw().to_vec())
}

fn token_config(mock: &MockApns, p8: &Path) -> DaemonConfig {
    apns_only(mock)
        .path("p8_file", p8)
        .str("key_id", KEY_ID)
        .str("team_id", TEAM_ID)
        .str("topic", TEST_TOPIC)
}

fn token_mock(ca: &TestCa) -> MockApns {
    MockApns::start_with(
        ca,
        MockOptions {
            require_client_cert: false,
            ..MockOptions::default()
        },
    )
}

#[test]
fn provider_token_pushes_with_a_valid_jwt_and_reuses_it() {
    let ca = TestCa::new();
    let mock = token_mock(&ca);
    let dir = TempDir::new("p8");
    let (p8, public) = token_key(&dir);
    let daemon = Daemon::start(token_config(&mock, &p8));
    daemon.wait_log("push identity: provider token, topic", TIMEOUT);

    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    register(&mut plugin, ALICE_ACCOUNT, ALICE_TOKEN, "alice");
    register(&mut plugin, BOB_ACCOUNT, BOB_TOKEN, "bob");
    new_mail(&mut plugin, "alice");
    mock.wait_for_requests(1, TIMEOUT);
    new_mail(&mut plugin, "bob");
    let pushes = mock.wait_for_requests(2, TIMEOUT);

    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for push in &pushes {
        assert_eq!(push.client_uid, None, "no client certificate in token mode");
        assert_eq!(push.header("apns-topic"), Some(TEST_TOPIC));
        let auth = push.header("authorization").expect("authorization header");
        let claims = support::jwt::verify(auth, &public).unwrap();
        assert_eq!(claims.kid, KEY_ID);
        assert_eq!(claims.iss, TEAM_ID);
        assert!(claims.iat.abs_diff(before) < 600, "iat {}", claims.iat);
    }
    assert_eq!(
        pushes[0].header("authorization"),
        pushes[1].header("authorization"),
        "one token is reused"
    );
    // A token signed by another key must not verify: the check can fail.
    let other = rcgen::KeyPair::generate().unwrap();
    assert!(support::jwt::verify(
        pushes[0].header("authorization").unwrap(),
        other.public_key_raw()
    )
    .is_err());
    let token = pushes[0].header("authorization").unwrap();
    let secret_part = token.rsplit('.').next().unwrap();
    assert!(
        !daemon.log_contains(secret_part),
        "the token is never logged"
    );
}

#[test]
fn expired_provider_token_is_not_replaced_within_twenty_minutes() {
    let ca = TestCa::new();
    let mock = token_mock(&ca);
    let dir = TempDir::new("p8");
    let (p8, public) = token_key(&dir);
    let daemon = Daemon::start(token_config(&mock, &p8));
    mock.answer(ALICE_TOKEN, Answer::error(403, "ExpiredProviderToken"));

    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    register(&mut plugin, ALICE_ACCOUNT, ALICE_TOKEN, "alice");
    register(&mut plugin, BOB_ACCOUNT, BOB_TOKEN, "bob");
    new_mail(&mut plugin, "alice");
    mock.wait_for_requests(1, TIMEOUT);
    daemon.wait_log("provider token expired", TIMEOUT);
    // The next push, right after: still the same token (the refresh waits
    // for the 20-minute minimum; the schedule itself is unit-tested).
    new_mail(&mut plugin, "bob");
    let pushes = mock.wait_for_requests(2, TIMEOUT);
    assert_eq!(pushes[1].device_token(), Some(BOB_TOKEN));
    assert_eq!(
        pushes[0].header("authorization"),
        pushes[1].header("authorization")
    );
    support::jwt::verify(pushes[1].header("authorization").unwrap(), &public).unwrap();
}

/// A token-identity daemon with shortened token timings (`XAPSD_TEST_TIMEOUTS`
/// items), its mock APNs and the key's public half; the CA and key folder
/// are returned so they outlive the test.
fn token_daemon(timeouts: &str) -> (TestCa, TempDir, MockApns, Vec<u8>, Daemon) {
    let ca = TestCa::new();
    let mock = token_mock(&ca);
    let dir = TempDir::new("p8");
    let (p8, public) = token_key(&dir);
    let daemon = Daemon::start(token_config(&mock, &p8).env("XAPSD_TEST_TIMEOUTS", timeouts));
    (ca, dir, mock, public, daemon)
}

/// The `authorization` header of a push (every token-mode push has one).
fn auth(push: &Request) -> &str {
    push.header("authorization").expect("authorization header")
}

#[test]
fn provider_token_is_reused_within_its_window_and_replaced_after_it() {
    const REUSE: Duration = Duration::from_millis(1500);
    let (_ca, _dir, mock, public, daemon) =
        token_daemon("provider_token_reuse=1500,provider_token_min_interval=500");
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    register(&mut plugin, ALICE_ACCOUNT, ALICE_TOKEN, "alice");

    // No push was sent before this, so the first token is made after it
    // and the new one, REUSE later, before the mock receives it.
    let started = Instant::now();
    let deadline = started + TIMEOUT;
    let mut pushes = Vec::new();
    while pushes
        .last()
        .is_none_or(|p: &Request| auth(p) == auth(&pushes[0]))
    {
        assert!(Instant::now() < deadline, "no new token in {TIMEOUT:?}");
        new_mail(&mut plugin, "alice");
        pushes = mock.wait_for_requests(pushes.len() + 1, TIMEOUT);
        // Pacing only (the wait above is the synchronisation): a few dozen
        // pushes over the window rather than thousands.
        std::thread::sleep(Duration::from_millis(50));
    }
    let renewed = pushes.last().unwrap();
    let first = &pushes[0];
    assert!(
        pushes.len() >= 3,
        "the first token was reused: {}",
        pushes.len()
    );
    assert!(
        renewed.received_at.duration_since(started) >= REUSE,
        "replaced after {:?}",
        renewed.received_at.duration_since(started)
    );
    let old = support::jwt::verify(auth(first), &public).unwrap();
    let new = support::jwt::verify(auth(renewed), &public).unwrap();
    assert!(new.iat > old.iat, "iat {} then {}", old.iat, new.iat);
    assert_eq!((new.kid.as_str(), new.iss.as_str()), (KEY_ID, TEAM_ID));
    eprintln!(
        "token reuse: {} pushes with the first token, renewed after {:?}, iat +{} s",
        pushes.len() - 1,
        renewed.received_at.duration_since(started),
        new.iat - old.iat
    );
}

#[test]
fn expired_provider_token_is_replaced_early_but_not_within_the_minimum_interval() {
    // The minimum is longer than the first retry's backoff (2 s) so the
    // retry that comes too early must still carry the old token.
    const MIN_INTERVAL: Duration = Duration::from_millis(3500);
    let (_ca, _dir, mock, public, daemon) =
        token_daemon("provider_token_min_interval=3500,credential_retry_min=100");
    // Apple refuses every push with the expired token, as it would.
    mock.answer(ALICE_TOKEN, Answer::error(403, "ExpiredProviderToken"));
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    register(&mut plugin, ALICE_ACCOUNT, ALICE_TOKEN, "alice");
    let started = Instant::now();
    new_mail(&mut plugin, "alice");
    let first = mock.wait_for_requests(1, TIMEOUT).remove(0);
    let old_auth = auth(&first).to_owned();
    daemon.wait_log("provider token expired", TIMEOUT);

    let renewed = mock
        .wait_for_requests_where(1, TIMEOUT, |r| {
            r.header("authorization") != Some(old_auth.as_str())
        })
        .remove(0);
    let pushes = mock.requests();
    let with_old = pushes
        .iter()
        .filter(|r| r.header("authorization") == Some(old_auth.as_str()))
        .count();
    assert!(
        pushes.iter().all(|r| r.device_token() == Some(ALICE_TOKEN)),
        "only Alice's push, retried"
    );
    assert!(
        with_old >= 2,
        "a retry inside the interval kept the old token"
    );
    // The first token was made after `started`, the new one before the mock
    // received it: their distance is at most this.
    let apart = renewed.received_at.duration_since(started);
    assert!(apart >= MIN_INTERVAL, "new token after {apart:?}");
    let old = support::jwt::verify(&old_auth, &public).unwrap();
    let new = support::jwt::verify(auth(&renewed), &public).unwrap();
    // Made >= 3.5 s apart, so whole-second iats differ by more than 2.5.
    assert!(new.iat >= old.iat + 3, "iat {} then {}", old.iat, new.iat);
    // Early: far inside the default 40-minute reuse.
    assert!(apart < Duration::from_secs(60), "{apart:?}");
    eprintln!(
        "expired token: {with_old} pushes with the old token, new one after {apart:?}, iat +{} s",
        new.iat - old.iat
    );
}

#[test]
fn sighup_keeps_the_token_of_the_same_key_and_a_new_key_gets_a_new_one() {
    let ca = TestCa::new();
    let mock = token_mock(&ca);
    let dir = TempDir::new("p8");
    let (p8, _) = token_key(&dir);
    let daemon = Daemon::start(token_config(&mock, &p8));
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    register(&mut plugin, ALICE_ACCOUNT, ALICE_TOKEN, "alice");
    new_mail(&mut plugin, "alice");
    let first = mock.wait_for_requests(1, TIMEOUT).remove(0);

    // Same file: a reload must not count as a token refresh for Apple.
    let mark = daemon.log_mark();
    daemon.hangup();
    daemon.wait_log_since(mark, "push identity reloaded", TIMEOUT);
    new_mail(&mut plugin, "alice");
    let second = mock.wait_for_requests(2, TIMEOUT).remove(1);
    assert_eq!(
        first.header("authorization"),
        second.header("authorization")
    );

    // A new key (rotated in the developer account): its own token.
    let new_key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&p8, new_key.serialize_pem()).unwrap();
    let mark = daemon.log_mark();
    daemon.hangup();
    daemon.wait_log_since(mark, "push identity reloaded", TIMEOUT);
    new_mail(&mut plugin, "alice");
    let third = mock.wait_for_requests(3, TIMEOUT).remove(2);
    let claims = support::jwt::verify(
        third.header("authorization").unwrap(),
        new_key.public_key_raw(),
    )
    .unwrap();
    assert_eq!(claims.kid, KEY_ID);
}

#[test]
fn token_keys_come_as_a_set_and_only_one_identity_kind_is_allowed() {
    let ca = TestCa::new();
    let mock = token_mock(&ca);
    let dir = TempDir::new("p8");
    let (p8, _) = token_key(&dir);
    let cases = [
        (token_config(&mock, &p8).without("team_id"), "`team_id`"),
        (
            token_config(&mock, &p8).path("p12_file", &dir.join("x.p12")),
            "`p8_file`: cannot be combined with p12_file",
        ),
    ];
    for (config, want) in cases {
        let out = check_config(&config, &dir);
        assert_eq!(out.status.code(), Some(78), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "want {want} in {err}");
    }
}

fn check_config(config: &DaemonConfig, dir: &TempDir) -> Output {
    let file = dir.write("check.json", config.to_json());
    Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .args(["check-config", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn check_config_reports_each_kind_and_fails_on_an_expired_certificate() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let dir = TempDir::new("check");

    // A token: kind and topic, no expiry.
    let (p8, _) = token_key(&dir);
    let out = check_config(&token_config(&mock, &p8), &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "push identity: provider token, topic {TEST_TOPIC}"
        )),
        "{text}"
    );

    // A certificate with 10 days left: a warning, still usable.
    let day = Duration::from_secs(86_400);
    let soon = ca.push_cert_with(PushCertSpec {
        not_after: Some(SystemTime::now() + 10 * day + day / 2),
        ..PushCertSpec::new(TEST_TOPIC)
    });
    let files = ca.write(&soon, "soon");
    let out = check_config(&DaemonConfig::new().apns(&mock, &files), &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("PEM certificate"), "{text}");
    assert!(text.contains("(10 days left)"), "{text}");
    assert!(
        text.contains("warning: the push certificate expires in 10 days"),
        "{text}"
    );

    // The same as a running daemon's report.
    let daemon = Daemon::start(DaemonConfig::new().apns(&mock, &files));
    daemon.wait_log("(10 days left)", TIMEOUT);
    daemon.wait_log("expires in 10 days", TIMEOUT);

    // Expired: unusable, non-zero.
    let expired = ca.push_cert_with(PushCertSpec {
        not_before: Some(SystemTime::now() - 400 * day),
        not_after: Some(SystemTime::now() - day),
        ..PushCertSpec::new(TEST_TOPIC)
    });
    let files = ca.write(&expired, "expired");
    let out = check_config(&DaemonConfig::new().apns(&mock, &files), &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("UNUSABLE: the push certificate expired"),
        "{text}"
    );
}

fn pass(input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .arg("pass")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn pass_prints_the_sha256_of_a_piped_password_and_nothing_else() {
    // printf '%s' 'correct horse battery staple' | sha256sum
    let want = "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a\n";
    for input in [
        &b"correct horse battery staple\n"[..],
        b"correct horse battery staple\r\n",
        b"correct horse battery staple",
    ] {
        let out = pass(input);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("horse"));
    }
    let out = pass(b"\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}
