//! Faults, end to end: the real binary, a real redb file, the plugin's
//! HTTP/1.1 and the mock APNs (TLS 1.3 + HTTP/2, client certificate), with
//! things going wrong on purpose: a crash mid-burst, APNs down, GOAWAY
//! mid-flight, APNs stalling, a store that cannot grow, the wall clock
//! jumping, slow and idle plugin peers, too many connections.
//!
//! Timeouts are shortened through the daemon's `XAPSD_TEST_TIMEOUTS` hook
//! and the wall clock is stepped through `XAPSD_TEST_CLOCK_OFFSET_FILE`
//! (both documented in src/limits.rs and src/clock.rs).

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::apple::Apple;
use support::daemon::Daemon;
use support::mock_apns::Request;
use support::plugin::PluginClient;
use support::TIMEOUT;

fn token(i: usize) -> String {
    format!("{i:064x}")
}

fn register_json(i: usize, user: &str) -> String {
    format!(
        r#"{{"ApsAccountId":"ACCT-{i}","ApsDeviceToken":"{}","ApsSubtopic":"com.apple.mobilemail","Username":"{user}","Mailboxes": ["INBOX"]}}"#,
        token(i)
    )
}

fn notify_json(user: &str, event: &str) -> String {
    format!(r#"{{"Username":"{user}","Mailbox":"INBOX","Events": ["{event}"]}}"#)
}

/// Registers devices `range` (device i for user `u<i>` unless `user` is
/// given) over `conns` parallel connections; every one must get 200.
/// One new-mail notify for each of users `u0..u{n-1}` on one keep-alive
/// connection; every one must be answered 200 (`why` says what that shows).
fn notify_each(daemon: &Daemon, n: usize, why: &str) {
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    for i in 0..n {
        let r = plugin
            .post("/notify", &notify_json(&format!("u{i}"), "MessageNew"))
            .unwrap();
        assert_eq!(r.status, 200, "{why}");
    }
}

fn register_range(
    daemon: &Daemon,
    range: std::ops::Range<usize>,
    user: Option<&str>,
    conns: usize,
) {
    let addr = daemon.addr();
    let items: Vec<usize> = range.collect();
    std::thread::scope(|s| {
        for c in 0..conns {
            let mine: Vec<usize> = items.iter().copied().skip(c).step_by(conns).collect();
            s.spawn(move || {
                let mut plugin = PluginClient::connect(addr).unwrap();
                for i in mine {
                    let who = user.map(str::to_owned).unwrap_or(format!("u{i}"));
                    let r = plugin.post("/register", &register_json(i, &who)).unwrap();
                    assert_eq!(r.status, 200, "register {i}: {}", r.body_str());
                }
            });
        }
    });
}

/// Tokens with at least one 200 from the mock.
fn delivered(requests: &[Request]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in requests {
        if r.answer.as_ref().is_some_and(|a| a.status == 200) {
            *out.entry(r.device_token().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
    }
    out
}

/// A sample of `GET /metrics` whose line starts with `name`; `None` if the
/// daemon could not be asked (e.g. no connection slot free).
fn try_metric(daemon: &Daemon, name: &str) -> Option<u64> {
    let mut plugin = PluginClient::connect(daemon.addr()).ok()?;
    let r = plugin
        .raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let text = r.body_str();
    let value = text
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok());
    Some(value.unwrap_or_else(|| panic!("no {name} in\n{text}")))
}

fn metric(daemon: &Daemon, name: &str) -> u64 {
    try_metric(daemon, name).unwrap_or_else(|| panic!("cannot read /metrics"))
}

fn daemon_alive(daemon: &Daemon) -> bool {
    let Ok(mut plugin) = PluginClient::connect(daemon.addr()) else {
        return false;
    };
    plugin
        .raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .is_ok()
}

#[test]
fn kill_9_in_a_burst_of_10000_registrations_keeps_every_one_that_got_200() {
    let apple = Apple::new();
    let mut daemon = apple.daemon(1);
    let addr = daemon.addr();
    let total = 10_000;
    let conns = 16;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let (acked, count) = (Arc::clone(&acked), Arc::clone(&count));
            std::thread::spawn(move || {
                let mut plugin = PluginClient::connect(addr).unwrap();
                for i in (c..total).step_by(conns) {
                    match plugin.post("/register", &register_json(i, &format!("u{}", i % 997))) {
                        Ok(r) if r.status == 200 => {
                            acked.lock().unwrap().push(token(i));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => panic!("register {i} answered {}", r.status),
                        Err(_) => return, // the daemon is gone
                    }
                }
            })
        })
        .collect();
    // Kill it a third of the way in, with all 16 connections mid-request.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::SeqCst) < total / 3 {
        assert!(Instant::now() < deadline, "registrations too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.kill9();
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= total / 3 && acked.len() < total,
        "{}",
        acked.len()
    );

    daemon.restart();
    let line = daemon.wait_log("store open:", TIMEOUT);
    let reported: usize = line
        .split("store open: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the count in {line:?}"));
    assert!(
        !daemon.log_lines().iter().any(|l| l.contains("ERROR")),
        "errors after the crash:\n{}",
        daemon.log_text()
    );
    daemon.terminate();
    daemon.wait_exit(TIMEOUT);

    let store = xapsd::store::Store::open(
        &daemon.db_path(),
        xapsd::store::StoreLimits::one_shot(64, 16),
    )
    .unwrap();
    let stored: HashSet<String> = store
        .all_devices()
        .unwrap()
        .into_iter()
        .map(|d| d.token)
        .collect();
    store.close();
    let lost: Vec<&String> = acked.iter().filter(|t| !stored.contains(*t)).collect();
    eprintln!(
        "kill -9 burst: {} answered 200, {} stored ({reported} reported at start), {} lost",
        acked.len(),
        stored.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged registrations lost",
        lost.len()
    );
    assert_eq!(reported, stored.len());
}

