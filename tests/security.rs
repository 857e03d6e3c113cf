//! Security features through the real binary: plugin authentication with
//! HTTP Basic credentials (the plugin's own captures), privileges dropped
//! after a start as root, secret files that others can read refused, and
//! the same API over the TLS listener.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::apple::Apple;
use support::certs::TEST_TOPIC;
use support::daemon::{json_string, Daemon, DaemonConfig};
use support::plugin::PluginClient;
use support::TIMEOUT;

/// The credentials in the `basic-auth/` captures' Authorization header.
const USER: &str = "xapsd";
const PASSWORD: &str = "s3cret";
/// That header's base64, which must never appear in a log either.
const ENCODED: &str = "eGFwc2Q6czNjcmV0";

const REGISTER: &str = r#"{"ApsAccountId":"A","ApsDeviceToken":"2918390218931890821908309283098109381029309829018310983092892829","ApsSubtopic":"com.apple.mobilemail","Username":"carol","Mailboxes":["INBOX"]}"#;

fn private_file(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn assert_no_secret_logged(daemon: &Daemon) {
    let log = daemon.log_text();
    assert!(
        !log.contains(PASSWORD) && !log.contains(ENCODED),
        "credentials in the log:\n{log}"
    );
}

#[test]
fn basic_auth_captures_pass_and_everything_else_gets_401() {
    let Apple {
        ca: _ca,
        mock,
        push,
    } = Apple::new();
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .num("delay_secs", 1)
            .str("plugin_auth", &format!("{USER}:{PASSWORD}")),
    );

    // One keep-alive connection: a refusal must not cost the connection.
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin.replay_fixture("01-register.http").unwrap();
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(r.header("www-authenticate"), Some(r#"Basic realm="xapsd""#));
    assert!(!r.closes_connection());
    daemon.wait_log("refused (401): POST /register: no credentials", TIMEOUT);

    for fixture in [
        "01-register.http",
        "02-register.http",
        "03-notify.http",
        "04-notify.http",
    ] {
        let r = plugin
            .replay_fixture(format!("basic-auth/{fixture}"))
            .unwrap();
        assert_eq!(r.status, 200, "{fixture}: {}", r.body_str());
    }
    mock.wait_for_requests(2, TIMEOUT);

    // Plain captures, a wrong password, another user, another scheme.
    let plain = plugin.replay_fixture("03-notify.http").unwrap();
    assert_eq!(plain.status, 401);
    for (user, password) in [(USER, "s3cret "), (USER, "S3cret"), ("xaps", PASSWORD)] {
        let mut wrong = PluginClient::connect(daemon.addr())
            .unwrap()
            .with_basic_auth(user, password);
        let r = wrong.post("/register", REGISTER).unwrap();
        assert_eq!(r.status, 401, "{user}:{password}");
        assert_eq!(r.header("www-authenticate"), Some(r#"Basic realm="xapsd""#));
    }
    daemon.wait_log("wrong user or password", TIMEOUT);
    let bearer = plugin
        .raw(b"POST /notify HTTP/1.1\r\nAuthorization: Bearer abc\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    assert_eq!(bearer.status, 401);

    // Operator endpoints need the credentials too; status stays open on loopback.
    let admin = plugin
        .raw(b"POST /admin/devices HTTP/1.1\r\nx-xapsd-admin: 1\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    assert_eq!(admin.status, 401);
    let health = plugin
        .raw(b"GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(health.status, 200, "{}", health.body_str());

    // Still serving, with the right credentials built by the client.
    let mut good = PluginClient::connect(daemon.addr())
        .unwrap()
        .with_basic_auth(USER, PASSWORD);
    assert_eq!(good.post("/register", REGISTER).unwrap().status, 200);
    assert_no_secret_logged(&daemon);
}

#[test]
fn credentials_from_a_file_and_the_operator_commands_send_them() {
    let Apple {
        ca: _ca,
        mock,
        push,
    } = Apple::new();
    let dir = support::tempdir::TempDir::new("auth-file");
    let secret = dir.join("plugin-auth");
    private_file(&secret, &format!("{USER}:{PASSWORD}\n"));
    let auth = format!("@{}", secret.display());
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .str("plugin_auth", &auth),
    );
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin
        .replay_fixture("basic-auth/01-register.http")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        plugin.replay_fixture("02-register.http").unwrap().status,
        401
    );

    // `xapsd devices` reads the same setting and authenticates.
    let config = dir.join("cli.json");
    let text = format!(
        "{{\"listen\": [{}], \"db\": {}, \"plugin_auth\": {}}}",
        json_string(&daemon.addr().to_string()),
        json_string(daemon.db_path().to_str().unwrap()),
        json_string(&auth)
    );
    private_file(&config, &text);
    let out = Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .args(["devices", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alice"), "{stdout}");
    assert_no_secret_logged(&daemon);
}

#[test]
fn unusable_credentials_stop_the_daemon_at_start() {
    let dir = support::tempdir::TempDir::new("auth-bad");
    let missing = dir.join("absent");
    let mut daemon =
        Daemon::spawn(DaemonConfig::new().str("plugin_auth", &format!("@{}", missing.display())));
    assert!(!daemon.wait_exit(TIMEOUT).success());
    daemon.wait_log("plugin_auth: cannot read", TIMEOUT);

    let mut daemon = Daemon::spawn(DaemonConfig::new().str("plugin_auth", "no-colon-secret"));
    assert!(!daemon.wait_exit(TIMEOUT).success());
    let log = daemon.log_text();
    assert!(log.contains("config key `plugin_auth`"), "{log}");
    assert!(!log.contains("no-colon-secret"), "{log}");
}

/// The uid/gid lines of /proc/PID/status: (real, effective, saved, fs).
fn proc_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line[field.len()..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The switch itself needs root and the Debian `nobody`/`nogroup` accounts.
fn root_with_nobody() -> Option<(u32, u32)> {
    use nix::unistd::{Group, User};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not running as root, so there are no privileges to drop");
        return None;
    }
    let user = User::from_name("nobody").ok().flatten();
    let group = Group::from_name("nogroup").ok().flatten();
    match (user, group) {
        (Some(u), Some(g)) => Some((u.uid.as_raw(), g.gid.as_raw())),
        _ => {
            eprintln!("SKIPPED: no nobody user or nogroup group on this system");
            None
        }
    }
}

#[test]
fn started_as_root_it_runs_as_the_configured_user_and_still_writes() {
    use std::os::unix::fs::MetadataExt;
    let Some((uid, gid)) = root_with_nobody() else {
        return;
    };
    let dir = support::tempdir::TempDir::new("drop");
    let db = dir.join("state/xapsd.redb");
    let socket = dir.join("legacy.sock");
    let mut daemon = Daemon::start(
        DaemonConfig::new()
            .without("allow_root")
            .str("daemon_user", "nobody")
            .str("daemon_group", "nogroup")
            .path("db", &db)
            .path("legacy_socket", &socket),
    );
    daemon.wait_log("dropped root privileges: running as nobody", TIMEOUT);
    let pid = daemon.pid().unwrap();
    assert_eq!(proc_ids(pid, "Uid:"), vec![uid; 4]);
    assert_eq!(proc_ids(pid, "Gid:"), vec![gid; 4]);
    assert_eq!(proc_ids(pid, "Groups:"), vec![gid]);

    // What it created as root is now the user's, and private.
    for (path, mode) in [(&db, 0o600), (&db.parent().unwrap().to_owned(), 0o700)] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", path.display());
        assert_eq!(meta.mode() & 0o777, mode, "{}", path.display());
    }
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), uid);

    // The store's writer works after the switch: a registration commits.
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin.replay_fixture("01-register.http").unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    daemon.terminate();
    assert!(daemon.wait_exit(TIMEOUT).success());
    let out = Command::new(env!("CARGO_BIN_EXE_xapsd"))
        .args([
            "devices",
            "--listen",
            "127.0.0.1:1",
            "--db",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
}

#[test]
fn started_as_root_without_the_user_it_refuses_to_start() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not running as root, so the user is never looked up");
        return;
    }
    let mut daemon = Daemon::spawn(
        DaemonConfig::new()
            .without("allow_root")
            .str("daemon_user", "no-such-user-xapsd"),
    );
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(1));
    let log = daemon.log_text();
    assert!(
        log.contains("started as root, but user `no-such-user-xapsd` does not exist")
            && log.contains("allow_root"),
        "{log}"
    );
    assert!(!log.contains("listening on"), "{log}");
    assert!(!daemon.db_path().exists(), "decided before the store");

    // allow_root keeps root, and says so.
    let daemon = Daemon::start(DaemonConfig::new().str("daemon_user", "no-such-user-xapsd"));
    daemon.wait_log("running as root: allow_root is set", TIMEOUT);
    assert_eq!(proc_ids(daemon.pid().unwrap(), "Uid:"), vec![0; 4]);
}

#[test]
fn started_as_root_with_no_xapsd_account_it_runs_as_nobody() {
    let xapsd_exists = nix::unistd::User::from_name("xapsd")
        .ok()
        .flatten()
        .is_some();
    if !nix::unistd::geteuid().is_root() || xapsd_exists {
        eprintln!("SKIPPED: needs root and no `xapsd` account (a checkout, not a package)");
        return;
    }
    // Nothing configured about accounts: what a root user trying a checkout gets.
    let daemon = Daemon::start(DaemonConfig::new().without("allow_root"));
    daemon.wait_log("user `xapsd` does not exist: running as `nobody`", TIMEOUT);
    daemon.wait_log("dropped root privileges: running as nobody", TIMEOUT);
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(proc_ids(daemon.pid().unwrap(), "Uid:"), vec![nobody; 4]);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    assert_eq!(
        plugin.replay_fixture("01-register.http").unwrap().status,
        200,
        "store still writable"
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn secret_files_readable_by_others_stop_the_start_with_the_fix() {
    let Apple {
        ca: _ca,
        mock,
        push,
    } = Apple::new();
    chmod(&push.key, 0o640);
    let mut daemon = Daemon::spawn(DaemonConfig::new().apns(&mock, &push));
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(1));
    let key = push.key.display().to_string();
    daemon.wait_log(
        &format!("key_file {key} holds a secret but is readable by its group (mode 0640): run `chmod 600 {key}`"),
        TIMEOUT,
    );
    assert!(!daemon.log_contains("listening on"));

    // The certificate itself may be public; the key file fixed, it starts.
    chmod(&push.key, 0o600);
    chmod(&push.cert, 0o644);
    let daemon = Daemon::start(DaemonConfig::new().apns(&mock, &push));
    drop(daemon);

    // The plugin_auth file counts the same way.
    let dir = support::tempdir::TempDir::new("secrets");
    let secret = dir.join("plugin-auth");
    private_file(&secret, "xapsd:s3cret\n");
    chmod(&secret, 0o604);
    let mut daemon =
        Daemon::spawn(DaemonConfig::new().str("plugin_auth", &format!("@{}", secret.display())));
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(1));
    daemon.wait_log("plugin_auth ", TIMEOUT);
    daemon.wait_log("is readable by others (mode 0604)", TIMEOUT);
}

#[test]
fn the_config_file_counts_only_when_it_holds_the_password() {
    let dir = support::tempdir::TempDir::new("config-mode");
    let check = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_xapsd"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let inline = dir.join("inline.json");
    private_file(
        &inline,
        r#"{"plugin_auth": "xapsd:s3cret", "db": "/nonexistent/x.redb"}"#,
    );
    chmod(&inline, 0o644);
    let (code, out) = check(&inline);
    assert_eq!(code, Some(1), "{out}");
    let path = inline.display();
    assert!(
        out.contains(&format!("config file {path} holds a secret but is readable by its group and others (mode 0644): run `chmod 600 {path}`")),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "{out}");
    chmod(&inline, 0o600);
    assert_eq!(check(&inline).0, Some(0));

    let secret = dir.join("plugin-auth");
    private_file(&secret, "xapsd:s3cret\n");
    let by_file = dir.join("by-file.json");
    let text = format!(
        "{{\"plugin_auth\": {}, \"db\": \"/nonexistent/x.redb\"}}",
        json_string(&format!("@{}", secret.display()))
    );
    private_file(&by_file, &text);
    chmod(&by_file, 0o644);
    let (code, out) = check(&by_file);
    assert_eq!(
        code,
        Some(0),
        "a config without secrets may be readable: {out}"
    );
}

/// Reads one response from a TLS stream: (status, body). `pending` keeps
/// bytes of the next response.
fn read_tls_response(stream: &mut impl std::io::Read, pending: &mut Vec<u8>) -> (u16, String) {
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before a response head");
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(pending[..end].to_vec()).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    while pending.len() < end + len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed inside a response body");
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&pending[end..end + len]).into_owned();
    pending.drain(..end + len);
    (status, body)
}

#[test]
fn the_tls_listener_serves_the_same_api_with_the_same_auth() {
    use std::io::Write;
    use std::sync::Arc;
    let Apple { ca, mock, push } = Apple::new();
    let server = ca.write(&ca.server_cert(), "tls");
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .str("plugin_auth", &format!("{USER}:{PASSWORD}"))
            .raw("tls_listen", r#"["127.0.0.1:0"]"#)
            .path("tls_cert_file", &server.cert)
            .path("tls_key_file", &server.key),
    );
    let line = daemon.wait_log("plugin API over TLS at ", TIMEOUT);
    let addr: std::net::SocketAddr = line.rsplit(' ').next().unwrap().trim().parse().unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.root_store())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    let mut pending = Vec::new();

    // Two requests in one write, the first larger than the daemon's first
    // read: the second waits decrypted inside the TLS session, where socket
    // readiness would never announce it.
    let mailboxes: Vec<String> = (0..200).map(|i| format!("\"Folder {i:02}\"")).collect();
    let big = format!(
        r#"{{"ApsAccountId":"A","ApsDeviceToken":"{}","ApsSubtopic":"com.apple.mobilemail","Username":"dave","Mailboxes":[{}]}}"#,
        "ab".repeat(32),
        mailboxes.join(",")
    );
    let mut both =
        support::plugin::plugin_request("/register", &big, addr, Some(&format!("Basic {ENCODED}")));
    assert!(both.len() > 2048, "larger than the first read");
    both.extend(support::plugin::fixture_bytes(
        "basic-auth/02-register.http",
    ));
    tls.write_all(&both).unwrap();
    tls.flush().unwrap();
    for _ in 0..2 {
        let (status, body) = read_tls_response(&mut tls, &mut pending);
        assert_eq!((status, body.as_str()), (200, TEST_TOPIC));
    }
    // Same auth rules as the plain listener, on the same connection.
    tls.write_all(&support::plugin::fixture_bytes("03-notify.http"))
        .unwrap();
    tls.flush().unwrap();
    assert_eq!(read_tls_response(&mut tls, &mut pending).0, 401);
    for fixture in ["basic-auth/01-register.http", "basic-auth/03-notify.http"] {
        tls.write_all(&support::plugin::fixture_bytes(fixture))
            .unwrap();
        tls.flush().unwrap();
        assert_eq!(
            read_tls_response(&mut tls, &mut pending).0,
            200,
            "{fixture}"
        );
    }
    mock.wait_for_requests(1, TIMEOUT);

    // The plain listener keeps serving next to it.
    let mut plain = PluginClient::connect(daemon.addr()).unwrap();
    let r = plain.replay_fixture("basic-auth/04-notify.http").unwrap();
    assert_eq!(r.status, 200);
    assert_no_secret_logged(&daemon);
}

#[test]
fn a_non_loopback_listener_without_plugin_auth_is_warned_about() {
    let open = Daemon::start(DaemonConfig::new().raw("listen", r#"["0.0.0.0:0"]"#));
    open.wait_log("ready", TIMEOUT);
    let warning = "without plugin_auth: any host that reaches it can register devices";
    assert!(
        open.log_lines().iter().any(|l| l.contains("[WARN]")
            && l.contains("non-loopback 0.0.0.0:")
            && l.contains(warning)),
        "{}",
        open.log_text()
    );

    // With credentials, and on loopback, there is nothing to warn about.
    let guarded = Daemon::start(
        DaemonConfig::new()
            .raw("listen", r#"["0.0.0.0:0"]"#)
            .str("plugin_auth", &format!("{USER}:{PASSWORD}")),
    );
    let loopback = Daemon::start(DaemonConfig::new());
    for daemon in [&guarded, &loopback] {
        daemon.wait_log("ready", TIMEOUT);
        assert!(
            !daemon.log_contains("non-loopback"),
            "{}",
            daemon.log_text()
        );
    }
}
