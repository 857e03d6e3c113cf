//! Proves the test support code on its own, before any daemon test leans on it.
//!
//! If the mock APNs accepted clients it should refuse, or answered something
//! other than what a test scripted, daemon tests would pass or fail for the
//! wrong reasons. So an independent HTTP/2 client (rustls + h2, like the
//! daemon's but written here) checks the mock's TLS policy, answers,
//! SETTINGS and failure modes; a few more tests check that the plugin client
//! reproduces the captured requests and that the daemon runner's log
//! watching works, using a shell script standing in for the binary.

mod support;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::{Async, Timer};
use bytes::Bytes;
use futures_lite::future;
use h2::client::SendRequest;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use support::certs::{subject_uid, CertAndKey, PushCertSpec, TestCa, TEST_TOPIC};
use support::daemon::{parse_listen_addr, Daemon, DaemonConfig};
use support::mock_apns::{Answer, MockApns, MockOptions};
use support::plugin::{self, PluginClient};
use support::tempdir::TempDir;
use support::TIMEOUT;

const TOKEN: &str = "2918390218931890821908309283098109381029309829018310983092892829";
const OTHER_TOKEN: &str = "abababababababababababababababababababababababababababababababab";

/// What the test client got back for one push.
#[derive(Debug)]
struct Reply {
    status: u16,
    apns_id: Option<String>,
    body: String,
}

fn client_config(ca: &TestCa, cert: Option<&CertAndKey>) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(ca.root_store());
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(vec![c.rustls_cert()], c.rustls_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Runs connection drivers and concurrent pushes for every test, so a test
/// thread may block (on the mock's waits) without stalling its connections.
fn executor() -> &'static Executor<'static> {
    static EXECUTOR: OnceLock<&'static Executor<'static>> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let ex: &'static Executor<'static> = Box::leak(Box::new(Executor::new()));
        std::thread::Builder::new()
            .name("selftest-client".into())
            .spawn(move || async_io::block_on(ex.run(future::pending::<()>())))
            .expect("spawn client executor");
        ex
    })
}

/// Blocks on `f`, failing the test after [`TIMEOUT`].
fn block_on<T>(f: impl Future<Output = T>) -> T {
    async_io::block_on(future::or(f, async {
        Timer::after(TIMEOUT).await;
        panic!("test client timed out after {TIMEOUT:?}");
    }))
}

/// TLS + HTTP/2 connection to `addr`; its driver runs on [`executor`].
async fn connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<SendRequest<Bytes>, String> {
    let tcp = Async::<TcpStream>::connect(addr)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let server_name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = futures_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (send, connection) = h2::client::handshake(tls.compat())
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    executor()
        .spawn(async move {
            let _ = connection.await;
        })
        .detach();
    Ok(send)
}

