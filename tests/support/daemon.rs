//! Runs the real `xapsd` binary as a child process for end-to-end tests.
//!
//! Integration tests must exercise what ships: the binary, its config file,
//! its database on disk, its signal handling. This module writes a JSON
//! config into a temp dir, starts `xapsd run --config <file>`, and turns the
//! daemon's stderr into the tests' synchronisation point: a reader thread
//! collects lines (and echoes them to the test's captured output) so a test
//! can wait, with a timeout, for a line such as `listening on 127.0.0.1:PORT`
//! instead of sleeping. Set `XAPSD_BIN` to test another build of the binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::certs::PemFiles;
use super::mock_apns::MockApns;
use super::tempdir::TempDir;

/// How long a daemon may take to start listening (debug build, busy CI box).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The config file's contents, as raw JSON values per key.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    values: BTreeMap<String, String>,
    /// Environment of the daemon process (the test hooks).
    env: Vec<(String, String)>,
}

impl DaemonConfig {
    /// `listen: ["127.0.0.1:0"]`, `log_level: "debug"`, `allow_root: true`; the db path is
    /// filled in by [`Daemon::spawn`] unless set.
    pub fn new() -> DaemonConfig {
        DaemonConfig {
            values: BTreeMap::new(),
            env: Vec::new(),
        }
        .raw("listen", r#"["127.0.0.1:0"]"#)
        .str("log_level", "debug")
        // CI runs as root and has no `xapsd` account; the tests of the
        // switch itself remove this.
        .raw("allow_root", "true")
    }

    /// Sets a key to a raw JSON value, e.g. `raw("listen", "[]")`.
    pub fn raw(mut self, key: &str, json: &str) -> DaemonConfig {
        self.values.insert(key.to_string(), json.to_string());
        self
    }

    /// Sets a key to a JSON string.
    pub fn str(self, key: &str, value: &str) -> DaemonConfig {
        let json = json_string(value);
        self.raw(key, &json)
    }

    /// Sets a key to a JSON number.
    pub fn num(self, key: &str, value: u64) -> DaemonConfig {
        self.raw(key, &value.to_string())
    }

    /// Sets a key to a JSON string holding a path.
    pub fn path(self, key: &str, path: &Path) -> DaemonConfig {
        let s = path.to_str().expect("test paths are UTF-8").to_string();
        self.str(key, &s)
    }

    /// Sets an environment variable of the daemon, e.g. a test hook such as
    /// `XAPSD_TEST_TIMEOUTS`.
    pub fn env(mut self, name: &str, value: &str) -> DaemonConfig {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Removes a key, to test the daemon's defaults or its refusal.
    pub fn without(mut self, key: &str) -> DaemonConfig {
        self.values.remove(key);
        self
    }

    /// Points the daemon at the mock with the given push certificate files.
    pub fn apns(self, mock: &MockApns, push_cert: &PemFiles) -> DaemonConfig {
        self.str("apns_endpoint", &mock.endpoint())
            .path("apns_ca_file", mock.ca_pem_path())
            .path("cert_file", &push_cert.cert)
            .path("key_file", &push_cert.key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The JSON object text.
    pub fn to_json(&self) -> String {
        let members: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("  {}: {}", json_string(k), v))
            .collect();
        format!("{{\n{}\n}}\n", members.join(",\n"))
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig::new()
    }
}

/// A running (or exited) `xapsd run`. Dropping it kills the process.
pub struct Daemon {
    /// Executable and leading arguments, before `run --config FILE`.
    program: Vec<String>,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    config: DaemonConfig,
    config_path: PathBuf,
    log: Arc<Log>,
    /// Index in the log where the current process's lines start.
    generation_start: usize,
    generation: u32,
    addrs: Vec<SocketAddr>,
    dir: TempDir,
}

impl Daemon {
    /// Spawns the daemon and waits until every listener is bound.
    /// Panics (with the daemon's log) if it exits or times out first.
    pub fn start(config: DaemonConfig) -> Daemon {
        let mut daemon = Daemon::spawn(config);
        daemon.wait_listening(START_TIMEOUT);
        daemon
    }

    /// Spawns the daemon without waiting for anything: for tests of refusal
    /// at startup (bad certificate, bad config).
    pub fn spawn(config: DaemonConfig) -> Daemon {
        let binary =
            std::env::var("XAPSD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_xapsd").to_string());
        Daemon::spawn_program(vec![binary], config)
    }

    /// Spawns `program[0] program[1..] run --config FILE` instead of the
    /// built binary: for testing these helpers with a stand-in script.
    pub fn spawn_program(program: Vec<String>, config: DaemonConfig) -> Daemon {
        assert!(!program.is_empty(), "program must name an executable");
        let dir = TempDir::new("daemon");
        let config = if config.get("db").is_some() {
            config
        } else {
            config.path("db", &dir.join("xapsd.redb"))
        };
        let mut daemon = Daemon {
            program,
            child: None,
            exit: None,
            config_path: dir.join("xapsd.json"),
            config,
            log: Arc::new(Log::default()),
            generation_start: 0,
            generation: 0,
            addrs: Vec::new(),
            dir,
        };
        daemon.launch();
        daemon
    }

    /// First listening address (the plugin's `url`).
    pub fn addr(&self) -> SocketAddr {
        *self
            .addrs
            .first()
            .expect("daemon address unknown: use Daemon::start or wait_listening")
    }

    /// Every `listening on` address of the current process, in log order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Path of the redb file.
    pub fn db_path(&self) -> PathBuf {
        let json = self.config.get("db").expect("db is always set");
        PathBuf::from(json.trim_matches('"'))
    }

    /// The daemon's temp dir (config, db): a place for the test's files too.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Waits for one `listening on ADDR` line per configured listener and
    /// records the addresses.
    pub fn wait_listening(&mut self, timeout: Duration) -> &[SocketAddr] {
        let expected = self.expected_listeners();
        let deadline = Instant::now() + timeout;
        let lines = self.log.wait(self.generation_start, deadline, |lines| {
            let found: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains("listening on "))
                .collect();
            (found.len() >= expected).then(|| found.into_iter().cloned().collect::<Vec<_>>())
        });
        let lines = lines.unwrap_or_else(|why| {
            panic!(
                "xapsd did not log `listening on` x{expected} within {timeout:?} ({why}); log:\n{}",
                self.log_text()
            )
        });
        self.addrs = lines.iter().filter_map(|l| parse_listen_addr(l)).collect();
        assert_eq!(
            self.addrs.len(),
            lines.len(),
            "cannot parse an address from {lines:?}"
        );
        &self.addrs
    }

    /// Waits for a line of the current process containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_since(self.generation_start, needle, timeout)
    }

