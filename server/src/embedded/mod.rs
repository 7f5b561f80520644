//! The embedded default: a private Postgres cluster under a data directory, created on
//! first start, started and stopped with the server.
//!
//! The cluster listens on 127.0.0.1 only, on the port of its last start while that port
//! is free (a new free one otherwise), with password authentication for the `triggers`
//! role (the password lives in the cluster directory, readable by its owner only). As
//! root, `initdb` and `postgres` run as the `postgres` system user, which Postgres
//! requires.
//!
//! A new cluster is built in a sibling directory and renamed into place only once it
//! is complete (database created, extensions installed), so a failed first start never
//! leaves a half-initialised data directory behind.
//!
//! This file is the lifecycle (create, start, stop); binaries.rs finds `initdb` and
//! `postgres`, initdb.rs writes a new cluster's files, data_dir.rs says what a data
//! directory holds and whether it is ours, os_user.rs is who runs Postgres.

use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod binaries;
mod data_dir;
mod initdb;
mod os_user;

use crate::error::StartupError;
use crate::schema;
use data_dir::{DataDir, AUTH_FILE, LOG_FILE, PORT_FILE};
use initdb::ROLE;
use os_user::RunAs;

/// The database the server uses inside the embedded cluster.
const DATABASE: &str = "triggers";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to find Postgres and where to keep the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The cluster's data directory.
    pub data_dir: PathBuf,
    /// An explicit `pg_config`; when `None`, the one on `PATH`.
    pub pg_config: Option<PathBuf>,
}

/// A running private cluster. Stopped by [`Cluster::stop`] or, failing that, on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
    password: String,
    created: bool,
}

impl Cluster {
    /// Opens the cluster in `options.data_dir`, creating it on first use, and starts it.
    pub async fn start(options: &ClusterOptions) -> Result<Cluster, StartupError> {
        let bindir = binaries::postgres_bindir(options.pg_config.as_deref())?;
        let run_as = os_user::run_as()?;
        let dir = std::path::absolute(&options.data_dir)
            .map_err(|e| StartupError::DataDir(format!("{}: {e}", options.data_dir.display())))?;
        let created = match data_dir::inspect(&dir, run_as)? {
            DataDir::Cluster => false,
            DataDir::Absent | DataDir::Empty => {
                create(&dir, &bindir, run_as).await?;
                true
            }
        };
        let mut cluster = Cluster::spawn(&dir, &bindir, run_as).await?;
        cluster.created = created;
        let client = cluster.connect(DATABASE).await?;
        schema::ensure_extension(&client).await?;
        Ok(cluster)
    }

    /// Connection settings for the cluster's `triggers` database.
    pub fn config(&self) -> tokio_postgres::Config {
        self.config_for(DATABASE)
    }

    /// The cluster's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this start created the cluster (its first start).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Connection settings for the cluster in `data_dir` if a postgres is serving it
    /// now (started by another `triggers` process), so a command can use it in place.
    pub fn running(data_dir: &Path) -> Option<tokio_postgres::Config> {
        let (_, port) = data_dir::live_postmaster(data_dir)?;
        let password = fs::read_to_string(data_dir.join(AUTH_FILE)).ok()?;
        Some(loopback_config(port, password.trim(), DATABASE))
    }

    fn config_for(&self, dbname: &str) -> tokio_postgres::Config {
        loopback_config(self.port, &self.password, dbname)
    }

