//! `xapsd devices|remove|push` against the real binary: through the running
//! daemon's loopback admin endpoints, and straight on the store once the
//! daemon has stopped; admin endpoints refuse non-loopback peers.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::certs::{TestCa, TEST_TOPIC};
use support::daemon::{json_string, Daemon, DaemonConfig};
use support::mock_apns::{Answer, MockApns};
use support::plugin::PluginClient;
use support::TIMEOUT;

const ALICE_TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const BOB_TOKEN: &str = "abababababababababababababababababababababababababababababababab";

/// Runs `xapsd ARGS`; returns (exit code, stdout, stderr).
fn xapsd(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .args(args)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    );
    eprintln!("xapsd {args:?} -> {status:?}\n{out}{err}");
    (status.code().unwrap_or(-1), out, err)
}

/// A config file for the CLI: the daemon's real address and its store.
fn cli_config(dir: &Path, name: &str, listen: SocketAddr, db: &Path) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "{{\"listen\": [{}], \"db\": {}}}",
        json_string(&listen.to_string()),
        json_string(db.to_str().unwrap())
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn operator_commands_work_with_and_without_the_daemon() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
    let mut daemon = Daemon::start(DaemonConfig::new().apns(&mock, &push));
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for f in ["01-register.http", "02-register.http"] {
        assert_eq!(plugin.replay_fixture(f).unwrap().status, 200);
    }
    let db = daemon.db_path();
    let config = cli_config(daemon.dir().path(), "cli.json", daemon.addr(), &db);
    let config = config.to_str().unwrap();

    let (code, out, _) = xapsd(&["devices", "--config", config]);
    assert_eq!(code, 0);
    assert!(out.starts_with("alice\n  2918…2829  account 0715…982E  registered "));
    assert!(out.contains("mailboxes: INBOX, Sent Messages\nbob\n  abab…abab"));
    assert!(out.ends_with("2 device(s), 2 user(s)\n"), "{out}");
    assert!(!out.contains(ALICE_TOKEN) && !out.contains(BOB_TOKEN));
    // The flags of `run` work too, and users are matched without case.
    let (code, out, _) = xapsd(&[
        "devices",
        "--listen",
        &daemon.addr().to_string(),
        "--user",
        "BOB",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("bob\n") && !out.contains("alice"), "{out}");

    // A test push goes out through the daemon's APNs connection.
    let (code, out, _) = xapsd(&["push", "--config", config, "--user", "alice"]);
    assert_eq!(code, 0);
    assert_eq!(out, "2918…2829 of alice: delivered (APNs 200)\n");
    let sent = mock.wait_for_requests(1, TIMEOUT);
    assert_eq!(sent[0].device_token(), Some(ALICE_TOKEN));
    // Apple's verdict is applied as for any push: a dead token goes.
    mock.answer(BOB_TOKEN, Answer::unregistered());
    let (code, out, _) = xapsd(&["push", "--config", config, "--user", "bob"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "abab…abab of bob: APNs 410 Unregistered: device gone, registration removed\n"
    );
    let (_, out, _) = xapsd(&["devices", "--config", config]);
    assert!(out.ends_with("1 device(s), 1 user(s)\n"), "{out}");

    // The daemon holds the store: a config that does not lead to it is told so.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let wrong = cli_config(daemon.dir().path(), "wrong.json", closed_port, &db);
    let (code, _, err) = xapsd(&["devices", "--config", wrong.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is held by another process, but no daemon answers"));

    // Daemon stopped: the same commands work on the store itself.
    daemon.terminate();
    assert!(daemon.wait_exit(TIMEOUT).success());
    let (code, out, _) = xapsd(&["devices", "--config", config]);
    assert_eq!(code, 0);
    assert!(out.starts_with("alice\n  2918…2829"), "{out}");
    let (code, _, err) = xapsd(&["push", "--config", config, "--user", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("the daemon is not running"), "{err}");
    let (code, _, err) = xapsd(&[
        "remove", "--config", config, "--user", "alice", "--token", "abcd",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no device whose token starts with `abcd`"));
    let (code, out, _) = xapsd(&[
        "remove", "--config", config, "--user", "Alice", "--token", "2918",
    ]);
    assert_eq!((code, out.as_str()), (0, "removed 2918…2829 of alice\n"));
    let (code, out, _) = xapsd(&["devices", "--config", config]);
    assert_eq!((code, out.as_str()), (0, "no devices registered\n"));

    // And the daemon, started again, sees what was done without it.
    daemon.restart();
    let (code, out, _) = xapsd(&["devices", "--listen", &daemon.addr().to_string()]);
    assert_eq!((code, out.as_str()), (0, "no devices registered\n"));
}

#[test]
fn remove_through_the_daemon_and_admin_refuses_strangers() {
    // Daemon::start would take the non-loopback warning for a second listener.
    let mut daemon = Daemon::spawn(DaemonConfig::new().raw("listen", r#"["0.0.0.0:0"]"#));
    let line = daemon.wait_log("[INFO] listening on 0.0.0.0:", TIMEOUT);
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut plugin = PluginClient::connect(local).unwrap();
    assert_eq!(
        plugin.replay_fixture("01-register.http").unwrap().status,
        200
    );
    let listen = format!("0.0.0.0:{port}");
    let (code, out, _) = xapsd(&["remove", "--listen", &listen, "--user", "alice"]);
    assert_eq!((code, out.as_str()), (0, "removed 2918…2829 of alice\n"));
    let (code, _, err) = xapsd(&["remove", "--listen", &listen, "--user", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("user `alice` has no devices"), "{err}");

    // Without the admin header (a browser's cross-site POST): refused.
    let r = plugin
        .raw(b"POST /admin/remove HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"user\":\"alice\"}")
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body_str());

    // From this machine's non-loopback address: refused, header or not.
    let Some(ip) = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    else {
        eprintln!("no non-loopback address on this machine; skipping that part");
        return;
    };
    let mut stranger = PluginClient::connect(SocketAddr::new(ip, port)).unwrap();
    let r = stranger
        .raw(b"GET /admin/devices HTTP/1.1\r\nX-Xapsd-Admin: 1\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert!(r.body_str().contains("loopback peers only"));
    // The CLI pointed at that address is refused the same way, and told why.
    let (code, _, err) = xapsd(&[
        "devices",
        "--listen",
        &SocketAddr::new(ip, port).to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("add a loopback address"), "{err}");
    daemon.terminate();
    assert!(daemon.wait_exit(TIMEOUT).success());
}
