//! Migrating from the Go daemon with the real binary: `import-go` fills the
//! store (all or nothing, repeatable), writes the Go daemon's mail push
//! certificate as PEM files, and the daemon then pushes to the imported
//! devices with that certificate; `import-go-config` prints a config xapsd
//! accepts.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use support::apple::Apple;
use support::certs::{TestCa, RSA_KEY_PKCS1_PEM, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::MockApns;
use support::plugin::PluginClient;
use support::tempdir::TempDir;
use support::TIMEOUT;

const ALICE_TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const BOB_TOKEN: &str = "abababababababababababababababababababababababababababababababab";

fn xapsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    eprintln!("xapsd {args:?} -> {:?}\n{stdout}{stderr}", out.status);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn go_database(bob_token: &str) -> String {
    format!(
        r#"{{"Users":{{"alice":{{"Accounts":{{"0715A26B-CA09-4730-A419-793000CA982E":{{"DeviceToken":"{ALICE_TOKEN}","Mailboxes":["INBOX","Sent Messages"],"RegistrationTime":"2026-11-01T10:00:00.123456+01:00"}}}}}},
"Bob":{{"Accounts":{{"B0B00000-0000-0000-0000-000000000001":{{"DeviceToken":"{bob_token}","Mailboxes":["INBOX"],"RegistrationTime":"2026-11-02T10:00:00Z"}}}}}}}},
"AppleCerts":{{"Signature":null,"Keys":null}}}}"#
    )
}

/// `devices` on the store itself: a --listen nobody answers on.
fn listing(db: &Path) -> String {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, out, _) = xapsd(&["devices", "--db", db.to_str().unwrap(), "--listen", &closed]);
    assert_eq!(code, 0);
    out
}

