//! The legacy line protocol end to end: the real binary serving a Unix
//! socket, the old plugin's captured lines replayed byte for byte (one
//! connection each, as the plugin does), and the pushes they cause received
//! by the mock APNs.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::certs::{TestCa, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::MockApns;
use support::plugin::PluginClient;
use support::tempdir::TempDir;
use support::TIMEOUT;

const ALICE_TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const BOB_TOKEN: &str = "abababababababababababababababababababababababababababababababab";
const BOB_ACCOUNT: &str = "B0B00000-0000-0000-0000-000000000001";

fn legacy_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dovecot-xaps-plugin-legacy")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the old plugin does: connect, write one line, read the answer to EOF.
fn exchange(socket: &Path, line: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(line).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8(answer).unwrap()
}

fn primary_group() -> String {
    let out = Command::new("id").arg("-gn").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Setup {
    _ca: TestCa,
    mock: MockApns,
    _sockets: TempDir,
    socket: PathBuf,
    daemon: Daemon,
}

fn start(prepare: impl FnOnce(&Path)) -> Setup {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
    let sockets = TempDir::new("legacy");
    let socket = sockets.join("xapsd.sock");
    prepare(&socket);
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .num("delay_secs", 1)
            .path("legacy_socket", &socket)
            .str("legacy_socket_mode", "0620")
            .str("legacy_socket_group", &primary_group()),
    );
    Setup {
        _ca: ca,
        mock,
        _sockets: sockets,
        socket,
        daemon,
    }
}

#[test]
fn old_plugin_lines_replayed_byte_for_byte_reach_apns() {
    // A socket left behind by a crashed daemon: bound, never unlinked.
    let setup = start(|path| drop(UnixListener::bind(path).unwrap()));
    let socket = &setup.socket;
    let meta = std::fs::metadata(socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o620);
    let gid = Command::new("id").arg("-g").output().unwrap().stdout;
    assert_eq!(
        meta.gid().to_string(),
        String::from_utf8(gid).unwrap().trim()
    );

    for f in ["01-register.line", "02-register.line"] {
        assert_eq!(
            exchange(socket, &legacy_fixture(f)),
            format!("OK {TEST_TOPIC}\r\n"),
            "{f}"
        );
    }
    assert_eq!(
        exchange(socket, &legacy_fixture("03-notify.line")),
        "OK \r\n"
    );
    let push = &setup.mock.wait_for_requests(1, TIMEOUT)[0];
    assert_eq!(push.device_token(), Some(ALICE_TOKEN));
    assert_eq!(push.header("apns-topic"), Some(TEST_TOPIC));

    assert_eq!(
        exchange(socket, &legacy_fixture("04-notify.line")),
        "OK \r\n"
    );
    let pushes = setup.mock.wait_for_requests(2, TIMEOUT);
    assert_eq!(pushes[1].device_token(), Some(BOB_TOKEN));
    assert_eq!(
        pushes[1].body_str(),
        format!(r#"{{"aps":{{"account-id":"{BOB_ACCOUNT}"}}}}"#)
    );

    // Flag changes are held for delay_secs, then pushed.
    assert_eq!(
        exchange(socket, &legacy_fixture("05-notify.line")),
        "OK \r\n"
    );
    let pushes = setup.mock.wait_for_requests(3, TIMEOUT);
    assert_eq!(pushes[2].device_token(), Some(ALICE_TOKEN));

    // The very oldest plugins send no events: that is new mail.
    let oldest = b"NOTIFY dovecot-username=\"Bob\"\tdovecot-mailbox=\"INBOX\"\r\n";
    assert_eq!(exchange(socket, oldest), "OK \r\n");
    let pushes = setup.mock.wait_for_requests(4, TIMEOUT);
    assert_eq!(pushes[3].device_token(), Some(BOB_TOKEN));

    // The legacy front end is counted apart from HTTP.
    let mut http = PluginClient::connect(setup.daemon.addr()).unwrap();
    let metrics = http
        .raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .body_str();
    assert!(
        metrics.contains("xapsd_plugin_requests_total{frontend=\"legacy\"} 6\n"),
        "{metrics}"
    );
    assert!(metrics.contains("xapsd_plugin_errors_total{frontend=\"legacy\"} 0\n"));
}

#[test]
fn bad_lines_get_one_error_line_and_the_socket_goes_at_exit() {
    let mut setup = start(|_| {});
    let socket = setup.socket.clone();
    let cases: &[(&[u8], &str)] = &[
        (b"HELLO\r\n", "ERROR unknown command `HELLO`"),
        (
            b"NOTIFY dovecot-username=alice\r\n",
            "ERROR malformed request at byte 24",
        ),
        (
            b"REGISTER aps-account-id=\"A\"\taps-device-token=\"zz\"\taps-subtopic=\"com.apple.mobilemail\"\tdovecot-username=\"u\"\tdovecot-mailboxes=(\"INBOX\")\r\n",
            "ERROR field `ApsDeviceToken` is not a hex string",
        ),
        (b"\xff\xfe\r\n", "ERROR request is not UTF-8"),
    ];
    for (line, want) in cases {
        let got = exchange(&socket, line);
        assert!(got.starts_with(want), "{line:?}: got {got:?}");
        assert!(got.ends_with("\r\n") && got.matches("\r\n").count() == 1);
    }
    // A line longer than the bound is refused without reading it all.
    let mut long = b"NOTIFY dovecot-username=\"".to_vec();
    long.resize(20 * 1024, b'a');
    let got = exchange(&socket, &long);
    assert!(got.starts_with("ERROR request line over"), "{got:?}");
    // Unknown users are not an error for the old plugin.
    let unknown = b"NOTIFY dovecot-username=\"nobody\"\tdovecot-mailbox=\"INBOX\"\tevents=(\"MessageNew\")\r\n";
    assert_eq!(exchange(&socket, unknown), "OK \r\n");
    assert_eq!(setup.mock.request_count(), 0);

    setup.daemon.terminate();
    assert!(setup.daemon.wait_exit(TIMEOUT).success());
    assert!(!socket.exists(), "socket file removed at exit");
}

#[test]
fn a_live_socket_or_a_plain_file_is_not_replaced() {
    let dir = TempDir::new("legacy-refuse");
    let plain = dir.join("plain");
    std::fs::write(&plain, "keep me").unwrap();
    let mut daemon = Daemon::spawn(DaemonConfig::new().path("legacy_socket", &plain));
    assert!(!daemon.wait_exit(TIMEOUT).success());
    assert!(daemon.log_contains("is not a socket; not replacing it"));
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");

    let live = dir.join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    let mut daemon = Daemon::spawn(DaemonConfig::new().path("legacy_socket", &live));
    assert!(!daemon.wait_exit(TIMEOUT).success());
    assert!(daemon.log_contains("is in use by another process"));
    assert!(live.exists());

    let mut daemon = Daemon::spawn(
        DaemonConfig::new()
            .path("legacy_socket", &dir.join("x.sock"))
            .str("legacy_socket_group", "no-such-group-xapsd"),
    );
    assert!(!daemon.wait_exit(TIMEOUT).success());
    assert!(daemon.log_contains("group `no-such-group-xapsd` does not exist"));
}
