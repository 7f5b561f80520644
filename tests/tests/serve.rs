//! `triggers serve` as a user runs it: the embedded default, DATABASE_URL, signals, and
//! every bad setting answered by one clear line and a non-zero exit.
//! (Long: each test starts the real binary and needs its own few lines of setup.)

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use triggers_tests::{
    free_port, get_json, is_root, postgres_processes_of, run, triggers, wait_for, wait_until,
    ExternalCluster, Server, TempDir,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

fn serve_embedded(data_dir: &std::path::Path, port: u16) -> Server {
    let mut command = triggers(&["serve"]);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir);
    Server::start(command)
}

/// A failed start: exit code 1, and stderr is exactly one line that names the problem.
fn assert_one_line_error(output: &std::process::Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("triggers: error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "one error line expected in: {stderr}");
    assert!(
        error_lines[0].contains(needle),
        "'{needle}' not in: {stderr}"
    );
    error_lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_default_serves_health_and_ready_then_stops_postgres_on_sigterm() {
    let tmp = TempDir::new("embedded");
    let data_dir = tmp.join("data");
    let mut server = serve_embedded(&data_dir, free_port());
    assert!(
        server.banner.contains("embedded cluster"),
        "banner: {}",
        server.banner
    );

    let (status, correlation, body) = get_json(&format!("{}/health", server.url)).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    assert!(
        correlation.is_some_and(|c| !c.is_empty()),
        "X-Correlation-ID on /health"
    );

    let (status, _, body) = get_json(&format!("{}/ready", server.url)).await;
    assert_eq!(status, 200, "ready: {body}");

    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "the data directory holds a cluster"
    );
    assert!(
        !postgres_processes_of(&data_dir).is_empty(),
        "postgres runs while serving"
    );

    let status = server.stop_with(libc::SIGTERM, EXIT_TIMEOUT);
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert_eq!(
        postgres_processes_of(&data_dir),
        Vec::<u32>::new(),
        "postgres left running"
    );
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "postgres shut down cleanly"
    );

    // A second start reuses the data directory (same cluster, same credentials).
    let before = std::fs::read_to_string(data_dir.join("triggers.auth")).unwrap();
    let mut server = serve_embedded(&data_dir, free_port());
    let (status, _, _) = get_json(&format!("{}/ready", server.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        std::fs::read_to_string(data_dir.join("triggers.auth")).unwrap(),
        before
    );
    let status = server.stop_with(libc::SIGINT, EXIT_TIMEOUT);
    assert!(status.success(), "clean exit on SIGINT: {status}");
    assert_eq!(
        postgres_processes_of(&data_dir),
        Vec::<u32>::new(),
        "postgres left running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_server_takes_its_postgres_with_it() {
    let tmp = TempDir::new("killed");
    let data_dir = tmp.join("data");
    let mut server = serve_embedded(&data_dir, free_port());
    assert!(!postgres_processes_of(&data_dir).is_empty());
    server.stop_with(libc::SIGKILL, EXIT_TIMEOUT);
    // The kernel's parent-death signal asks postgres for a fast shutdown.
    wait_for("no orphaned postgres", || async {
        let left = postgres_processes_of(&data_dir);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("postgres processes {left:?}"))
        }
    })
    .await;
    // And the directory is usable again at once.
    let server = serve_embedded(&data_dir, free_port());
    let (status, _, _) = get_json(&format!("{}/ready", server.url)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn database_url_uses_that_database_and_starts_no_cluster() {
    // A database of our own to point DATABASE_URL at: a cluster started by the same code
    // the embedded default uses, outside any `triggers serve`.
    let tmp = TempDir::new("url");
    let external = ExternalCluster::start(&tmp.join("external")).await;
    let url = external.url();

    let unused_dir = tmp.join("unused");
    let mut command = triggers(&["serve"]);
    command
        .env("DATABASE_URL", &url)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&unused_dir);
    let mut server = Server::start(command);
    assert!(
        server.banner.contains("DATABASE_URL"),
        "banner: {}",
        server.banner
    );
    let (status, _, _) = get_json(&format!("{}/ready", server.url)).await;
    assert_eq!(status, 200);
    assert!(
        !unused_dir.exists(),
        "no cluster is created with DATABASE_URL"
    );

    // Database down: /ready says 503 in the error envelope, /health stays 200.
    drop(external);
    let (status, correlation, body) = get_json(&format!("{}/ready", server.url)).await;
    assert_eq!(status, 503, "ready with the database down: {body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(body["error"]["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        body["error"]["correlation_id"].as_str(),
        correlation.as_deref()
    );
    let (status, _, _) = get_json(&format!("{}/health", server.url)).await;
    assert_eq!(status, 200);
    // An API route answers 503 too, not 500.
    let reply = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .header("authorization", "Bearer trg_abc_def")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);

    // The database comes back (same port): the server recovers without a restart.
    let external = ExternalCluster::start(&tmp.join("external")).await;
    assert_eq!(
        external.url(),
        url,
        "the cluster keeps its port across restarts"
    );
    wait_until("ready again after the database returned", || async {
        get_json(&format!("{}/ready", server.url)).await.0 == 200
    })
    .await;
    assert!(server.stop_with(libc::SIGTERM, EXIT_TIMEOUT).success());
    drop(external);
}

#[test]
fn unreachable_database_url_is_one_line_error() {
    let port = free_port();
    let mut command = triggers(&["serve", "--listen"]);
    command.arg(format!("127.0.0.1:{}", free_port())).env(
        "DATABASE_URL",
        format!("postgres://nobody:secret@127.0.0.1:{port}/nothing"),
    );
    let output = run(command, EXIT_TIMEOUT);
    let line = assert_one_line_error(&output, "cannot connect to DATABASE_URL");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert!(
        !line.contains("secret"),
        "the password is never printed: {line}"
    );
}

