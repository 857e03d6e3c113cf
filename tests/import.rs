//! Migrating from the Go daemon with the real binary: `import-go` fills the
//! store (all or nothing, repeatable) and the daemon then pushes to the
//! imported devices; `import-go-config` prints a config xapsd accepts.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use support::certs::{TestCa, TEST_TOPIC};
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
"AppleCerts":{{"Mail":null}}}}"#
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
    assert!(err.contains("AppleCerts"), "{err}");
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
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
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