/// One push shaped like the daemon's.
async fn push(send: &SendRequest<Bytes>, token: &str) -> Result<Reply, String> {
    let mut send = send
        .clone()
        .ready()
        .await
        .map_err(|e| format!("ready: {e}"))?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost/3/device/{token}"))
        .header("apns-topic", TEST_TOPIC)
        .header("apns-push-type", "background")
        .header("apns-priority", "5")
        .body(())
        .expect("request");
    let (response, mut body) = send
        .send_request(request, false)
        .map_err(|e| format!("send_request: {e}"))?;
    body.send_data(
        Bytes::from_static(br#"{"aps":{"account-id":"0715A26B-CA09-4730-A419-793000CA982E"}}"#),
        true,
    )
    .map_err(|e| format!("send_data: {e}"))?;
    let response = response.await.map_err(|e| format!("response: {e}"))?;
    let status = response.status().as_u16();
    let apns_id = response
        .headers()
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut stream = response.into_body();
    let mut body = Vec::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = stream.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        apns_id,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Connects with `cert` and sends one push to `token`.
fn push_once(
    mock: &MockApns,
    ca: &TestCa,
    cert: Option<&CertAndKey>,
    token: &str,
) -> Result<Reply, String> {
    let config = client_config(ca, cert);
    block_on(async {
        let send = connect(mock.addr(), config).await?;
        push(&send, token).await
    })
}

#[test]
fn push_with_client_certificate_gets_200_and_is_recorded() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert(TEST_TOPIC);

    let reply = push_once(&mock, &ca, Some(&cert), TOKEN).expect("push");

    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.apns_id.as_deref().is_some_and(|id| id.len() == 36),
        "{reply:?}"
    );
    assert_eq!(reply.body, "");
    let requests = mock.wait_for_requests(1, TIMEOUT);
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/3/device/{TOKEN}"));
    assert_eq!(r.device_token(), Some(TOKEN));
    assert_eq!(r.header("apns-topic"), Some(TEST_TOPIC));
    assert_eq!(r.header("apns-push-type"), Some("background"));
    assert_eq!(
        r.body_str(),
        r#"{"aps":{"account-id":"0715A26B-CA09-4730-A419-793000CA982E"}}"#
    );
    assert_eq!(r.client_uid.as_deref(), Some(TEST_TOPIC));
    assert_eq!(r.client_cert_der.as_deref(), Some(cert.cert_der.as_slice()));
    assert_eq!(r.connection, 1);
    assert_eq!(r.answer, Some(Answer::ok()));
    let conns = mock.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].alpn.as_deref(), Some("h2"));
    assert_eq!(conns[0].tls_version.as_deref(), Some("TLSv1_3"));
    assert!(conns[0].h2_established);
}

#[test]
fn client_without_certificate_is_refused_at_tls_handshake() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);

    let result = push_once(&mock, &ca, None, TOKEN);

    assert!(result.is_err(), "a push without client cert got {result:?}");
    let failed = mock.wait_for_tls_failures(1, TIMEOUT);
    let error = failed[0].tls_error.as_deref().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("certificate"),
        "unexpected TLS error {error:?}"
    );
    assert!(!failed[0].h2_established);
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let mock = MockApns::start(&ca);
    let foreign_cert = stranger.push_cert(TEST_TOPIC);

    let result = push_once(&mock, &ca, Some(&foreign_cert), TOKEN);

    assert!(result.is_err(), "a foreign cert got {result:?}");
    mock.wait_for_tls_failures(1, TIMEOUT);
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn scripted_answers_come_back_with_their_reason() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert(TEST_TOPIC);
    mock.answer(TOKEN, Answer::unregistered());
    mock.answer_next(OTHER_TOKEN, 1, Answer::error(429, "TooManyRequests"));
    let config = client_config(&ca, Some(&cert));

    let replies = block_on(async {
        let send = connect(mock.addr(), config).await.expect("connect");
        let mut replies = Vec::new();
        for token in [TOKEN, OTHER_TOKEN, OTHER_TOKEN, TOKEN] {
            replies.push(push(&send, token).await.expect("push"));
        }
        replies
    });

    assert_eq!(replies[0].status, 410);
    assert!(
        replies[0]
            .body
            .starts_with(r#"{"reason":"Unregistered","timestamp":"#),
        "{:?}",
        replies[0]
    );
    assert!(replies[0].apns_id.is_some());
    assert_eq!(
        (replies[1].status, replies[1].body.as_str()),
        (429, r#"{"reason":"TooManyRequests"}"#)
    );
    assert_eq!(replies[2].status, 200, "answer_next(1) must be used up");
    assert_eq!(replies[3].status, 410, "answer() must last");
    // All four on one connection, in order.
    let requests = mock.wait_for_requests(4, TIMEOUT);
    assert!(requests.iter().all(|r| r.connection == 1));
    let statuses: Vec<u16> = requests
        .iter()
        .map(|r| r.answer.as_ref().expect("answered").status)
        .collect();
    assert_eq!(statuses, [410, 429, 200, 410]);
}

#[test]
fn advertises_max_concurrent_streams_and_answers_streams_concurrently() {
    let ca = TestCa::new();
    let mock = MockApns::start_with(
        &ca,
        MockOptions {
            max_concurrent_streams: 3,
            ..MockOptions::default()
        },
    );
    let cert = ca.push_cert(TEST_TOPIC);
    let delay = Duration::from_millis(400);
    mock.set_delay(delay);
    let config = client_config(&ca, Some(&cert));

    let (advertised, statuses, elapsed) = block_on(async {
        let send = connect(mock.addr(), config).await.expect("connect");
        // The first answer proves the server's SETTINGS were processed.
        let first = push(&send, TOKEN).await.expect("first push");
        assert_eq!(first.status, 200);
        let advertised = send.current_max_send_streams();
        let started = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let send = send.clone();
                executor().spawn(async move { push(&send, TOKEN).await.expect("push").status })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await);
        }
        (advertised, statuses, started.elapsed())
    });

    assert_eq!(advertised, 3);
    assert_eq!(mock.options().max_concurrent_streams, 3);
    assert_eq!(statuses, [200; 6]);
    // 6 requests, 3 at a time, each delayed: two rounds, not one, not six.
    assert_eq!(mock.peak_in_flight(), 3);
    assert!(elapsed >= delay * 2, "{elapsed:?}");
    assert!(elapsed < delay * 6, "{elapsed:?}");
}