#[test]
fn pushes_accepted_while_apns_is_down_all_arrive_when_it_is_back() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let devices = 50;
    register_range(&daemon, 0..devices, None, 4);

    apple.mock.set_down(true);
    let mark = daemon.log_mark();
    notify_each(&daemon, devices, "notify answered while APNs is down");
    // Down for a while: two failed connection attempts, a backoff apart.
    daemon.wait_log_since(mark, "cannot connect to APNs", TIMEOUT);
    let second = daemon.log_mark();
    daemon.wait_log_since(second, "cannot connect to APNs", TIMEOUT);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin
        .raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        r.status,
        503,
        "health says APNs is failing: {}",
        r.body_str()
    );
    assert!(r.body_str().contains("apns: FAILING"));

    apple.mock.set_down(false);
    let got = apple
        .mock
        .wait_until(Duration::from_secs(40), "every push", |st| {
            let d = delivered(st.requests);
            (d.len() == devices).then_some(d)
        });
    assert!((0..devices).all(|i| got.contains_key(&token(i))));
    assert!(got.values().all(|n| *n == 1), "one push each: {got:?}");
    assert!(daemon_alive(&daemon));
    assert_eq!(metric(&daemon, "xapsd_pushes_total{result=\"dropped\"}"), 0);
}

