//! Crashes (issue 16): producers POST events with their own idempotency keys and send
//! the same key again on any failure, as a careful client does, while (a) the server is
//! SIGKILLed and restarted five times, or (b) Postgres is stopped in immediate mode and
//! started again while (c) worker backends are terminated mid-batch. Afterwards every
//! event that got a 200 exists exactly once with the id it was given, none is stored
//! twice, the queue is empty and the metrics equal `count(*)` by status. Webhook
//! deliveries through a SIGKILL are in tests/tests/webhooks.rs. The first, once more
//! against the sharded layout (issue 17): a server over a PL/Proxy proxy and two nodes,
//! tenants on both.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use triggers_tests::sharded::Sharded;
use triggers_tests::{
    database_url, free_port, scalar, send_until_accepted, test_database, triggers, wait_until,
    ExternalCluster, Server, TempDir,
};

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 100;
const KILLS: usize = 5;

fn start(url: &str, port: u16) -> Server {
    start_over(url, &[], port)
}

/// The server on `url`, over `nodes` too when there are any (then `url` is a proxy).
fn start_over(url: &str, nodes: &[String], port: u16) -> Server {
    let mut command = triggers(&["serve"]);
    if !nodes.is_empty() {
        command.env("TRIGGERS_NODES", nodes.join(","));
    }
    command.env("DATABASE_URL", url).args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--rate-limit",
        "0",
    ]);
    Server::start(command)
}