#[test]
fn goaway_closes_connections_while_the_listener_stays_up() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert(TEST_TOPIC);
    let config = client_config(&ca, Some(&cert));

    let (before, after_goaway, reconnected) = block_on(async {
        let send = connect(mock.addr(), config.clone()).await.expect("connect");
        let before = push(&send, TOKEN).await.expect("push");
        mock.send_goaway();
        // Blocking here is fine: the mock and the client's connection
        // driver run on their own threads.
        mock.wait_for_open_connections(0, TIMEOUT);
        let after_goaway = push(&send, TOKEN).await;
        let again = connect(mock.addr(), config).await.expect("reconnect");
        let reconnected = push(&again, TOKEN).await.expect("push after reconnect");
        (before, after_goaway, reconnected)
    });

    assert_eq!(before.status, 200);
    assert!(after_goaway.is_err(), "{after_goaway:?}");
    assert_eq!(reconnected.status, 200);
    assert_eq!(mock.connections_accepted(), 2);
    assert_eq!(mock.request_count(), 2);
}

#[test]
fn down_refuses_connections_and_up_listens_on_the_same_port() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert(TEST_TOPIC);
    assert_eq!(
        push_once(&mock, &ca, Some(&cert), TOKEN).unwrap().status,
        200
    );

    mock.set_down(true);
    let refused = TcpStream::connect_timeout(&mock.addr(), TIMEOUT);
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    assert_eq!(mock.open_connections(), 0);

    mock.set_down(false);
    assert_eq!(
        push_once(&mock, &ca, Some(&cert), TOKEN).unwrap().status,
        200
    );
    assert_eq!(mock.connections_accepted(), 2);
}

#[test]
fn stall_holds_answers_until_released() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert(TEST_TOPIC);
    mock.set_stall(true);

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| done_tx.send(push_once(&mock, &ca, Some(&cert), TOKEN)));
        let requests = mock.wait_for_requests(1, TIMEOUT);
        assert_eq!(requests[0].answer, None);
        // Absence of an answer cannot be awaited; give it a short window.
        let early = done_rx.recv_timeout(Duration::from_millis(300));
        assert!(early.is_err(), "a stalled push was answered: {early:?}");
        assert_eq!(mock.in_flight(), 1);
        mock.set_stall(false);
        let reply = done_rx.recv_timeout(TIMEOUT).expect("pusher thread");
        assert_eq!(reply.expect("push").status, 200);
    });
    assert_eq!(mock.in_flight(), 0);
}