#[test]
fn go_registrations_are_imported_once_and_pushed_to() {
    let dir = TempDir::new("import");
    let db = dir.join("xapsd.redb");
    let db_arg = db.to_str().unwrap();

    let good = dir.join("database.json");
    std::fs::write(&good, go_database(BOB_TOKEN)).unwrap();
    let (code, out, err) = xapsd(&["import-go", "--db", db_arg, good.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(err, "");
    assert!(
        !out.contains("cert_file"),
        "no certificates, no config lines"
    );
    assert!(out
        .contains("alice 2918…2829 (INBOX, Sent Messages) registered 2026-11-01 09:00 UTC: new\n"));
    assert!(out.contains("bob abab…abab (INBOX) registered 2026-11-02 10:00 UTC: new\n"));
    assert!(out.ends_with(": 2 new, 0 updated, 0 unchanged\n"), "{out}");
    assert!(!out.contains(ALICE_TOKEN));
    // Again: nothing changes.
    let (code, out, _) = xapsd(&["import-go", "--db", db_arg, good.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.ends_with(": 0 new, 0 updated, 2 unchanged\n"), "{out}");
    let before = listing(&db);
    assert!(before.ends_with("2 device(s), 2 user(s)\n"));

    // A bad file changes nothing, not even its valid part, and says where.
    let bad = dir.join("bad.json");
    let text = go_database("not-hex").replace(r#"["INBOX","Sent Messages"]"#, r#"["Notes"]"#);
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = xapsd(&["import-go", "--db", db_arg, bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Users[\"Bob\"].Accounts[B0B0…0001]: field `ApsDeviceToken` is not a hex string; nothing imported"),
        "{err}"
    );
    assert_eq!(listing(&db), before);

    // The daemon pushes to what was imported, and holds the store meanwhile.
    let Apple {
        ca: _ca,
        mock,
        push,
    } = Apple::new();
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .path("db", &db)
            .num("expire_days", 3650),
    );
    let (code, _, err) = xapsd(&["import-go", "--db", db_arg, good.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is in use (is the daemon running?)"), "{err}");
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for f in ["03-notify.http", "04-notify.http"] {
        assert_eq!(plugin.replay_fixture(f).unwrap().status, 200);
    }
    let pushes = mock.wait_for_requests(2, TIMEOUT);
    let mut tokens: Vec<&str> = pushes.iter().filter_map(|p| p.device_token()).collect();
    tokens.sort();
    assert_eq!(tokens, [ALICE_TOKEN, BOB_TOKEN]);
}

/// The committed RSA test key as the Go daemon stores keys: base64 of the
/// PKCS#1 DER (Go's `encoding/json` for a `[]byte`).
fn go_key() -> String {
    let body: String = RSA_KEY_PKCS1_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    body.trim().to_owned()
}

fn b64(der: &[u8]) -> String {
    data_encoding::BASE64.encode(der)
}

/// `database.json` of a Go daemon that got its five certificates from
/// Apple: one device, and `AppleCerts` with the mail certificate at index
/// 2, every certificate issued by the test CA for the committed RSA key.
fn go_database_with_certs(ca: &TestCa, mail_key: &str) -> (String, Vec<u8>) {
    let topics = [
        "com.apple.calendar.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab",
        "com.apple.contact.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab",
        TEST_TOPIC,
        "com.apple.mgmt.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab",
        "com.apple.alerts.XServer.8c5a6f4e-3f2b-4c1d-9e7a-0123456789ab",
    ];
    let certs: Vec<Vec<u8>> = topics
        .iter()
        .map(|t| ca.push_cert_rsa(t).cert_der)
        .collect();
    let signature: Vec<String> = certs
        .iter()
        .map(|der| {
            format!(
                r#"{{"Certificate":["{}"],"PrivateKey":null,"SupportedSignatureAlgorithms":null,"OCSPStaple":null,"SignedCertificateTimestamps":null,"Leaf":null}}"#,
                b64(der)
            )
        })
        .collect();
    let key = go_key();
    let keys = [&*key, &key, mail_key, &key, &key].join(r#"",""#);
    let text = format!(
        r#"{{"Users":{{"alice":{{"Accounts":{{"0715A26B-CA09-4730-A419-793000CA982E":{{"DeviceToken":"{ALICE_TOKEN}","Mailboxes":["INBOX"],"RegistrationTime":"2026-11-01T10:00:00Z"}}}}}}}},
"AppleCerts":{{"Signature":[{}],"Keys":["{keys}"]}}}}"#,
        signature.join(",\n")
    );
    (text, certs[2].clone())
}

/// The value of a `  "key": "value",` line `import-go` printed.
fn config_line(out: &str, key: &str) -> String {
    let prefix = format!("  \"{key}\": \"");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} line in:\n{out}"));
    line.trim_end_matches(',').trim_end_matches('"').to_owned()
}

#[test]
fn go_certificates_become_pem_files_the_daemon_pushes_with() {
    use std::os::unix::fs::PermissionsExt;
    let ca = TestCa::new();
    let dir = TempDir::new("import-certs");
    let db = dir.join("xapsd.redb");
    let db_arg = db.to_str().unwrap();
    let (text, mail_der) = go_database_with_certs(&ca, &go_key());
    let file = dir.write("database.json", &text);
    let file_arg = file.to_str().unwrap();

    // Invalid certificate input changes nothing, registrations included.
    let (bad, _) = go_database_with_certs(&ca, "not base64!");
    let bad = dir.write("bad.json", bad);
    let (code, out, err) = xapsd(&["import-go", "--db", db_arg, bad.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("AppleCerts.Keys[2]: not base64; nothing imported"),
        "{err}"
    );
    assert!(!db.exists(), "the store is not even created");

    // Next to the store by default; the key file is private from the start.
    let (code, out, err) = xapsd(&["import-go", "--db", db_arg, file_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 1 new, 0 updated, 0 unchanged\n"), "{out}");
    assert!(
        out.contains(&format!(
            "(AppleCerts.Signature[2]): topic {TEST_TOPIC}, valid until "
        )),
        "{out}"
    );
    assert!(out.contains("; written in "), "{out}");
    let cert_file = config_line(&out, "cert_file");
    let key_file = config_line(&out, "key_file");
    assert_eq!(Path::new(&cert_file).parent(), Some(dir.path()));
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        RSA_KEY_PKCS1_PEM
    );
    let key_body = &go_key()[..48];
    assert!(
        !out.contains(key_body) && !err.contains(key_body),
        "key printed"
    );

    // Again: nothing changes.
    let before = std::fs::read(&cert_file).unwrap();
    let (code, out, _) = xapsd(&["import-go", "--db", db_arg, file_arg]);
    assert_eq!(code, 0);
    assert!(out.contains("; unchanged in "), "{out}");
    assert_eq!(config_line(&out, "key_file"), key_file);
    assert_eq!(std::fs::read(&cert_file).unwrap(), before);

    // Someone else's file there is refused, not overwritten; nothing imported.
    std::fs::write(&cert_file, "mine\n").unwrap();
    let (code, _, err) = xapsd(&["import-go", "--db", db_arg, file_arg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists with other contents; not overwriting it"),
        "{err}"
    );
    assert!(err.ends_with("; nothing imported\n"), "{err}");
    assert_eq!(std::fs::read_to_string(&cert_file).unwrap(), "mine\n");
    std::fs::write(&cert_file, &before).unwrap();

    // --out-dir, and a missing one is refused before anything changes.
    let out_dir = dir.join("pem");
    let (code, _, err) = xapsd(&[
        "import-go",
        "--db",
        db_arg,
        "--out-dir",
        out_dir.to_str().unwrap(),
        file_arg,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist; nothing imported"), "{err}");
    std::fs::create_dir(&out_dir).unwrap();
    let (code, out, _) = xapsd(&[
        "import-go",
        "--db",
        db_arg,
        "--out-dir",
        out_dir.to_str().unwrap(),
        file_arg,
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        Path::new(&config_line(&out, "cert_file")).parent(),
        Some(out_dir.as_path())
    );
    let (code, out, _) = xapsd(&["import-go", "--db", db_arg, "--skip-certs", file_arg]);
    assert_eq!(code, 0);
    assert!(out.contains("AppleCerts: skipped") && !out.contains("cert_file"));

    // The daemon started with the printed lines pushes with the Go
    // daemon's certificate, and hands devices the same topic.
    let mock = MockApns::start(&ca);
    let daemon = Daemon::start(
        DaemonConfig::new()
            .str("apns_endpoint", &mock.endpoint())
            .path("apns_ca_file", mock.ca_pem_path())
            .str("cert_file", &cert_file)
            .str("key_file", &key_file)
            .path("db", &db)
            .num("expire_days", 3650),
    );
    daemon.wait_log(&format!("topic {TEST_TOPIC}"), TIMEOUT);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(plugin.replay_fixture("03-notify.http").unwrap().status, 200);
    let push = mock.wait_for_requests(1, TIMEOUT).remove(0);
    assert_eq!(push.device_token(), Some(ALICE_TOKEN));
    assert_eq!(push.client_uid.as_deref(), Some(TEST_TOPIC));
    assert_eq!(push.client_cert_der.as_deref(), Some(&mail_der[..]));
    assert!(!daemon.log_contains(key_body));
}

#[test]
fn an_expired_go_certificate_is_written_with_a_warning() {
    let ca = TestCa::new();
    let dir = TempDir::new("import-expired");
    let (text, mail_der) = go_database_with_certs(&ca, &go_key());
    let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
        support::certs::RSA_KEY_PKCS8_PEM,
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let year = std::time::Duration::from_secs(365 * 86_400);
    let expired = ca.push_cert_with_key(
        support::certs::PushCertSpec {
            not_before: Some(std::time::SystemTime::now() - 2 * year),
            not_after: Some(std::time::SystemTime::now() - year),
            ..support::certs::PushCertSpec::new(TEST_TOPIC)
        },
        key,
    );
    let file = dir.write(
        "database.json",
        text.replace(&b64(&mail_der), &b64(&expired.cert_der)),
    );
    let db = dir.join("xapsd.redb");
    let (code, out, err) = xapsd(&[
        "import-go",
        "--db",
        db.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("; written in "), "{out}");
    assert!(
        err.contains("warning: the push certificate expired on "),
        "{err}"
    );
}

#[test]
fn go_config_becomes_an_xapsd_config() {
    let dir = TempDir::new("import-config");
    let yaml = dir.join("xapsd.yaml");
    std::fs::write(
        &yaml,
        "loglevel: debug\ndatabaseFile: /var/lib/xapsd/database.json\nlistenAddr: 127.0.0.1\nport: 11619\ndelay: 20\ncheckInterval: 20\ncertificateFileP12: /etc/x.p12\ncolour: blue\n",
    )
    .unwrap();
    let (code, out, err) = xapsd(&["import-go-config", yaml.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\n  \"log_level\": \"debug\",\n  \"listen\": [\"127.0.0.1:11619\"],\n  \"delay_secs\": 20\n}\n"
    );
    assert!(err.contains("xapsd import-go /var/lib/xapsd/database.json"));
    assert!(err.contains("certificateFileP12: not supported"));
    assert!(err.contains("unknown keys (not in the Go daemon's config either): colour"));
    let json = dir.join("xapsd.json");
    std::fs::write(&json, out).unwrap();
    let (code, out, _) = xapsd(&[
        "check-config",
        "--config",
        json.to_str().unwrap(),
        "--db",
        dir.join("x.redb").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("delay_secs: 20"), "{out}");

    std::fs::write(&yaml, "port: 1\nnested:\n  key: 2\n").unwrap();
    let (code, _, err) = xapsd(&["import-go-config", yaml.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("line 3: nested YAML"), "{err}");
}
