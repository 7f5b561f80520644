//! Databases for tests: one shared embedded cluster per test binary (started by the
//! same code as `triggers serve`'s default), a fresh database with the extension per test.

use std::path::Path;
use std::sync::mpsc;

use crate::process::postgres_processes_of;

/// A database of its own, with the extension, in a cluster shared by the tests of one
/// test binary (started once, by the same code as the embedded default).
pub async fn test_database(name: &str) -> tokio_postgres::Config {
    let config = empty_database(name).await;
    connect(&config)
        .await
        .batch_execute("CREATE EXTENSION triggers CASCADE")
        .await
        .expect("create extension");
    config
}

/// A database of its own without the extension, in the same shared cluster (to
/// create an older version of it, say).
pub async fn empty_database(name: &str) -> tokio_postgres::Config {
    let mut config = shared_cluster().clone();
    let admin = connect(&config).await;
    let db = format!("t_{name}");
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .expect("create test database");
    }
    config.dbname(&db);
    config
}

/// A `postgres://` URL for `config` (a database of [`test_database`]), for a process
/// that takes DATABASE_URL.
pub fn database_url(config: &tokio_postgres::Config) -> String {
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let user = config.get_user().unwrap_or("postgres");
    let port = config.get_ports()[0];
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}:{password}@127.0.0.1:{port}/{db}")
}

/// A connection whose driver runs on the current runtime.
pub async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

fn shared_cluster() -> &'static tokio_postgres::Config {
    static CONFIG: std::sync::OnceLock<tokio_postgres::Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        // Postgres is stopped when the thread that started it exits (parent-death
        // signal), so it is started from a thread that lives as long as the process.
        std::thread::spawn(move || {
            remove_stale_clusters();
            let dir =
                std::env::temp_dir().join(format!("triggers-test-cluster-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let options = triggers_server::embedded::ClusterOptions {
                data_dir: dir,
                pg_config: None,
            };
            let cluster = runtime
                .block_on(triggers_server::embedded::Cluster::start(&options))
                .expect("start the shared test cluster");
            let mut config = cluster.config();
            config.dbname("postgres");
            tx.send(config).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared cluster config")
    })
}

/// Removes shared clusters left behind by test processes that have exited.
fn remove_stale_clusters() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("triggers-test-cluster-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && postgres_processes_of(&entry.path()).is_empty()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Queues `n` events for `tenant` in one `enqueue_batch`, payloads `{"n": 1}` to
/// `{"n": n}`, each with the debug flag if one is given.
pub async fn enqueue_many(db: &tokio_postgres::Client, tenant: &str, n: i64, debug: Option<&str>) {
    db.execute(
        "SELECT triggers.enqueue_batch(
                    (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('payload', jsonb_build_object('n', g), 'debug', $3::text)))
                       FROM generate_series(1, $2::bigint) g), $1)",
        &[&tenant, &n, &debug],
    )
    .await
    .expect("enqueue_batch");
}

/// The single bigint `sql` returns.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The first column of every row `sql` (with `params`) returns.
pub async fn column<T: tokio_postgres::types::FromSqlOwned>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A worker that claims and processes a batch, then hangs before committing (the
/// batch's locks held); [`HungWorker::kill`] terminates its backend.
pub struct HungWorker {
    pid: i32,
    task: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl HungWorker {
    /// Starts it on a connection of its own and waits (see [`crate::wait_until`]) until
    /// it is asleep inside its transaction.
    pub async fn start(
        config: &tokio_postgres::Config,
        admin: &tokio_postgres::Client,
        batch: i32,
    ) -> HungWorker {
        let victim = connect(config).await;
        let pid: i32 = victim
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("backend pid")
            .get(0);
        let task = tokio::spawn(async move {
            victim
                .batch_execute(&format!(
                    "BEGIN; SELECT * FROM triggers.process_batch({batch}); SELECT pg_sleep(60); COMMIT;"
                ))
                .await
        });
        crate::wait_until("the hung worker holds its batch", || async {
            scalar(
                admin,
                &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND wait_event = 'PgSleep'"),
            )
            .await
                == 1
        })
        .await;
        HungWorker { pid, task }
    }

    /// Terminates its backend; panics unless its transaction died with it.
    pub async fn kill(self, admin: &tokio_postgres::Client) {
        let killed: bool = admin
            .query_one("SELECT pg_terminate_backend($1)", &[&self.pid])
            .await
            .expect("terminate")
            .get(0);
        assert!(
            killed,
            "the hung worker's backend was not there to terminate"
        );
        assert!(
            self.task.await.expect("the hung worker's task").is_err(),
            "the hung worker's transaction died"
        );
    }
}

/// A cluster started directly (not through `triggers serve`), stopped on drop.
pub struct ExternalCluster {
    cluster: triggers_server::embedded::Cluster,
}

impl ExternalCluster {
    /// Starts the cluster in `data_dir` (creating it the first time), on the port it
    /// kept there before.
    pub async fn start(data_dir: &std::path::Path) -> ExternalCluster {
        let options = triggers_server::embedded::ClusterOptions {
            data_dir: data_dir.to_path_buf(),
            pg_config: None,
        };
        let cluster = triggers_server::embedded::Cluster::start(&options)
            .await
            .expect("start cluster");
        ExternalCluster { cluster }
    }

    /// Its connection settings.
    pub fn config(&self) -> tokio_postgres::Config {
        self.cluster.config()
    }

    /// Its data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.cluster.dir()
    }

    /// Its URL, for DATABASE_URL.
    pub fn url(&self) -> String {
        let password = std::fs::read_to_string(self.cluster.dir().join("triggers.auth")).unwrap();
        let port = self.cluster.config().get_ports()[0];
        format!(
            "postgres://triggers:{}@127.0.0.1:{port}/triggers",
            password.trim()
        )
    }
}

impl Drop for ExternalCluster {
    fn drop(&mut self) {
        self.cluster.stop();
    }
}

/// Whether a database's `metrics(NULL)` equals `count(*)` of its events by status.
pub async fn metrics_are_exact(db: &tokio_postgres::Client) -> bool {
    db.query_one(
        "SELECT (m->>'pending')::bigint = (SELECT count(*) FROM triggers.events WHERE status = 'pending')
            AND (m->>'delivered')::bigint = (SELECT count(*) FROM triggers.events WHERE status = 'delivered')
            AND (m->>'failed')::bigint = (SELECT count(*) FROM triggers.events WHERE status = 'failed')
           FROM triggers.metrics(NULL) m",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}