#[test]
fn blackhole_accepts_tcp_but_never_speaks_tls() {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    let cert = ca.push_cert(TEST_TOPIC);
    mock.set_blackhole(true);
    let config = client_config(&ca, Some(&cert));

    let outcome = block_on(future::or(
        async { Some(connect(mock.addr(), config).await) },
        async {
            Timer::after(Duration::from_millis(300)).await;
            None
        },
    ));

    assert!(outcome.is_none(), "handshake finished: {outcome:?}");
    let conns = mock.wait_for_connections(1, TIMEOUT);
    assert!(conns[0].blackholed);
    mock.set_blackhole(false);
    mock.wait_for_open_connections(0, TIMEOUT);
}

// ---- certificates, plugin client and daemon runner ---------------------

#[test]
fn push_certificates_carry_the_topic_as_subject_uid() {
    let ca = TestCa::new();
    let cert = ca.push_cert(TEST_TOPIC);
    assert_eq!(subject_uid(&cert.cert_der).as_deref(), Some(TEST_TOPIC));
    assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(subject_uid(&ca.push_cert_without_uid().cert_der), None);

    let not_after = std::time::UNIX_EPOCH + Duration::from_secs(1_795_953_630);
    let mut spec = PushCertSpec::new(TEST_TOPIC);
    spec.not_after = Some(not_after);
    let dated = ca.push_cert_with(spec);
    let (_, parsed) = x509_parser::parse_x509_certificate(&dated.cert_der).unwrap();
    assert_eq!(parsed.validity().not_after.timestamp(), 1_795_953_630);
    assert!(parsed
        .extensions()
        .iter()
        .any(|e| e.oid.to_id_string() == "1.2.840.113635.100.6.3.2"));

    let files = ca.write(&cert, "push");
    assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), cert.cert_pem);
    assert_eq!(std::fs::read_to_string(&files.key).unwrap(), cert.key_pem);
}

#[test]
fn plugin_requests_match_the_captures_except_for_the_date() {
    let without_date = |bytes: &[u8]| -> String {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let addr: SocketAddr = "127.0.0.1:11619".parse().unwrap();
    for (name, auth) in [
        ("01-register.http", None),
        ("05-notify.http", None),
        (
            "basic-auth/01-register.http",
            Some("Basic eGFwc2Q6czNjcmV0"),
        ),
    ] {
        let capture = plugin::fixture_bytes(name);
        let text = String::from_utf8(capture.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let path = head.split(' ').nth(1).unwrap();
        let built = plugin::plugin_request(path, body, addr, auth);
        assert_eq!(without_date(&built), without_date(&capture), "{name}");
    }
}

#[test]
fn http_date_and_basic_auth_encoding() {
    let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
    assert_eq!(
        plugin::http_date(at(1_795_953_630)),
        "Sun, 29 Nov 2026 12:00:30 GMT"
    );
    assert_eq!(
        plugin::http_date(at(1_709_251_199)),
        "Thu, 29 Feb 2024 23:59:59 GMT"
    );
    // `with_basic_auth` must produce the capture's header.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || read_one_request(&listener.accept().unwrap().0));
    let mut client = PluginClient::connect(addr)
        .unwrap()
        .with_basic_auth("xapsd", "s3cret");
    let _ = client.post("/notify", "{}");
    let seen = server.join().unwrap();
    assert!(
        seen.contains("\r\nAuthorization: Basic eGFwc2Q6czNjcmV0\r\n"),
        "{seen}"
    );
}

/// Reads one request head plus its Content-Length body, then answers 204.
fn read_one_request(mut stream: &TcpStream) -> String {
    use std::io::{Read, Write};
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n{}") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "client closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .unwrap();
    String::from_utf8(seen).unwrap()
}

#[test]
fn plugin_client_reads_keep_alive_responses() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let register = plugin::fixture_bytes("01-register.http");
    let notify = plugin::fixture_bytes("03-notify.http");
    let (register_len, two_notifies) = (register.len(), 2 * notify.len());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let read_exactly = |s: &mut TcpStream, n: usize| {
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).unwrap();
        };
        read_exactly(&mut s, register_len);
        // Answer in two writes, split inside the body.
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncom.a")
            .unwrap();
        s.flush().unwrap();
        s.write_all(b"pple.").unwrap();
        // Two pipelined requests, both answers in one write, then close.
        read_exactly(&mut s, two_notifies);
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none\
              HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    });

    let mut client = PluginClient::connect(addr).unwrap();
    let first = client.replay_fixture("01-register.http").unwrap();
    assert_eq!(
        (first.status, first.body_str().as_str()),
        (200, "com.apple.")
    );
    client.send_raw(&notify).unwrap();
    client.send_raw(&notify).unwrap();
    let second = client.read_response().unwrap();
    assert_eq!((second.status, second.body_str().as_str()), (200, "one"));
    let third = client.read_response().unwrap();
    assert_eq!((third.status, third.reason.as_str()), (404, "Not Found"));
    assert!(third.closes_connection());
    assert!(client.wait_closed().unwrap());
    server.join().unwrap();
}

