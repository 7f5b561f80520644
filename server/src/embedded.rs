//! The embedded default: a private Postgres cluster under a data directory, created on
//! first start, started and stopped with the server.
//!
//! The cluster listens on 127.0.0.1 only, on a port picked at each start, with password
//! authentication for the `triggers` role (the password lives in the cluster directory,
//! readable by its owner only). As root, `initdb` and `postgres` run as the `postgres`
//! system user, which Postgres requires.
//!
//! A new cluster is built in a sibling directory and renamed into place only once it
//! is complete (database created, extensions installed), so a failed first start never
//! leaves a half-initialised data directory behind.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::db;
use crate::error::StartupError;

/// Where the cluster keeps the `triggers` role's password.
const AUTH_FILE: &str = "triggers.auth";
/// The port of the last start.
const PORT_FILE: &str = "triggers.port";
/// Postgres's own output, appended across starts.
const LOG_FILE: &str = "postgres.log";
/// The superuser role of the embedded cluster.
const ROLE: &str = "triggers";
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

/// The operating-system user that runs `initdb` and `postgres`.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
    /// Whether we switch to this user (we are root) or already are it.
    switch: bool,
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
        let bindir = postgres_bindir(options.pg_config.as_deref())?;
        let run_as = run_as()?;
        let dir = std::path::absolute(&options.data_dir)
            .map_err(|e| StartupError::DataDir(format!("{}: {e}", options.data_dir.display())))?;
        let created = match inspect_data_dir(&dir, run_as)? {
            DataDir::Cluster => false,
            DataDir::Absent | DataDir::Empty => {
                create(&dir, &bindir, run_as).await?;
                true
            }
        };
        let mut cluster = Cluster::spawn(&dir, &bindir, run_as).await?;
        cluster.created = created;
        let client = cluster.connect(DATABASE).await?;
        db::ensure_extension(&client).await?;
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
        let (_, port) = live_postmaster(data_dir)?;
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
        refuse_if_running(dir)?;
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
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
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
            as_user(&mut command, run_as);
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
                    let _ = fs::write(&port_file, format!("{port}\n"));
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

/// Settings for a queue workload, appended to the new cluster's postgresql.conf (so
/// `ALTER SYSTEM` still overrides them). Workers delete every message they finish; the
/// dead index entries at the head of the queue are walked by every claim until vacuum
/// removes them, so autovacuum looks at the hot tables every second, not every minute.
const TUNING: &str = "\n# triggers: a queue workload\nautovacuum_naptime = 1s\n";

