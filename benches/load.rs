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
//!
//! `benches/callgrind.sh` runs the same scenarios with the daemon under
//! valgrind's callgrind: with `XAPSD_BENCH_CALLGRIND` set, the harness asks
//! callgrind (`callgrind_control`) to zero its counters before the
//! registrations and to dump them after the registrations and after the
//! notifies, and reports instructions per registration and per notify.

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

/// No scenario may run longer than this; a watchdog kills the daemon and
/// the harness past it.
const SCENARIO_LIMIT: Duration = Duration::from_secs(300);

/// Under callgrind everything is ~50x slower.
const PROFILED_SCENARIO_LIMIT: Duration = Duration::from_secs(1800);

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
    /// user and system CPU of the notify phase, from /proc/PID/stat (ticks).
    cpu_user_ms: Option<f64>,
    cpu_sys_ms: Option<f64>,
    peak_rss_kib: u64,
    /// APNs connections accepted by the mock over the run, and open at its end.
    apns_connections: usize,
    apns_open_connections: usize,
    apns_peak_streams: usize,
    registers: usize,
    registers_per_sec: Option<f64>,
    register_p50_ms: Option<f64>,
    register_p99_ms: Option<f64>,
    /// Only under callgrind: instructions per registration and per notify.
    instructions_per_register: Option<f64>,
    instructions_per_notify: Option<f64>,
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

/// The daemon's user and system CPU so far in milliseconds, from
/// /proc/PID/stat (clock ticks: 10 ms resolution where USER_HZ is 100).
fn cpu_user_sys_ms(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the line, 12 and 13 after the name.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let field = |i: usize| -> f64 {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux this runs on.
    (field(11) * 10.0, field(12) * 10.0)
}

/// A KiB figure of `/proc/PID/status` (`VmHWM:`, `VmRSS:`), 0 if unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i])
}

/// Talks to callgrind when the daemon runs under it (`XAPSD_BENCH_CALLGRIND`
/// names the directory its output files go to, see benches/callgrind.sh).
struct Profiler {
    dir: Option<std::path::PathBuf>,
}

impl Profiler {
    fn from_env() -> Profiler {
        Profiler {
            dir: std::env::var_os("XAPSD_BENCH_CALLGRIND").map(Into::into),
        }
    }

    fn active(&self) -> bool {
        self.dir.is_some()
    }

