//! The real `triggers` binary as a child process: finding it, starting `serve` and
//! waiting for its banner, running commands, and what they leave on the machine.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a first start (initdb + extension creation) may take on a slow machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The `triggers` binary: `$TRIGGERS_BIN`, or `target/debug/triggers` of this workspace.
pub fn bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIGGERS_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/triggers");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p triggers-server` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A command for the binary with a clean environment for the settings it reads.
pub fn triggers(args: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TRIGGERS_LISTEN")
        .env_remove("TRIGGERS_DATA_DIR")
        .env_remove("TRIGGERS_PG_CONFIG")
        // One secrets key for every test's server, not a file in the working directory.
        .env(
            "TRIGGERS_SECRETS_KEY_FILE",
            std::env::temp_dir().join("triggers-tests.secrets-key"),
        )
        .stdin(Stdio::null());
    command
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh path under /tmp (reachable by the `postgres` user), removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory.
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "triggers-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Names of the entries in `dir`, sorted.
    pub fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `triggers serve`, killed on drop if the test did not stop it.
pub struct Server {
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// What the server printed on stdout before it was ready.
    pub banner: String,
    /// The banner line and the lines that followed it (see [`Server::start_with_lines`]).
    pub banner_lines: Vec<String>,
    /// Every line the server has written to stderr (its logs) so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `command` and waits for its "listening on" line.
    pub fn start(command: Command) -> Server {
        Server::start_with_lines(command, 1)
    }

    /// Starts `command`, waits for its "listening on" line and keeps it and up to
    /// `lines - 1` lines after it that arrive within a second.
    pub fn start_with_lines(mut command: Command, lines: usize) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn triggers");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Drain stderr so the server never blocks on a full pipe; keep it for the test
        // and echo it for failures.
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[triggers] {line}");
                kept.lock().expect("logs").push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let mut banner_lines = vec![line.clone()];
                        while banner_lines.len() < lines {
                            match rx.recv_timeout(Duration::from_secs(1)) {
                                Ok(next) => banner_lines.push(next),
                                Err(_) => break,
                            }
                        }
                        return Server {
                            child: Some(child),
                            url,
                            banner: line,
                            banner_lines,
                            logs,
                        };
                    }
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!("triggers did not report listening within {START_TIMEOUT:?} (exit: {status:?})");
                }
            }
        }
    }

    /// The lines the server has written to stderr so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// The server's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    pub fn stop_with(
        &mut self,
        signal: libc::c_int,
        timeout: Duration,
    ) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("triggers did not exit within {timeout:?} of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGTERM first so the embedded cluster is stopped too.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` to completion (it must exit within `timeout`).
pub fn run(mut command: Command, timeout: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn triggers");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Pids of running postgres processes of `data_dir`: the postmaster names it on its
/// command line, and every postgres process works in it (its cwd).
pub fn postgres_processes_of(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_postgres = args.first().is_some_and(|a| a.contains("postgres"));
        let in_dir = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data_dir);
        if is_postgres && (in_dir || args.iter().any(|a| a.starts_with(&needle))) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether the tests run as root (CI does; some checks need it to chown).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// GET `url`; returns status, the X-Correlation-ID header and the JSON body.
pub async fn get_json(url: &str) -> (u16, Option<String>, serde_json::Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    let correlation = response
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, correlation, body)
}

/// `triggers serve` on a fresh test database `t_<name>` (DATABASE_URL), on a free port,
/// without a rate limit, with `args` added; an API key of `tenant`, a connection to the
/// database and its settings.
pub async fn serve_test_database(
    name: &str,
    tenant: &str,
    args: &[&str],
) -> (
    Server,
    String,
    tokio_postgres::Client,
    tokio_postgres::Config,
) {
    let config = crate::test_database(name).await;
    let db = crate::connect(&config).await;
    let key: String = db
        .query_one("SELECT triggers.create_api_key($1, 'test')", &[&tenant])
        .await
        .unwrap()
        .get(0);
    let server = serve_database(&config, &[&["--rate-limit", "0"], args].concat());
    (server, key, db, config)
}

/// `triggers serve` over the database `config` names (DATABASE_URL), on a free port,
/// with `args`.
pub fn serve_database(config: &tokio_postgres::Config, args: &[&str]) -> Server {
    let mut command = triggers(&["serve"]);
    command
        .env("DATABASE_URL", crate::database_url(config))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args);
    Server::start(command)
}

/// Serves `app` on a free 127.0.0.1 port in this process (a webhook receiver); its
/// `http://` base URL.
pub async fn serve_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// POSTs an event `{"key": key}` with idempotency key `key` until the server answers
/// 200 (whatever happens meanwhile: restarts, 503s); the event id it was given.
pub async fn send_until_accepted(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    key: &str,
) -> String {
    loop {
        let sent = http
            .post(format!("{base}/events"))
            .bearer_auth(api_key)
            .json(&serde_json::json!({"payload": {"key": key}, "idempotency_key": key}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = sent {
            if response.status().as_u16() == 200 {
                if let Ok(body) = response.json::<serde_json::Value>().await {
                    return body["data"]["event_id"].as_str().unwrap().to_string();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