/// Careful producers: each of [`PRODUCERS`] sends [`PER_PRODUCER`] keys, each until a
/// 200, then once more to check that a resend names the same event.
struct Producers {
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    progress: Arc<AtomicUsize>,
    duplicated: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Producers {
    /// Producers sending with `keys` (producer p with key p mod their number).
    fn start(base: &str, keys: &[String]) -> Producers {
        let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let progress = Arc::new(AtomicUsize::new(0));
        let duplicated = Arc::new(AtomicUsize::new(0));
        let tasks = (0..PRODUCERS)
            .map(|p| {
                let (acked, progress, duplicated) =
                    (acked.clone(), progress.clone(), duplicated.clone());
                let (base, api_key) = (base.to_string(), keys[p % keys.len()].clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    for n in 0..PER_PRODUCER {
                        let key = format!("p{p}-{n}");
                        let id = send_until_accepted(&http, &base, &api_key, &key).await;
                        let again = send_until_accepted(&http, &base, &api_key, &key).await;
                        if again != id {
                            duplicated.fetch_add(1, Ordering::SeqCst);
                        }
                        acked.lock().unwrap().insert(key, id);
                        progress.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Producers {
            acked,
            progress,
            duplicated,
            tasks,
        }
    }

    /// Waits until `n` more keys were acknowledged.
    async fn advance(&self, n: usize, what: &str) {
        let from = self.progress.load(Ordering::SeqCst);
        wait_until(what, || async {
            self.progress.load(Ordering::SeqCst) >= from + n
        })
        .await;
    }

    /// Waits for the producers to finish, then for the queues of `dbs` (one database,
    /// or every node) to drain, and checks every acknowledged event; prints the counts.
    async fn verify(self, dbs: &[tokio_postgres::Client], what: &str) {
        for task in self.tasks {
            task.await.unwrap();
        }
        let total = (PRODUCERS * PER_PRODUCER) as i64;
        let sum = |sql: String| async move {
            let mut n = 0;
            for db in dbs {
                n += scalar(db, &sql).await;
            }
            n
        };
        wait_until("the queue drained", || async {
            sum("SELECT count(*) FROM pgmq.q_triggers_events".into()).await == 0
                && sum("SELECT count(*) FROM triggers.events WHERE status = 'pending'".into()).await
                    == total
        })
        .await;
        let acked = self.acked.lock().unwrap().clone();
        let mut lost = 0;
        for (key, id) in &acked {
            let found = sum(format!(
                "SELECT count(*) FROM triggers.events WHERE event_id = '{id}' AND idempotency_key = '{key}'"
            ))
            .await;
            if found != 1 {
                lost += 1;
            }
        }
        let stored = sum("SELECT count(*) FROM triggers.events".into()).await;
        let mut payloads = std::collections::HashSet::new();
        let mut stored_twice = 0;
        for db in dbs {
            for row in db
                .query("SELECT payload::text FROM triggers.events", &[])
                .await
                .unwrap()
            {
                if !payloads.insert(row.get::<_, String>(0)) {
                    stored_twice += 1;
                }
            }
        }
        let duplicated = self.duplicated.load(Ordering::SeqCst);
        println!(
            "crash test, {what}: {} acknowledged, lost = {lost}, duplicated = {duplicated} ({stored_twice} payloads stored twice), {stored} stored",
            acked.len(),
        );
        assert_eq!(acked.len() as i64, total);
        assert_eq!(lost, 0, "every acknowledged event exists once, with its id");
        assert_eq!(duplicated, 0, "a resent key names its first event");
        assert_eq!((stored, stored_twice), (total, 0), "nothing stored twice");
        for db in dbs {
            assert!(
                triggers_tests::metrics_are_exact(db).await,
                "metrics equal count(*) by status"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_server_five_times_loses_and_duplicates_nothing_acknowledged() {
    let config = test_database("crash_server").await;
    let db = triggers_tests::connect(&config).await;
    let api_key: String = db
        .query_one("SELECT triggers.create_api_key('t', 'crash')", &[])
        .await
        .unwrap()
        .get(0);
    let port = free_port();
    let url = database_url(&config);
    let producers = Producers::start(&format!("http://127.0.0.1:{port}"), &[api_key]);
    let server = kill_five_times(&url, &[], port, &producers).await;
    producers
        .verify(std::slice::from_ref(&db), "server SIGKILLed 5 times")
        .await;
    drop(server);
}

/// Starts the server, then SIGKILLs and restarts it [`KILLS`] times while `producers`
/// make progress; returns it running.
async fn kill_five_times(url: &str, nodes: &[String], port: u16, producers: &Producers) -> Server {
    let mut server = start_over(url, nodes, port);
    for kill in 0..KILLS {
        producers
            .advance(40, &format!("progress before kill {}", kill + 1))
            .await;
        server.stop_with(libc::SIGKILL, Duration::from_secs(30));
        server = start_over(url, nodes, port);
    }
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_sharded_server_five_times_loses_and_duplicates_nothing_acknowledged() {
    let sharded = Sharded::new("crash_sharded", 2, 8).await;
    let proxy = triggers_client::Client::from_config(sharded.proxy.clone(), 2).unwrap();
    // A tenant per producer, on both nodes.
    let tenants: Vec<String> = (0..PRODUCERS).map(|p| format!("crash-{p}")).collect();
    let nodes_of = sharded.nodes_of(&tenants).await;
    assert!(
        nodes_of.contains(&0) && nodes_of.contains(&1),
        "{nodes_of:?}"
    );
    let mut keys = Vec::new();
    for tenant in &tenants {
        keys.push(proxy.create_api_key(tenant, "crash").await.unwrap());
    }
    let port = free_port();
    let nodes: Vec<String> = sharded.nodes.iter().map(database_url).collect();
    let producers = Producers::start(&format!("http://127.0.0.1:{port}"), &keys);
    let server = kill_five_times(&database_url(&sharded.proxy), &nodes, port, &producers).await;
    let mut dbs = Vec::new();
    for node in &sharded.nodes {
        dbs.push(triggers_tests::connect(node).await);
    }
    producers
        .verify(&dbs, "sharded server (proxy + 2 nodes) SIGKILLed 5 times")
        .await;
    drop(server);
}

/// Stops the cluster of `data_dir` in immediate mode (SIGQUIT to the postmaster: no
/// checkpoint, crash recovery at the next start) and waits until it is gone.
async fn crash_postgres(data_dir: &std::path::Path) {
    let pid: i32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with a pid read from the cluster's own postmaster.pid.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    // Gone, or a zombie (the cluster is this process's child until it is reaped).
    wait_until("postgres gone", || async {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_crashing_and_workers_dying_mid_batch_lose_and_duplicate_nothing() {
    let tmp = TempDir::new("crash_postgres");
    let data_dir = tmp.join("db");
    let mut cluster = ExternalCluster::start(&data_dir).await;
    let db = triggers_tests::connect(&cluster.config()).await;
    let api_key: String = db
        .query_one("SELECT triggers.create_api_key('t', 'crash')", &[])
        .await
        .unwrap()
        .get(0);
    drop(db);
    let port = free_port();
    let server = start(&cluster.url(), port);
    let producers = Producers::start(&format!("http://127.0.0.1:{port}"), &[api_key]);
    for round in 0..2 {
        // (c) Worker backends terminated in the middle of their batches.
        let admin = triggers_tests::connect(&cluster.config()).await;
        for _ in 0..3 {
            producers
                .advance(
                    20,
                    &format!("progress before terminating workers ({round})"),
                )
                .await;
            admin
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE pid <> pg_backend_pid() AND query LIKE '%process_batch%'",
                )
                .await
                .unwrap();
        }
        drop(admin);
        // (b) Postgres stopped in immediate mode, then started again: crash recovery.
        producers
            .advance(40, &format!("progress before crash {}", round + 1))
            .await;
        crash_postgres(cluster.dir()).await;
        drop(cluster);
        cluster = ExternalCluster::start(&data_dir).await;
    }
    let db = triggers_tests::connect(&cluster.config()).await;
    producers
        .verify(
            std::slice::from_ref(&db),
            "Postgres crashed twice, workers terminated 6 times",
        )
        .await;
    drop(server);
}