#[test]
fn parses_listen_lines() {
    assert_eq!(
        parse_listen_addr("2026-11-29 INFO [xapsd] listening on 127.0.0.1:11619"),
        Some("127.0.0.1:11619".parse().unwrap())
    );
    assert_eq!(
        parse_listen_addr("listening on [::1]:80, plugin HTTP"),
        Some("[::1]:80".parse().unwrap())
    );
    assert_eq!(parse_listen_addr("listening on nothing"), None);
}

/// A stand-in daemon: logs like xapsd, then waits for a signal.
fn fake_daemon(dir: &TempDir, body: &str) -> Vec<String> {
    let script = dir.write("fake-xapsd.sh", format!("{body}\n"));
    // Run through sh: executing a just-written file can fail with ETXTBSY.
    vec!["sh".to_string(), script.to_str().unwrap().to_string()]
}

#[test]
fn daemon_runner_waits_for_listening_and_signals() {
    let dir = TempDir::new("fake-daemon");
    let program = fake_daemon(
        &dir,
        "test \"$1 $2\" = 'run --config' || exit 64\n\
         grep -q '\"listen\": \\[\"127.0.0.1:0\"\\]' \"$3\" || exit 65\n\
         echo 'INFO starting' >&2\n\
         echo 'INFO listening on 127.0.0.1:4242' >&2\n\
         exec sleep 60",
    );
    let mut daemon = Daemon::spawn_program(program, DaemonConfig::new().num("delay_secs", 1));
    daemon.wait_listening(TIMEOUT);
    assert_eq!(daemon.addr(), "127.0.0.1:4242".parse().unwrap());
    assert!(daemon.log_contains("INFO starting"));
    assert!(!daemon.log_contains("never logged"));
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    assert!(config.contains("\"delay_secs\": 1"), "{config}");
    assert!(daemon.db_path().starts_with(daemon.dir().path()));

    daemon.terminate();
    let status = daemon.wait_exit(TIMEOUT);
    assert!(!status.success());

    let mark = daemon.log_mark();
    daemon.restart();
    assert_eq!(daemon.addr(), "127.0.0.1:4242".parse().unwrap());
    daemon.wait_log_since(mark, "listening on", TIMEOUT);
    assert!(daemon.exited().is_none());
}

#[test]
fn daemon_runner_reports_an_early_exit() {
    let dir = TempDir::new("fake-daemon");
    let program = fake_daemon(&dir, "echo 'ERROR certificate has no UID' >&2\nexit 3");
    let mut daemon = Daemon::spawn_program(program, DaemonConfig::new());
    let status = daemon.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(3));
    assert!(daemon.log_contains("certificate has no UID"));
    // Waiting for a line that never comes fails fast once the process is gone.
    let started = Instant::now();
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        daemon.wait_log("listening on", TIMEOUT)
    }));
    assert!(waited.is_err());
    assert!(started.elapsed() < TIMEOUT);
}
