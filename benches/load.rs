//! Load benchmark: the release daemon under Dovecot-like load.
//!
//! Starts the real `xapsd` binary (release profile) with a real redb file and
//! the mock APNs from `tests/support` (TLS 1.3 + HTTP/2, client certificate
//! required, configurable answer latency), then drives it the way Dovecot's
//! plugin does: keep-alive HTTP/1.1 connections, the plugin's exact headers,
//! one request at a time per connection. Every scenario is bounded in count
//! and time and talks only to loopback.
//!
//! Run: `cargo bench --bench load` (all scenarios) or
//! `cargo bench --bench load -- a b` (some). Results go to stdout as a
//! Markdown table and to `target/bench/load.json`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::certs::{TestCa, TEST_TOPIC};
use support::daemon::{Daemon, DaemonConfig};
use support::mock_apns::MockApns;
use support::plugin::plugin_request;

/// No scenario may run longer than this.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);

/// Figures of one scenario; absent fields print as "-".
#[derive(Default, Debug)]
struct Report {
    name: &'static str,
    what: String,
    notifies: usize,
    notify_per_sec: Option<f64>,
    notify_p50_us: Option<f64>,
    notify_p99_us: Option<f64>,
    notify_max_us: Option<f64>,
    push_p50_ms: Option<f64>,
    push_p99_ms: Option<f64>,
    pushes: usize,
    pushes_per_sec: Option<f64>,
    cpu_us_per_notify: Option<f64>,
    peak_rss_kib: u64,
    apns_connections: usize,
    apns_peak_streams: usize,
    registers_per_sec: Option<f64>,
    register_p50_ms: Option<f64>,
    register_p99_ms: Option<f64>,
}

/// The daemon's CPU time so far (all threads), from /proc, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// Peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i])
}