    fn control(&self, pid: u32, args: &[&str]) {
        if !self.active() {
            return;
        }
        let status = std::process::Command::new("callgrind_control")
            .args(args)
            .arg(pid.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run callgrind_control");
        assert!(status.success(), "callgrind_control {args:?} failed");
    }

    /// Starts counting from zero (after the daemon's start-up).
    fn zero(&self, pid: u32) {
        self.control(pid, &["--zero"]);
    }

    /// Dumps the counts since the last zero/dump; returns the instructions.
    fn dump(&self, pid: u32, label: &str) -> Option<f64> {
        let dir = self.dir.as_ref()?;
        let before = dump_files(dir, pid).len();
        self.control(pid, &[&format!("--dump={label}")]);
        // callgrind_control returns once the dump is written.
        let files = dump_files(dir, pid);
        assert!(files.len() > before, "no new callgrind dump in {dir:?}");
        let last = files.last()?;
        let text = std::fs::read_to_string(last).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .and_then(|n| n.trim().parse().ok())
    }
}

/// `callgrind.out.PID.N` files in `dir`, in dump order.
fn dump_files(dir: &std::path::Path, pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("callgrind.out.{pid}.");
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_prefix(&prefix)?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Kills the daemon and ends the harness if a scenario overruns.
struct Watchdog {
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    fn start(name: &'static str, pid: u32, limit: Duration) -> Watchdog {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&done);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("scenario {name} ran over {limit:?}: killing the daemon and stopping");
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            std::process::exit(2);
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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
    profiler: Profiler,
    _watchdog: Watchdog,
}

impl Drop for Rig {
    /// A graceful stop, so a profiler wrapped around the daemon (XAPSD_BIN)
    /// gets to write its output.
    fn drop(&mut self) {
        self.daemon.terminate();
        self.daemon.wait_exit(Duration::from_secs(120));
    }
}

/// `memory_budget_kib` of (a) and (b): at the default (8 MiB) the push
/// queue holds 884 pushes, and a burst of 2,000 notifies against a 20 ms
/// APNs would drop the oldest of them (as it should) and never deliver the
/// 2,000 pushes the scenario waits for. 16 MiB queues 2,457.
const BURST_BUDGET_KIB: u64 = 16 * 1024;

fn rig(name: &'static str, latency: Duration) -> Rig {
    rig_with_budget(name, latency, xapsd::limits::DEFAULT_BUDGET_KIB)
}

fn rig_with_budget(name: &'static str, latency: Duration, budget_kib: u64) -> Rig {
    let ca = TestCa::new();
    let mock = MockApns::start(&ca);
    mock.set_delay(latency);
    let push = ca.write(&ca.push_cert(TEST_TOPIC), "push");
    let daemon = Daemon::start(
        DaemonConfig::new()
            .apns(&mock, &push)
            .str("log_level", "info")
            .num("delay_secs", 1)
            .num("memory_budget_kib", budget_kib),
    );
    let pid = daemon.pid().expect("daemon pid");
    let profiler = Profiler::from_env();
    let limit = if profiler.active() {
        PROFILED_SCENARIO_LIMIT
    } else {
        SCENARIO_LIMIT
    };
    Rig {
        _ca: ca,
        mock,
        daemon,
        pid,
        profiler,
        _watchdog: Watchdog::start(name, pid, limit),
    }
}

impl Rig {
    /// Registers like [`register_all`] and files the figures in `r`.
    fn register(&self, r: &mut Report, users: usize, devices: usize, conns: usize) {
        self.profiler.zero(self.pid);
        let start = Instant::now();
        let reg = register_all(self.daemon.addr(), users, devices, conns);
        let took = start.elapsed();
        r.instructions_per_register = self
            .profiler
            .dump(self.pid, "registrations")
            .map(|n| n / reg.len() as f64);
        r.registers = reg.len();
        r.registers_per_sec = Some(reg.len() as f64 / took.as_secs_f64());
        r.register_p50_ms = percentile(&reg, 0.5);
        r.register_p99_ms = percentile(&reg, 0.99);
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
    cpu_before: (u64, (f64, f64)),
) {
    let pushes = rig.mock.requests();
    let cpu = cpu_ns(rig.pid) - cpu_before.0;
    let (user, sys) = cpu_user_sys_ms(rig.pid);
    r.cpu_user_ms = Some(user - cpu_before.1 .0);
    r.cpu_sys_ms = Some(sys - cpu_before.1 .1);
    r.instructions_per_notify = rig
        .profiler
        .dump(rig.pid, "notifies")
        .map(|n| n / lat.len() as f64);
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
    r.apns_open_connections = rig.mock.open_connections();
    r.apns_peak_streams = rig.mock.peak_in_flight();
}

/// CPU counters at the start of a notify phase, for [`finish`].
fn cpu_mark(pid: u32) -> (u64, (f64, f64)) {
    (cpu_ns(pid), cpu_user_sys_ms(pid))
}

/// (a)/(b): 2,000 new-mail notifies over 8 connections, 2,000 users x 1 device.
fn notifies_2000(name: &'static str, latency: Duration) -> Report {
    let rig = rig_with_budget(name, latency, BURST_BUDGET_KIB);
    let users = 2000;
    let mut r = Report {
        name,
        what: format!(
            "2,000 notifies / 8 conns, APNs answers in {} ms, budget {} MiB",
            latency.as_millis(),
            BURST_BUDGET_KIB / 1024
        ),
        ..Report::default()
    };
    rig.register(&mut r, users, 1, 8);
    let cpu = cpu_mark(rig.pid);
    let (lat, sent, took) = notify_load(
        rig.daemon.addr(),
        8,
        users / 8,
        Arc::new(|i| (i, "MessageNew")),
    );
    settle(&rig.mock, users, Duration::from_millis(200));
    finish(&mut r, &rig, &lat, &sent, took, cpu);
    r
}

/// Resident set now (VmRSS) in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// (c): 2,000 idle plugin connections + 100,000 registrations + sustained notifies.
fn idle_and_many(name: &'static str) -> Report {
    let rig = rig(name, Duration::ZERO);
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
    let mut r = Report {
        name,
        what: "2,000 idle conns + 100,000 devices + 20,000 notifies (4:1 new mail:flags)".into(),
        ..Report::default()
    };
    rig.register(&mut r, users, 2, 32);
    eprintln!(
        "(c) RSS after 100,000 registrations: {} KiB (peak {} KiB)",
        rss_kib(rig.pid),
        peak_rss_kib(rig.pid)
    );
    let cpu = cpu_mark(rig.pid);
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
    finish(&mut r, &rig, &lat, &sent, took, cpu);
    drop(idle);
    r
}

/// (d): a burst of 10,000 registrations over 16 connections.
fn register_burst(name: &'static str) -> Report {
    let rig = rig(name, Duration::ZERO);
    let mut r = Report {
        name,
        what: "10,000 registrations / 16 conns, durable commits".into(),
        ..Report::default()
    };
    rig.register(&mut r, 10_000, 1, 16);
    r.peak_rss_kib = peak_rss_kib(rig.pid);
    r
}

/// (e): 100,000 new-mail notifies, 5,000 users x 1 device, for steady state.
fn steady(name: &'static str) -> Report {
    let rig = rig(name, Duration::ZERO);
    let users = 5000;
    let mut r = Report {
        name,
        what: "100,000 notifies / 8 conns, 5,000 users x 1 device".into(),
        ..Report::default()
    };
    rig.register(&mut r, users, 1, 8);
    let cpu = cpu_mark(rig.pid);
    let (lat, sent, took) = notify_load(
        rig.daemon.addr(),
        8,
        12_500,
        Arc::new(move |i| (i % users, "MessageNew")),
    );
    // A burst for one device folds into the push already queued for it.
    settle(&rig.mock, 1, Duration::from_millis(500));
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

    println!("| scenario | notifies/s | notify p50 / p99 / max (µs) | notify→push p50 / p99 (ms) | pushes / per s | CPU µs per notify | peak RSS (KiB) | APNs conns (open at end) / peak streams | registrations/s | register p50 / p99 (ms) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &reports {
        println!(
            "| ({}) {} | {} | {} / {} / {} | {} / {} | {} / {} | {} | {} | {} ({}) / {} | {} | {} / {} |",
            r.name,
            r.what,
            cell(r.notify_per_sec, 0),
            cell(r.notify_p50_us, 0),
            cell(r.notify_p99_us, 0),
            cell(r.notify_max_us, 0),
            cell(r.push_p50_ms, 2),
            cell(r.push_p99_ms, 2),
            r.pushes,
            cell(r.pushes_per_sec, 0),
            cell(r.cpu_us_per_notify, 1),
            r.peak_rss_kib,
            r.apns_connections,
            r.apns_open_connections,
            r.apns_peak_streams,
            cell(r.registers_per_sec, 0),
            cell(r.register_p50_ms, 2),
            cell(r.register_p99_ms, 2),
        );
    }
    if reports
        .iter()
        .any(|r| r.instructions_per_register.is_some())
    {
        println!();
        println!("| scenario | instructions per registration | instructions per notify (incl. its pushes) |");
        println!("| --- | ---: | ---: |");
        for r in &reports {
            println!(
                "| ({}) | {} | {} |",
                r.name,
                cell(r.instructions_per_register, 0),
                cell(r.instructions_per_notify, 0)
            );
        }
    }

    let items: Vec<String> = reports
        .iter()
        .map(|r| {
            let fields = [
                ("notifies", r.notifies.to_string()),
                ("notifies_per_sec", json_num(r.notify_per_sec)),
                ("notify_p50_us", json_num(r.notify_p50_us)),
                ("notify_p99_us", json_num(r.notify_p99_us)),
                ("notify_max_us", json_num(r.notify_max_us)),
                ("push_p50_ms", json_num(r.push_p50_ms)),
                ("push_p99_ms", json_num(r.push_p99_ms)),
                ("pushes", r.pushes.to_string()),
                ("pushes_per_sec", json_num(r.pushes_per_sec)),
                ("cpu_us_per_notify", json_num(r.cpu_us_per_notify)),
                (
                    "cpu_s_per_1000_notifies",
                    json_num(r.cpu_us_per_notify.map(|us| us / 1000.0)),
                ),
                ("cpu_user_ms", json_num(r.cpu_user_ms)),
                ("cpu_sys_ms", json_num(r.cpu_sys_ms)),
                ("peak_rss_kib", r.peak_rss_kib.to_string()),
                ("apns_connections", r.apns_connections.to_string()),
                ("apns_open_connections", r.apns_open_connections.to_string()),
                ("apns_peak_streams", r.apns_peak_streams.to_string()),
                ("registers", r.registers.to_string()),
                ("registers_per_sec", json_num(r.registers_per_sec)),
                ("register_p50_ms", json_num(r.register_p50_ms)),
                ("register_p99_ms", json_num(r.register_p99_ms)),
                (
                    "instructions_per_register",
                    json_num(r.instructions_per_register),
                ),
                (
                    "instructions_per_notify",
                    json_num(r.instructions_per_notify),
                ),
            ];
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!(
                "  {{\"scenario\":\"{}\",\"what\":\"{}\",{}}}",
                r.name,
                r.what,
                body.join(",")
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