#[test]
fn goaway_mid_flight_resends_unprocessed_streams_and_only_those() {
    let apple = Apple::new();
    let daemon = apple.daemon(1);
    let devices = 40;
    register_range(&daemon, 0..devices, Some("many"), 1);

    // Answers take a while, so all 40 streams are open when the GOAWAY
    // (last processed: the 10th) goes out.
    apple.mock.set_delay(Duration::from_millis(300));
    apple.mock.goaway_after(10);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin
        .post("/notify", &notify_json("many", "MessageNew"))
        .unwrap();
    assert_eq!(r.status, 200);

    let got = apple.mock.wait_until(TIMEOUT, "every push", |st| {
        let d = delivered(st.requests);
        (d.len() == devices).then_some(d)
    });
    let requests = apple.mock.requests();
    let connections = apple.mock.connections();
    let first = &connections[0];
    eprintln!(
        "GOAWAY: connection 1 processed {} and refused {}; {} connection(s); {} requests",
        first.requests,
        first.refused,
        connections.len(),
        requests.len()
    );
    assert_eq!(first.requests, 10, "{connections:?}");
    // Streams beyond the 10th were refused by the mock (`first.refused`) or,
    // sent after the client saw the GOAWAY, failed on its side; either way
    // they were not processed and must come again on a new connection.
    assert!(connections.len() >= 2);
    // Processed once, answered once: nothing was sent twice.
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert_eq!(requests.len(), devices, "{requests:?}");
    let on_first: HashSet<&str> = requests
        .iter()
        .filter(|r| r.connection == first.id)
        .filter_map(Request::device_token)
        .collect();
    assert!(requests
        .iter()
        .filter(|r| r.connection != first.id)
        .all(|r| !on_first.contains(r.device_token().unwrap())));
}