/// One plugin connection: sends a request, reads the whole response.
struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to daemon");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Conn {
            stream,
            addr,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Returns the status and the time to the full answer.
    fn post(&mut self, path: &str, json: &str) -> (u16, Duration) {
        let request = plugin_request(path, json, self.addr, None);
        let start = Instant::now();
        self.stream.write_all(&request).expect("send");
        self.buf.clear();
        let mut chunk = [0u8; 1024];
        loop {
            let n = self.stream.read(&mut chunk).expect("read answer");
            assert!(n > 0, "daemon closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap_or(0);
                    return (status, start.elapsed());
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn token(user: usize, device: usize) -> String {
    format!("{:032x}{:032x}", user, device)
}

fn register_body(user: usize, device: usize) -> String {
    format!(
        r#"{{"ApsAccountId":"ACCT-{user}-{device}","ApsDeviceToken":"{}","ApsSubtopic":"com.apple.mobilemail","Username":"user{user}","Mailboxes": ["INBOX","Sent Messages"]}}"#,
        token(user, device)
    )
}

fn notify_body(user: usize, event: &str) -> String {
    format!(r#"{{"Username":"user{user}","Mailbox":"INBOX","Events": ["{event}"]}}"#)
}

struct Rig {
    _ca: TestCa,
    mock: MockApns,
    daemon: Daemon,
    pid: u32,
}

impl Drop for Rig {
    /// A graceful stop, so a profiler wrapped around the daemon (XAPSD_BIN)
    /// gets to write its output.
    fn drop(&mut self) {
        self.daemon.terminate();
        self.daemon.wait_exit(Duration::from_secs(120));
    }
}

fn rig(latency: Duration) -> Rig {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    mock.set_delay(latency);
    let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .str("log_level", "info")
            .num("delay_secs", 1),
    );
    let pid = daemon.pid().expect("daemon pid");
    Rig {
        _ca: ca,
        mock,
        daemon,
        pid,
    }
}

/// Registers `users` x `devices` over `conns` connections; returns latencies (ms).
fn register_all(addr: SocketAddr, users: usize, devices: usize, conns: usize) -> Vec<f64> {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(users * devices)));
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let latencies = Arc::clone(&latencies);
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut mine = Vec::new();
                for i in (c..users * devices).step_by(conns) {
                    let (status, took) =
                        conn.post("/register", &register_body(i / devices, i % devices));
                    assert_eq!(status, 200, "register");
                    mine.push(took.as_secs_f64() * 1e3);
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("register thread");
    }
    let mut v = Arc::try_unwrap(latencies).unwrap().into_inner().unwrap();
    v.sort_by(f64::total_cmp);
    v
}

/// Sends `per_conn` notifies on each of `conns` connections. `event_of(i)`
/// picks user and event for the i-th notify overall. Returns notify
/// latencies (µs) and the send instant of each MessageNew per user.
fn notify_load(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    event_of: Arc<dyn Fn(usize) -> (usize, &'static str) + Send + Sync>,
) -> (Vec<f64>, Vec<(usize, Instant)>, Duration) {
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let event_of = Arc::clone(&event_of);
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut lat = Vec::with_capacity(per_conn);
                let mut sent = Vec::new();
                for k in 0..per_conn {
                    let (user, event) = event_of(k * conns + c);
                    let at = Instant::now();
                    let (status, took) = conn.post("/notify", &notify_body(user, event));
                    assert_eq!(status, 200, "notify");
                    lat.push(took.as_secs_f64() * 1e6);
                    if event == "MessageNew" {
                        sent.push((user, at));
                    }
                }
                (lat, sent)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut sent = Vec::new();
    for t in threads {
        let (l, s) = t.join().expect("notify thread");
        lat.extend(l);
        sent.extend(s);
    }
    let took = start.elapsed();
    lat.sort_by(f64::total_cmp);
    (lat, sent, took)
}

/// Waits until the mock has seen at least `floor` pushes, none is in flight,
/// and no new one arrived for `quiet` (held pushes fire after delay_secs).
/// A benchmark settle, not a test synchronisation: it only bounds the run.
fn settle(mock: &MockApns, floor: usize, quiet: Duration) {
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let mut last = (usize::MAX, Instant::now());
    while Instant::now() < deadline {
        let count = mock.request_count();
        if count != last.0 {
            last = (count, Instant::now());
        } else if count >= floor && mock.in_flight() == 0 && last.1.elapsed() >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("pushes did not settle within {SCENARIO_LIMIT:?}");
}

/// Fills latency, CPU and APNs figures after a notify phase.
fn finish(
    r: &mut Report,
    rig: &Rig,
    lat: &[f64],
    sent: &[(usize, Instant)],
    took: Duration,
    cpu_before: u64,
) {
    let pushes = rig.mock.requests();
    let cpu = cpu_ns(rig.pid) - cpu_before;
    r.notifies = lat.len();
    r.notify_per_sec = Some(lat.len() as f64 / took.as_secs_f64());
    r.notify_p50_us = percentile(lat, 0.50);
    r.notify_p99_us = percentile(lat, 0.99);
    r.notify_max_us = lat.last().copied();
    r.pushes = pushes.len();
    if let (Some(first), Some(last)) = (pushes.first(), pushes.last()) {
        let span = last
            .received_at
            .duration_since(first.received_at)
            .as_secs_f64();
        r.pushes_per_sec = (span > 0.0).then(|| pushes.len() as f64 / span);
    }
    // notify -> push: for each push, the latest new-mail notify for its user before it.
    let mut by_user: HashMap<usize, Vec<Instant>> = HashMap::new();
    for (user, at) in sent {
        by_user.entry(*user).or_default().push(*at);
    }
    let mut push_lat: Vec<f64> = pushes
        .iter()
        .filter_map(|p| {
            let user = usize::from_str_radix(p.device_token()?.get(..32)?, 16).ok()?;
            let at = by_user
                .get(&user)?
                .iter()
                .filter(|t| **t <= p.received_at)
                .max()?;
            Some(p.received_at.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    push_lat.sort_by(f64::total_cmp);
    r.push_p50_ms = percentile(&push_lat, 0.50);
    r.push_p99_ms = percentile(&push_lat, 0.99);
    r.cpu_us_per_notify = Some(cpu as f64 / 1e3 / lat.len() as f64);
    r.peak_rss_kib = peak_rss_kib(rig.pid);
    r.apns_connections = rig.mock.connections_accepted();
    r.apns_peak_streams = rig.mock.peak_in_flight();
}

/// (a)/(b): 2,000 new-mail notifies over 8 connections, 2,000 users x 1 device.
fn notifies_2000(name: &'static str, latency: Duration) -> Report {
    let rig = rig(latency);
    let users = 2000;
    register_all(rig.daemon.addr(), users, 1, 8);
    let cpu = cpu_ns(rig.pid);
    let (lat, sent, took) = notify_load(
        rig.daemon.addr(),
        8,
        users / 8,
        Arc::new(|i| (i, "MessageNew")),
    );
    settle(&rig.mock, users, Duration::from_millis(200));
    let mut r = Report {
        name,
        what: format!(
            "2,000 notifies / 8 conns, APNs answers in {} ms",
            latency.as_millis()
        ),
        ..Report::default()
    };
    finish(&mut r, &rig, &lat, &sent, took, cpu);
    r
}

/// Resident set now (VmRSS) in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (c): 2,000 idle plugin connections + 100,000 registrations + sustained notifies.
fn idle_and_many(name: &'static str) -> Report {
    let rig = rig(Duration::ZERO);
    let addr = rig.daemon.addr();
    // RSS by phase, for the memory budget (memory_budget_kib, 8 MiB by default).
    eprintln!("(c) RSS idle: {} KiB", rss_kib(rig.pid));
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(addr).expect("idle conn"))
        .collect();
    // The daemon accepts asynchronously: wait until it holds them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(format!("/proc/{}/fd", rig.pid)).map_or(0, |d| d.count()) < 2000
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "(c) RSS with 2,000 idle connections: {} KiB",
        rss_kib(rig.pid)
    );
    let users = 50_000;
    let reg = register_all(addr, users, 2, 32);
    eprintln!(
        "(c) RSS after 100,000 registrations: {} KiB (peak {} KiB)",
        rss_kib(rig.pid),
        peak_rss_kib(rig.pid)
    );
    let cpu = cpu_ns(rig.pid);
    // Mostly new mail, one in five a flag change; users spread over the whole set.
    let (lat, sent, took) = notify_load(
        addr,
        8,
        2500,
        Arc::new(move |i| {
            (
                (i * 7919) % users,
                if i % 5 == 4 { "FlagsSet" } else { "MessageNew" },
            )
        }),
    );
    settle(&rig.mock, 1, Duration::from_millis(1500));
    let mut r = Report {
        name,
        what: "2,000 idle conns + 100,000 devices + 20,000 notifies (4:1 new mail:flags)".into(),
        register_p50_ms: percentile(&reg, 0.5),
        register_p99_ms: percentile(&reg, 0.99),
        ..Report::default()
    };
    finish(&mut r, &rig, &lat, &sent, took, cpu);
    drop(idle);
    r
}

/// (d): a burst of 10,000 registrations over 16 connections.
fn register_burst(name: &'static str) -> Report {
    let rig = rig(Duration::ZERO);
    let start = Instant::now();
    let reg = register_all(rig.daemon.addr(), 10_000, 1, 16);
    let took = start.elapsed();
    Report {
        name,
        what: "10,000 registrations / 16 conns, durable commits".into(),
        registers_per_sec: Some(reg.len() as f64 / took.as_secs_f64()),
        register_p50_ms: percentile(&reg, 0.5),
        register_p99_ms: percentile(&reg, 0.99),
        peak_rss_kib: peak_rss_kib(rig.pid),
        ..Report::default()
    }
}

/// (e): 100,000 new-mail notifies, 5,000 users x 1 device, for steady state.
fn steady(name: &'static str) -> Report {
    let rig = rig(Duration::ZERO);
    let users = 5000;
    register_all(rig.daemon.addr(), users, 1, 8);
    let cpu = cpu_ns(rig.pid);
    let (lat, sent, took) = notify_load(
        rig.daemon.addr(),
        8,
        12_500,
        Arc::new(move |i| (i % users, "MessageNew")),
    );
    // A burst for one device folds into the push already queued for it.
    settle(&rig.mock, 1, Duration::from_millis(500));
    let mut r = Report {
        name,
        what: "100,000 notifies / 8 conns, 5,000 users x 1 device".into(),
        ..Report::default()
    };
    finish(&mut r, &rig, &lat, &sent, took, cpu);
    r
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn json_num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}"))
        .unwrap_or_else(|| "null".into())
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    type Scenario = fn(&'static str) -> Report;
    let all: [(&str, Scenario); 5] = [
        ("a", |n| notifies_2000(n, Duration::ZERO)),
        ("b", |n| notifies_2000(n, Duration::from_millis(20))),
        ("c", idle_and_many),
        ("d", register_burst),
        ("e", steady),
    ];
    let mut reports = Vec::new();
    for (name, run) in all {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            eprintln!("scenario {name} ...");
            reports.push(run(name));
        }
    }

    println!("| scenario | notifies/s | notify p50 / p99 / max (µs) | notify→push p50 / p99 (ms) | pushes/s | CPU µs per notify | peak RSS (KiB) | APNs conns / peak streams | register p50 / p99 (ms) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &reports {
        println!(
            "| ({}) {} | {} | {} / {} / {} | {} / {} | {} | {} | {} | {} / {} | {} / {} |",
            r.name,
            r.what,
            cell(r.notify_per_sec.or(r.registers_per_sec), 0),
            cell(r.notify_p50_us, 0),
            cell(r.notify_p99_us, 0),
            cell(r.notify_max_us, 0),
            cell(r.push_p50_ms, 2),
            cell(r.push_p99_ms, 2),
            cell(r.pushes_per_sec, 0),
            cell(r.cpu_us_per_notify, 1),
            r.peak_rss_kib,
            r.apns_connections,
            r.apns_peak_streams,
            cell(r.register_p50_ms, 2),
            cell(r.register_p99_ms, 2),
        );
    }

    let items: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "  {{\"scenario\":\"{}\",\"what\":\"{}\",\"notifies\":{},\"notifies_per_sec\":{},\"registers_per_sec\":{},\
\"notify_p50_us\":{},\"notify_p99_us\":{},\"notify_max_us\":{},\"push_p50_ms\":{},\"push_p99_ms\":{},\
\"pushes\":{},\"pushes_per_sec\":{},\"cpu_us_per_notify\":{},\"cpu_s_per_1000_notifies\":{},\"peak_rss_kib\":{},\
\"apns_connections\":{},\"apns_peak_streams\":{},\"register_p50_ms\":{},\"register_p99_ms\":{}}}",
                r.name,
                r.what,
                r.notifies,
                json_num(r.notify_per_sec),
                json_num(r.registers_per_sec),
                json_num(r.notify_p50_us),
                json_num(r.notify_p99_us),
                json_num(r.notify_max_us),
                json_num(r.push_p50_ms),
                json_num(r.push_p99_ms),
                r.pushes,
                json_num(r.pushes_per_sec),
                json_num(r.cpu_us_per_notify),
                json_num(r.cpu_us_per_notify.map(|us| us / 1000.0)),
                r.peak_rss_kib,
                r.apns_connections,
                r.apns_peak_streams,
                json_num(r.register_p50_ms),
                json_num(r.register_p99_ms),
            )
        })
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join("load.json"),
        format!("[\n{}\n]\n", items.join(",\n")),
    )
    .expect("write load.json");
    eprintln!("wrote {}", dir.join("load.json").display());
}