fn tune(data_dir: &Path) -> Result<(), StartupError> {
    use std::io::Write;
    let conf = data_dir.join("postgresql.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| f.write_all(TUNING.as_bytes()))
        .map_err(|e| StartupError::DataDir(format!("{}: {e}", conf.display())))
}

async fn build(partial: &Path, bindir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    fs::create_dir_all(partial)
        .map_err(|e| StartupError::DataDir(format!("cannot create {}: {e}", partial.display())))?;
    fs::set_permissions(partial, fs::Permissions::from_mode(0o700))
        .map_err(|e| StartupError::DataDir(format!("{}: {e}", partial.display())))?;
    chown(partial, run_as)?;
    check_reachable(partial, run_as)?;

    let password = random_password();
    let pwfile = PathBuf::from(format!("{}.pw", partial.display()));
    write_private(&pwfile, &password, run_as)?;
    let output = {
        let mut command = Command::new(bindir.join("initdb"));
        command
            .arg("-D")
            .arg(partial)
            .args([
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--no-instructions")
            .current_dir("/")
            .stdin(Stdio::null());
        as_user(&mut command, run_as);
        command.output()
    };
    let _ = fs::remove_file(&pwfile);
    let output = output.map_err(|e| {
        StartupError::Postgres(format!(
            "cannot run {}: {e}",
            bindir.join("initdb").display()
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(StartupError::Postgres(format!(
            "initdb failed ({}): {last}",
            output.status
        )));
    }
    write_private(&partial.join(AUTH_FILE), &password, run_as)?;
    tune(partial)?;

    let mut cluster = Cluster::spawn(partial, bindir, run_as).await?;
    let admin = cluster.connect("postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .map_err(|e| StartupError::Postgres(format!("creating database {DATABASE}: {e}")))?;
    let client = cluster.connect(DATABASE).await?;
    db::ensure_extension(&client).await?;
    drop(client);
    drop(admin);
    cluster.stop();
    Ok(())
}

enum DataDir {
    Absent,
    Empty,
    Cluster,
}

/// Decides what `dir` is and refuses anything that is not ours to use.
fn inspect_data_dir(dir: &Path, run_as: RunAs) -> Result<DataDir, StartupError> {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Absent),
        Err(e) => return Err(StartupError::DataDir(format!("{}: {e}", dir.display()))),
    };
    if !meta.is_dir() {
        return Err(StartupError::DataDir(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != run_as.uid && meta.uid() != me {
        return Err(StartupError::DataDir(format!(
            "{} is owned by {}, not by {} who runs the cluster",
            dir.display(),
            user_name(meta.uid()),
            user_name(run_as.uid)
        )));
    }
    let mut entries =
        fs::read_dir(dir).map_err(|e| StartupError::DataDir(format!("{}: {e}", dir.display())))?;
    if entries.next().is_none() {
        return Ok(DataDir::Empty);
    }
    if !dir.join("PG_VERSION").is_file() {
        return Err(StartupError::DataDir(format!(
            "{} is not empty and not a Postgres cluster (no PG_VERSION); choose another --data-dir",
            dir.display()
        )));
    }
    if meta.uid() != run_as.uid {
        return Err(StartupError::DataDir(format!(
            "{} is owned by {}, not by {} who runs the cluster",
            dir.display(),
            user_name(meta.uid()),
            user_name(run_as.uid)
        )));
    }
    Ok(DataDir::Cluster)
}

/// Refuses to start a second postmaster on a directory one is already serving.
fn refuse_if_running(dir: &Path) -> Result<(), StartupError> {
    match live_postmaster(dir) {
        Some((pid, _)) => Err(StartupError::DataDir(format!(
            "{} is in use by a running postgres (pid {pid}); stop it first",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// The pid and port of the postgres serving `dir`, from its postmaster.pid, if alive.
fn live_postmaster(dir: &Path) -> Option<(libc::pid_t, u16)> {
    let text = fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<libc::pid_t>().ok()?;
    let port = lines
        .nth(2)
        .and_then(|l| l.trim().parse::<u16>().ok())
        .unwrap_or(0);
    // SAFETY: signal 0 only checks that the process exists.
    let alive = pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    (alive && process_is_postgres(pid)).then_some((pid, port))
}

fn process_is_postgres(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "postgres")
        .unwrap_or(true)
}

/// The directory holding `initdb` and `postgres`, from `pg_config --bindir`.
fn postgres_bindir(explicit: Option<&Path>) -> Result<PathBuf, StartupError> {
    let pg_config = match explicit {
        Some(path) => {
            if !path.is_file() {
                return Err(StartupError::PgConfig(format!(
                    "{} does not exist; set --pg-config / TRIGGERS_PG_CONFIG to the pg_config of an installed Postgres",
                    path.display()
                )));
            }
            path.to_path_buf()
        }
        None => find_on_path("pg_config").ok_or_else(|| {
            StartupError::PgConfig(
                "pg_config not found on PATH; install Postgres (scripts/setup.sh does), set --pg-config, or set DATABASE_URL"
                    .to_string(),
            )
        })?,
    };
    let output = Command::new(&pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StartupError::PgConfig(format!("cannot run {}: {e}", pg_config.display())))?;
    if !output.status.success() {
        return Err(StartupError::PgConfig(format!(
            "{} --bindir failed ({})",
            pg_config.display(),
            output.status
        )));
    }
    let bindir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for tool in ["initdb", "postgres"] {
        if !bindir.join(tool).is_file() {
            return Err(StartupError::PgConfig(format!(
                "{} has no {tool} (from {} --bindir); install the Postgres server",
                bindir.display(),
                pg_config.display()
            )));
        }
    }
    Ok(bindir)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// As root, Postgres must run as the `postgres` system user; otherwise as ourselves.
fn run_as() -> Result<RunAs, StartupError> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 {
        return Ok(RunAs {
            uid,
            gid,
            switch: false,
        });
    }
    let name = CString::new("postgres").expect("no NUL in a literal");
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once, and
    // nothing else in this process calls getpwnam concurrently during start-up.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(StartupError::DataDir(
            "running as root, but there is no 'postgres' user to run the embedded cluster as"
                .to_string(),
        ));
    }
    // SAFETY: entry is non-null and points to a valid passwd struct.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(RunAs {
        uid,
        gid,
        switch: true,
    })
}

fn user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| format!("{name} (uid {uid})"))
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn as_user(command: &mut Command, run_as: RunAs) {
    if run_as.switch {
        command.uid(run_as.uid).gid(run_as.gid);
    }
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

fn chown(path: &Path, run_as: RunAs) -> Result<(), StartupError> {
    if run_as.switch {
        std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid))
            .map_err(|e| StartupError::DataDir(format!("cannot chown {}: {e}", path.display())))?;
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str, run_as: RunAs) -> Result<(), StartupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()).map(|()| f))
        .map_err(|e| StartupError::DataDir(format!("cannot write {}: {e}", path.display())))?;
    file.flush()
        .map_err(|e| StartupError::DataDir(format!("cannot write {}: {e}", path.display())))?;
    chown(path, run_as)
}

/// Fails early with a clear message when the cluster's user cannot enter a directory on
/// the way to the data directory (e.g. a data directory under /root, run as root).
fn check_reachable(dir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    if run_as.uid == 0 {
        return Ok(());
    }
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let can_enter = if meta.uid() == run_as.uid {
            mode & 0o100 != 0
        } else if meta.gid() == run_as.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_enter {
            return Err(StartupError::DataDir(format!(
                "{} cannot enter {}, so it cannot use a data directory below it; choose another --data-dir",
                user_name(run_as.uid),
                ancestor.display()
            )));
        }
    }
    Ok(())
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

fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
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