#[test]
fn malformed_database_url_is_one_line_error() {
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("DATABASE_URL", "postgres://[not a url");
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "DATABASE_URL");
}

#[test]
fn busy_port_is_one_line_error_and_touches_nothing() {
    let tmp = TempDir::new("busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data_dir = tmp.join("data");
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data_dir);
    let line = assert_one_line_error(&run(command, EXIT_TIMEOUT), &format!("127.0.0.1:{port}"));
    assert!(line.contains("in use"), "{line}");
    assert!(
        !data_dir.exists(),
        "no cluster is created when the port is busy"
    );
}

#[test]
fn bad_listen_address_is_one_line_error() {
    let mut command = triggers(&["serve", "--listen", "not-an-address"]);
    command.env("DATABASE_URL", "postgres://x@127.0.0.1:1/x");
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "--listen");
}

#[test]
fn data_dir_owned_by_someone_else_is_refused() {
    assert!(
        is_root(),
        "this test chowns a directory to another user: run it as root"
    );
    let tmp = TempDir::new("owner");
    let data_dir = tmp.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("PG_VERSION"), "15\n").unwrap();
    std::os::unix::fs::chown(&data_dir, Some(65534), Some(65534)).unwrap(); // nobody
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir);
    let line = assert_one_line_error(&run(command, EXIT_TIMEOUT), "is owned by");
    assert!(line.contains("nobody"), "{line}");
    assert_eq!(
        TempDir::entries(&data_dir),
        vec!["PG_VERSION"],
        "nothing written into it"
    );
}

#[test]
fn data_dir_that_is_not_a_cluster_is_refused_and_left_alone() {
    let tmp = TempDir::new("notcluster");
    let data_dir = tmp.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("notes.txt"), "mine").unwrap();
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir);
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "not a Postgres cluster");
    assert_eq!(TempDir::entries(&data_dir), vec!["notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(data_dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn data_dir_that_is_a_file_is_refused() {
    let tmp = TempDir::new("file");
    let data_dir = tmp.join("data");
    std::fs::write(&data_dir, "x").unwrap();
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir);
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "is not a directory");
}

#[test]
fn data_dir_in_use_by_a_running_cluster_is_refused() {
    let tmp = TempDir::new("inuse");
    let data_dir = tmp.join("data");
    let _server = serve_embedded(&data_dir, free_port());
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir);
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "in use by a running postgres");
}

#[test]
fn missing_pg_config_is_one_line_error() {
    let tmp = TempDir::new("nopgconfig");
    let data_dir = tmp.join("data");
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir)
        .env("PATH", tmp.path());
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "pg_config not found on PATH");
    assert!(!data_dir.exists());

    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir)
        .env("TRIGGERS_PG_CONFIG", tmp.join("no/pg_config"));
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "does not exist");
    assert!(!data_dir.exists());
}

#[test]
fn failed_initdb_leaves_no_half_initialised_data_dir() {
    let tmp = TempDir::new("badinitdb");
    // A Postgres whose initdb fails part-way, after writing into the directory.
    let bindir = tmp.join("bin");
    std::fs::create_dir(&bindir).unwrap();
    let script = |name: &str, body: &str| {
        let path = bindir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script("pg_config", &format!("echo {}", bindir.display()));
    script(
        "initdb",
        "touch \"$2/PG_VERSION\"; echo 'initdb: error: disk on fire' >&2; exit 1",
    );
    script("postgres", "exit 1");
    let data_dir = tmp.join("data");
    let mut command = triggers(&["serve", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir)
        .env("TRIGGERS_PG_CONFIG", bindir.join("pg_config"));
    assert_one_line_error(&run(command, EXIT_TIMEOUT), "disk on fire");
    assert!(
        !data_dir.exists(),
        "no data directory after a failed initdb"
    );
    assert_eq!(
        TempDir::entries(tmp.path()),
        vec!["bin"],
        "no partial directory left beside it"
    );
}

async fn stored_count(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM triggers.events", &[])
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_stored(db: &tokio_postgres::Client, n: i64) {
    wait_until(&format!("{n} events stored"), || async {
        stored_count(db).await >= n
    })
    .await;
}

/// The real binary's workers process the queue, each LISTENs for the enqueue
/// notification, and an event enqueued once they are idle is processed. (That an idle
/// worker wakes on the notification and not on its fallback poll is shown with a
/// manual clock in worker.rs; how soon, by the benches.)
#[tokio::test(flavor = "multi_thread")]
async fn workers_process_the_queue_and_listen_for_enqueues() {
    let tmp = TempDir::new("workers");
    let external = ExternalCluster::start(&tmp.join("db")).await;
    let mut command = triggers(&["serve", "--workers", "2"]);
    command
        .env("DATABASE_URL", external.url())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()));
    let mut server = Server::start(command);
    let db = triggers_tests::connect(&external.config()).await;

    db.query(
        "SELECT triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i))) FROM generate_series(1, 500) i))",
        &[],
    )
    .await
    .unwrap();
    wait_for_stored(&db, 500).await;

    wait_until("both workers LISTEN on triggers_events", || async {
        let listening: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND query = 'LISTEN triggers_events'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        listening == 2
    })
    .await;
    db.query("SELECT triggers.enqueue(payload => '{}')", &[])
        .await
        .unwrap();
    wait_for_stored(&db, 501).await;

    assert!(server.stop_with(libc::SIGTERM, EXIT_TIMEOUT).success());
}