    async fn connect(&mut self, dbname: &str) -> Result<tokio_postgres::Client, StartupError> {
        let (client, connection) = self
            .config_for(dbname)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                StartupError::Postgres(format!("connecting to the embedded cluster: {e}"))
            })?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Starts `postgres` on `dir` and waits until it accepts connections.
    async fn spawn(dir: &Path, bindir: &Path, run_as: RunAs) -> Result<Cluster, StartupError> {
        data_dir::refuse_if_running(dir)?;
        let password = fs::read_to_string(dir.join(AUTH_FILE))
            .map_err(|e| {
                StartupError::DataDir(format!(
                    "{} was not created by triggers (cannot read {AUTH_FILE}: {e})",
                    dir.display()
                ))
            })?
            .trim()
            .to_string();
        let log_path = dir.join(LOG_FILE);
        // The cluster keeps the port of its last start while that port is free, so
        // clients (DATABASE_URL users, psql) find it again after a restart. A port
        // picked now can be taken before postgres binds it; try a few.
        let port_file = dir.join(PORT_FILE);
        let mut last_error = String::new();
        for attempt in 0..3 {
            let previous = fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok());
            let port = match previous.filter(|p| attempt == 0 && port_is_free(*p)) {
                Some(port) => port,
                None => free_port()?,
            };
            // The directory is the cluster user's: a link it placed there is not
            // followed (this process may be root).
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&log_path)
                .map_err(|e| StartupError::DataDir(format!("{}: {e}", log_path.display())))?;
            let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
            let log_err = log
                .try_clone()
                .map_err(|e| StartupError::DataDir(format!("{}: {e}", log_path.display())))?;
            let mut command = Command::new(bindir.join("postgres"));
            command
                .arg("-D")
                .arg(dir)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "logging_collector=off"])
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            os_user::as_user(&mut command, run_as);
            die_with_parent(&mut command);
            let child = command.spawn().map_err(|e| {
                StartupError::Postgres(format!(
                    "cannot run {}: {e}",
                    bindir.join("postgres").display()
                ))
            })?;
            let mut cluster = Cluster {
                dir: dir.to_path_buf(),
                child: Some(child),
                port,
                password: password.clone(),
                created: false,
            };
            match cluster.wait_ready().await {
                Ok(()) => {
                    let _ = crate::files::replace(&port_file, format!("{port}\n").as_bytes());
                    return Ok(cluster);
                }
                Err(exited) => {
                    let tail = log_tail(&log_path, log_start);
                    last_error = if tail.is_empty() { exited } else { tail };
                    if !last_error.contains("could not bind") {
                        break;
                    }
                }
            }
        }
        Err(StartupError::Postgres(format!(
            "the embedded cluster in {} did not start: {last_error} (full log: {})",
            dir.display(),
            log_path.display()
        )))
    }

    /// Waits until the postmaster accepts connections. Err when it exits or times out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut config = self.config_for("postgres");
        config.connect_timeout(Duration::from_secs(1));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("postgres exited with {status}"));
                }
            }
            if config.connect(tokio_postgres::NoTls).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("postgres not ready after {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops postgres with a fast shutdown (open transactions roll back, everything
    /// committed stays) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        for (signal, wait) in [
            (libc::SIGINT, STOP_TIMEOUT),
            (libc::SIGQUIT, Duration::from_secs(5)),
            (libc::SIGKILL, Duration::from_secs(5)),
        ] {
            // SAFETY: kill(2) on a child we spawned and have not yet reaped.
            unsafe { libc::kill(pid, signal) };
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds a new cluster next to `dir` and moves it into place once it is complete.
async fn create(dir: &Path, bindir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    let parent = dir.parent().ok_or_else(|| {
        StartupError::DataDir(format!("{} has no parent directory", dir.display()))
    })?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = parent.join(format!(".{name}.init-{}", std::process::id()));
    let result = build(&partial, bindir, run_as).await;
    let result = result.and_then(|()| {
        fs::rename(&partial, dir).map_err(|e| {
            StartupError::DataDir(format!(
                "cannot move the new cluster to {}: {e}",
                dir.display()
            ))
        })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    result
}

/// A new cluster in `partial`: initdb, then a first start that creates the database
/// and the extension.
async fn build(partial: &Path, bindir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    initdb::init(partial, bindir, run_as)?;
    let mut cluster = Cluster::spawn(partial, bindir, run_as).await?;
    let admin = cluster.connect("postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .map_err(|e| StartupError::Postgres(format!("creating database {DATABASE}: {e}")))?;
    let client = cluster.connect(DATABASE).await?;
    schema::ensure_extension(&client).await?;
    drop(client);
    drop(admin);
    cluster.stop();
    Ok(())
}

/// Asks the kernel to stop postgres (fast shutdown) if this process dies without doing
/// it, so a killed server never leaves an orphaned cluster holding its data directory.
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child after fork, before exec, and only calls
    // async-signal-safe functions (prctl, getppid).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// How to reach an embedded cluster: loopback, its port, role `triggers`.
fn loopback_config(port: u16, password: &str, dbname: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(ROLE)
        .password(password)
        .dbname(dbname)
        .application_name("triggers")
        .connect_timeout(Duration::from_secs(5));
    config
}

fn port_is_free(port: u16) -> bool {
    port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16, StartupError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StartupError::Postgres(format!("no free loopback port for postgres: {e}")))
}

/// The last lines postgres wrote since `from`, joined into one line for an error.
fn log_tail(path: &Path, from: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("FATAL") || l.contains("ERROR") || l.contains("PANIC"))
        .collect();
    lines
        .iter()
        .rev()
        .take(2)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ")
}