    /// Like [`wait_log`](Self::wait_log) but only lines after `mark`
    /// (from [`log_mark`](Self::log_mark)): "a NEW line saying X".
    pub fn wait_log_since(&self, mark: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        self.log
            .wait(mark, deadline, |lines| {
                lines.iter().find(|l| l.contains(needle)).cloned()
            })
            .unwrap_or_else(|why| {
                panic!(
                    "xapsd did not log {needle:?} within {timeout:?} ({why}); log:\n{}",
                    self.log_text()
                )
            })
    }

    /// Position in the log; pass to [`wait_log_since`](Self::wait_log_since).
    pub fn log_mark(&self) -> usize {
        self.log.len()
    }

    /// Does any line of the current process contain `needle`?
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lines_since(self.generation_start)
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Lines of the current process.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines_since(self.generation_start)
    }

    /// Every line of every process this `Daemon` started, oldest first.
    pub fn log_text(&self) -> String {
        self.log.lines_since(0).join("\n")
    }

    /// SIGKILL and reap: a crash, nothing flushed.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let child = self.child.as_mut().expect("daemon never started");
        let _ = child.kill();
        let status = child.wait().expect("reap xapsd");
        self.exit = Some(status);
        status
    }

    /// Sends SIGTERM (the daemon should shut down cleanly); does not wait.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let child = self.child.as_mut().expect("daemon never started");
        let deadline = Instant::now() + timeout;
        // std has no wait-with-timeout; polling the status is cheap.
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on xapsd") {
                self.exit = Some(status);
                // Let the reader thread see EOF so the log is complete.
                let _ = self
                    .log
                    .wait(0, Instant::now() + Duration::from_secs(5), |_| None::<()>);
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "xapsd did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Has the process exited (without waiting)?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().expect("try_wait on xapsd");
            }
        }
        self.exit
    }

    /// Kills the process (if running) and starts it again with the same
    /// config and database; waits until it listens. Listeners on port 0 get
    /// new ports: use [`addr`](Self::addr) again.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
        self.wait_listening(START_TIMEOUT);
    }

    /// Like [`restart`](Self::restart) but listens on the same addresses as
    /// before, so clients can reconnect to the old address.
    pub fn restart_same_port(&mut self) {
        let listen: Vec<String> = self
            .addrs
            .iter()
            .map(|a| json_string(&a.to_string()))
            .collect();
        self.config = self
            .config
            .clone()
            .raw("listen", &format!("[{}]", listen.join(",")));
        self.restart();
    }

    fn expected_listeners(&self) -> usize {
        // Count the quoted entries of the listen array; good enough for our configs.
        self.config
            .get("listen")
            .map(|l| l.matches('"').count() / 2)
            .unwrap_or(1)
            .max(1)
    }

    fn launch(&mut self) {
        // Owner-only, as the daemon demands of a config holding a password.
        super::tempdir::write_private(&self.config_path, self.config.to_json());
        self.generation += 1;
        self.generation_start = self.log.len();
        self.exit = None;
        self.addrs.clear();
        let mut child = Command::new(&self.program[0])
            .args(&self.program[1..])
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "1")
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.program));
        let tag = format!("xapsd#{}", self.generation);
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        self.log.open_stream();
        spawn_reader(stderr, self.log.clone(), tag.clone());
        spawn_reader(stdout, self.log.clone(), format!("{tag} stdout"));
        self.child = Some(child);
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().expect("daemon never started");
        // std cannot send signals; the kill(1) utility avoids a libc dependency.
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {pid} failed: {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Extracts `ADDR` from a line containing `listening on ADDR`.
pub fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token
        .trim_matches(|c: char| !(c.is_ascii_alphanumeric() || "[]:.".contains(c)))
        .parse()
        .ok()
}

/// JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lines from the daemon's stdout and stderr, shared with reader threads.
#[derive(Default)]
struct Log {
    inner: Mutex<LogInner>,
    changed: Condvar,
}

#[derive(Default)]
struct LogInner {
    lines: Vec<String>,
    /// Reader threads still running; 0 = the process closed its output.
    open_streams: usize,
}

impl Log {
    fn open_stream(&self) {
        // Two streams per process: stdout and stderr.
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open_streams += 2;
    }

    fn push(&self, line: String) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .push(line);
        self.changed.notify_all();
    }

    fn close_stream(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open_streams -= 1;
        self.changed.notify_all();
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .len()
    }

    fn lines_since(&self, start: usize) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.lines[start.min(inner.lines.len())..].to_vec()
    }

    /// Waits until `check` on the lines from `start` returns `Some`. Errs on
    /// the deadline, or once all output closed (the process is gone) and
    /// `check` still fails.
    fn wait<T>(
        &self,
        start: usize,
        deadline: Instant,
        mut check: impl FnMut(&[String]) -> Option<T>,
    ) -> Result<T, &'static str> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let from = start.min(inner.lines.len());
            if let Some(v) = check(&inner.lines[from..]) {
                return Ok(v);
            }
            if inner.open_streams == 0 {
                return Err("the process closed its output");
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("timed out");
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn spawn_reader(stream: impl Read + Send + 'static, log: Arc<Log>, tag: String) {
    std::thread::Builder::new()
        .name(tag.clone())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        // Captured by the test harness: shown only when a test fails.
                        eprintln!("[{tag}] {line}");
                        log.push(line);
                    }
                }
            }
            log.close_stream();
        })
        .expect("spawn log reader");
}