#[test]
fn a_stalled_apns_times_out_reconnects_and_the_queue_keeps_its_bound() {
    let apple = Apple::new();
    // The smallest budget: a push queue of a few hundred, few streams.
    let daemon = Daemon::start(
        apple
            .config(1)
            .num("memory_budget_kib", 4096)
            .env("XAPSD_TEST_TIMEOUTS", "apns_request_timeout=1000"),
    );
    let bounds = {
        let l = xapsd::limits::Limits::from_budget(4096).unwrap();
        (l.push_queue_len, l.max_apns_streams)
    };
    let devices = bounds.0 + bounds.1 + 100;
    register_range(&daemon, 0..devices, None, 8);

    apple.mock.set_stall(true);
    let mark = daemon.log_mark();
    notify_each(&daemon, devices, "notify answered while APNs stalls");
    daemon.wait_log_since(mark, "push queue full", TIMEOUT);
    daemon.wait_log_since(mark, "no answer within 1s", TIMEOUT);
    // A new connection after the timeout, stalled as well.
    apple.mock.wait_for_connections(2, TIMEOUT);
    let depth = metric(&daemon, "xapsd_push_queue_depth");
    assert!(
        depth as usize <= bounds.0,
        "queue depth {depth} over {}",
        bounds.0
    );

    apple.mock.set_stall(false);
    // Every push is either delivered or counted as dropped. (A push stalled
    // until the very end may be answered late on its old connection, so
    // the daemon's counter, not the mock's record, says what was delivered.)
    let deadline = Instant::now() + Duration::from_secs(40);
    let (sent, dropped) = loop {
        let sent = metric(&daemon, "xapsd_pushes_total{result=\"delivered\"}") as usize;
        let dropped = metric(&daemon, "xapsd_pushes_total{result=\"dropped\"}") as usize;
        if sent + dropped >= devices {
            break (sent, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "{sent} delivered + {dropped} dropped of {devices}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let reached: HashSet<String> = apple
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.device_token().map(str::to_owned))
        .collect();
    eprintln!(
        "APNs stall: {devices} notifies, queue bound {}, {sent} delivered, {dropped} dropped, {} connections",
        bounds.0,
        apple.mock.connections_accepted()
    );
    assert_eq!(sent + dropped, devices, "no push delivered twice");
    assert!(dropped > 0 && dropped <= devices - bounds.0);
    assert!(reached.len() >= sent);
    assert!(daemon_alive(&daemon));
}

#[test]
fn a_store_that_cannot_grow_answers_503_keeps_notifying_and_recovers_when_it_can() {
    let apple = Apple::new();
    let mut daemon = apple.daemon(1);
    register_range(&daemon, 0..20, None, 1);

    // RLIMIT_FSIZE at the store's current size: redb can rewrite its pages
    // but cannot grow the file, as on a full disk (no tmpfs mount needed).
    let size = std::fs::metadata(daemon.db_path()).unwrap().len();
    let pid = daemon.pid().unwrap().to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--fsize={size}:")])
        .status()
        .expect("run prlimit(1)");
    assert!(status.success());

    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let mut refused = None;
    for i in 20..20_000 {
        let r = plugin
            .post("/register", &register_json(i, &format!("u{i}")))
            .unwrap();
        if r.status != 200 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("the store never ran out of room");
    eprintln!(
        "store full after {} more registrations: {} {}",
        i - 20,
        r.status,
        r.body_str().trim()
    );
    assert_eq!(r.status, 503);
    assert!(r.body_str().contains("store"), "a reason: {}", r.body_str());
    daemon.wait_log("store writes failing", TIMEOUT);

    // Registered devices still get their pushes.
    for i in [0, 7, 19] {
        let r = plugin
            .post("/notify", &notify_json(&format!("u{i}"), "MessageNew"))
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let got = apple.mock.wait_until(TIMEOUT, "three pushes", |st| {
        let d = delivered(st.requests);
        [0, 7, 19]
            .iter()
            .all(|i| d.contains_key(&token(*i)))
            .then_some(d)
    });
    assert_eq!(got.len(), 3);
    assert!(daemon_alive(&daemon));

    // The writer reopens the file while it still cannot grow: whatever a
    // repaired file still has room for is taken, then writes fail again,
    // in the same episode. Notifies are answered meanwhile.
    daemon.wait_log("store: closing the failed handle", TIMEOUT);
    let r = plugin
        .post("/notify", &notify_json("u5", "MessageNew"))
        .unwrap();
    assert_eq!(r.status, 200, "notify during the reopen: {}", r.body_str());
    let mut taken_after_reopen = 0;
    loop {
        let i = 40_000 + taken_after_reopen;
        let r = plugin
            .post("/register", &register_json(i, &format!("u{i}")))
            .unwrap();
        if r.status != 200 {
            assert_eq!(r.status, 503, "{}", r.body_str());
            break;
        }
        taken_after_reopen += 1;
        assert!(taken_after_reopen < 20_000, "the limit is gone");
    }

    // The admin frees space: the same daemon takes registrations again
    // once its writer has reopened the file, and notifies for every stored
    // device (cached or not) are answered all along.
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:"])
        .status()
        .expect("run prlimit(1)");
    assert!(status.success());
    let back = 30_000;
    let deadline = Instant::now() + TIMEOUT;
    let mut refusals = 0;
    for round in 0.. {
        let user = format!("u{}", round % 20);
        let r = plugin
            .post("/notify", &notify_json(&user, "MessageNew"))
            .unwrap();
        assert_eq!(r.status, 200, "notify {user}: {}", r.body_str());
        let r = plugin
            .post("/register", &register_json(back, "back"))
            .unwrap();
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body_str());
        refusals += 1;
        assert!(
            Instant::now() < deadline,
            "registrations never came back; log:\n{}",
            daemon.log_text()
        );
        // Polling the writer's reopen: there is no event to wait on from here.
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.wait_log("store writes work again", TIMEOUT);
    let episodes = daemon
        .log_lines()
        .iter()
        .filter(|l| l.contains("store writes failing"))
        .count();
    eprintln!(
        "{taken_after_reopen} taken by the file reopened under the limit; \
         registrations back after {refusals} more 503s; {episodes} warning(s)"
    );
    assert_eq!(episodes, 1, "one warning per episode");
    // The new device and devices never notified before (not cached) are
    // read from the reopened file.
    for user in ["back", "u3", "u11"] {
        let r = plugin
            .post("/notify", &notify_json(user, "MessageNew"))
            .unwrap();
        assert_eq!(r.status, 200);
    }
    apple
        .mock
        .wait_until(TIMEOUT, "pushes after the reopen", |st| {
            let d = delivered(st.requests);
            [back, 3, 11]
                .iter()
                .all(|i| d.contains_key(&token(*i)))
                .then_some(())
        });
    let r = plugin
        .post("/register", &register_json(back + 1, "back"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    drop(plugin);

    // Durable: a crash right after, and every 200 is still there.
    daemon.restart();
    let line = daemon.wait_log("store open:", TIMEOUT);
    let stored = 20 + (i - 20) + taken_after_reopen + 2;
    assert!(
        line.contains(&format!("store open: {stored} device(s)")),
        "{line}"
    );
    let before = delivered(&apple.mock.requests()).get(&token(back)).copied();
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();
    let r = plugin
        .post("/notify", &notify_json("back", "MessageNew"))
        .unwrap();
    assert_eq!(r.status, 200);
    apple
        .mock
        .wait_until(TIMEOUT, "pushes after the restart", |st| {
            let d = delivered(st.requests);
            (d.get(&token(back)) > before.as_ref() && d.contains_key(&token(back + 1)))
                .then_some(())
        });
}

#[test]
fn wall_clock_jumps_neither_rush_held_pushes_nor_expire_registrations() {
    let apple = Apple::new();
    let clock = support::tempdir::TempDir::new("clock");
    let offset = clock.join("offset");
    std::fs::write(&offset, "0").unwrap();
    let delay = Duration::from_secs(2);
    let daemon = Daemon::start(
        apple
            .config(delay.as_secs())
            .num("expire_days", 1)
            .env("XAPSD_TEST_CLOCK_OFFSET_FILE", offset.to_str().unwrap())
            .env("XAPSD_TEST_TIMEOUTS", "expiry_sweep_interval=200"),
    );
    register_range(&daemon, 0..2, None, 1);
    let mut plugin = PluginClient::connect(daemon.addr()).unwrap();

    for (step, jump) in [("forward", 10 * 86_400i64), ("back", -20 * 86_400)] {
        let before = apple.mock.request_count();
        // A held (folded) event, then the jump while it waits.
        let sent = Instant::now();
        let r = plugin
            .post("/notify", &notify_json("u0", "FlagsSet"))
            .unwrap();
        assert_eq!(r.status, 200);
        let mark = daemon.log_mark();
        let current: i64 = std::fs::read_to_string(&offset).unwrap().parse().unwrap();
        std::fs::write(&offset, (current + jump).to_string()).unwrap();
        daemon.wait_log_since(mark, &format!("wall clock jumped {step}"), TIMEOUT);
        // Two more sweeps after the jump.
        let swept = daemon.log_mark();
        daemon.wait_log_since(swept, "expiry sweep", TIMEOUT);
        let swept = daemon.log_mark();
        daemon.wait_log_since(swept, "expiry sweep", TIMEOUT);

        let push = apple.mock.wait_for_requests(before + 1, TIMEOUT)[before].clone();
        let waited = push.received_at.duration_since(sent);
        eprintln!("clock jumped {step} by {jump} s: held push sent after {waited:?}");
        assert!(waited >= delay - Duration::from_millis(100), "{waited:?}");
        assert_eq!(push.device_token(), Some(token(0).as_str()));
        // Both devices are still registered, though "10 days" passed.
        for user in ["u0", "u1"] {
            let r = plugin
                .post("/notify", &notify_json(user, "MessageNew"))
                .unwrap();
            assert_eq!(r.status, 200, "{user} after the jump {step}");
        }
        apple.mock.wait_for_requests(before + 3, TIMEOUT);
    }
    assert!(!daemon.log_contains("expired"), "{}", daemon.log_text());
}

#[test]
fn a_slowloris_peer_is_cut_after_the_request_timeout_but_idle_keepalive_is_not() {
    let apple = Apple::new();
    let idle = Duration::from_millis(3000);
    let request = Duration::from_millis(1500);
    let daemon = Daemon::start(apple.config(1).env(
        "XAPSD_TEST_TIMEOUTS",
        &format!(
            "plugin_idle_timeout={},plugin_request_timeout={}",
            idle.as_millis(),
            request.as_millis()
        ),
    ));
    register_range(&daemon, 0..1, None, 1);
    let addr = daemon.addr();

    // Slowloris: part of a head, then one byte every 300 ms.
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = Instant::now();
        s.write_all(b"POST /notify HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut answer = Vec::new();
        for _ in 0..100 {
            if s.write_all(b"X").is_err() {
                break;
            }
            let mut chunk = [0u8; 512];
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    });

    // Keep-alive within the idle timeout: served again after 2 s of quiet.
    let mut keep = PluginClient::connect(addr).unwrap();
    let r = keep
        .post("/notify", &notify_json("u0", "MessageNew"))
        .unwrap();
    assert_eq!(r.status, 200);
    // Not a synchronisation: the quiet within the idle timeout is the test.
    std::thread::sleep(idle - Duration::from_millis(1000));
    let r = keep
        .post("/notify", &notify_json("u0", "MessageNew"))
        .unwrap();
    assert_eq!(r.status, 200, "kept while within the idle timeout");

    let (took, answer) = slow.join().unwrap();
    eprintln!("slowloris cut after {took:?}: {:?}", answer.lines().next());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        took >= request && took < request + Duration::from_secs(3),
        "{took:?}"
    );

    // Past the idle timeout the daemon closes the quiet connection.
    let started = Instant::now();
    keep.set_read_timeout(idle + Duration::from_secs(5))
        .unwrap();
    assert!(keep.wait_closed().unwrap(), "idle connection closed");
    assert!(started.elapsed() + Duration::from_millis(200) >= idle);
}

#[test]
fn connections_beyond_the_budget_are_closed_at_once_and_counted() {
    let apple = Apple::new();
    let daemon = Daemon::start(apple.config(1).num("memory_budget_kib", 4096));
    let max = xapsd::limits::Limits::from_budget(4096)
        .unwrap()
        .max_plugin_connections;
    let addr = daemon.addr();
    let mut held: Vec<TcpStream> = (0..max)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Proof that all of them count: the daemon is still serving one of them.
    let mut extra = TcpStream::connect(addr).unwrap();
    extra.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(extra.read(&mut byte).unwrap_or(0), 0, "closed at once");
    daemon.wait_log(&format!("closed: {max} already open"), TIMEOUT);

    // Free a slot; the counter shows the refusal.
    drop(held.pop());
    let deadline = Instant::now() + TIMEOUT;
    let refused = loop {
        if let Some(n) = try_metric(&daemon, "xapsd_plugin_connections_refused_total") {
            break n;
        }
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(refused >= 1, "{refused}");
    drop(held);
}

#[test]
fn check_config_prints_the_derived_bounds_and_a_too_small_budget_stops_the_start() {
    let binary = env!("CARGO_BIN_EXE_xapsd");
    let dir = support::tempdir::TempDir::new("budget");
    let db = dir.join("x.redb");
    let out = std::process::Command::new(binary)
        .args(["check-config", "--memory-budget-kib", "16384", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let l = xapsd::limits::Limits::from_budget(16384).unwrap();
    for line in [
        "memory_budget_kib: 16384".to_string(),
        format!("plugin connections: {}", l.max_plugin_connections),
        format!("push queue: {}", l.push_queue_len),
        format!("store cache: {} KiB", l.store_cache_bytes / 1024),
        format!("APNs streams in flight: {}", l.max_apns_streams),
    ] {
        assert!(text.contains(&line), "{line:?} missing from\n{text}");
    }
    assert!(l.max_plugin_connections > xapsd::limits::Limits::default().max_plugin_connections);

    let mut daemon =
        Daemon::spawn(support::daemon::DaemonConfig::new().num("memory_budget_kib", 2048));
    let status = daemon.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(78));
    assert!(daemon.log_text().contains(
        "config key `memory_budget_kib`: 2048 KiB is too small to run in: xapsd needs at least 4096 KiB"
    ), "{}", daemon.log_text());
}
