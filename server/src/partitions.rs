//! `triggers partitions`: the partition map of a sharded layout, and moving one
//! partition's tenants to another node (README → Scale-out → Moving a partition).
//!
//! A move, each step safe to repeat (a move cut short is finished by running it again,
//! or given up with `--abort` until its rows were copied):
//!
//! 1. pause the partition at the proxy (its calls get 57P03, HTTP 503) and wait for the
//!    proxy's transactions that began before;
//! 2. fence it on the source (`partition_fence`: its events refused there, its queued
//!    messages and webhook deliveries hidden from the source's workers), wait for the
//!    source's transactions that began before, and fence again until nothing is left
//!    to hide and nothing is held by a worker;
//! 3. copy every row of its tenants from one snapshot of the source into the target
//!    (binary COPY into staging tables, then `partition_import`, one transaction);
//! 4. switch its entry in the proxy's cluster to the target, and check the proxy
//!    reaches the target there;
//! 5. delete its rows on the source (`partition_drop`; it stays refused there);
//! 6. resume it at the proxy.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::{SinkExt, StreamExt};
use triggers_client::Client;

use crate::cli::{PartitionsCommand, PartitionsMoveArgs};
use crate::db;
use crate::error::StartupError;

/// How long a move waits for transactions that began before a step (then it stops,
/// with the partition still paused: run it again, or `--abort`).
const PATIENCE: Duration = Duration::from_secs(300);
/// How often a wait looks again, and says what it waits for.
const POLL: Duration = Duration::from_millis(50);
const SAY_EVERY: Duration = Duration::from_secs(5);

fn failed(what: &str, e: impl std::fmt::Display) -> StartupError {
    StartupError::Command(format!("{what}: {e}"))
}

/// `triggers partitions …`
pub async fn partitions(command: PartitionsCommand) -> Result<(), StartupError> {
    match command {
        PartitionsCommand::List { db } => {
            let proxy = proxy_of(&db).await?;
            let conn = proxy.pool().get().await.map_err(|e| failed("proxy", e))?;
            let rows = conn
                .query(
                    "SELECT p - 1, e, EXISTS (SELECT 1 FROM triggers.paused_partitions x WHERE x.part = p - 1)
                       FROM triggers.partition_entries() WITH ORDINALITY u(e, p) ORDER BY p",
                    &[],
                )
                .await
                .map_err(|e| failed("proxy", e))?;
            for row in rows {
                let (part, entry, paused): (i64, String, bool) =
                    (row.get(0), row.get(1), row.get(2));
                println!(
                    "{}",
                    serde_json::json!({"partition": part, "entry": entry, "paused": paused})
                );
            }
            Ok(())
        }
        PartitionsCommand::Move(args) => move_partition(args).await,
    }
}

/// The proxy of DATABASE_URL.
async fn proxy_of(args: &crate::cli::DbArgs) -> Result<Client, StartupError> {
    let url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| {
            StartupError::Database(
                "DATABASE_URL must name the proxy database (with triggers_proxy)".into(),
            )
        })?;
    db::proxy(url, "DATABASE_URL").await
}

/// A step's connection, in a transaction of the default kind, committed by `commit`.
type Conn = deadpool_postgres::Object;

async fn conn(client: &Client, what: &str) -> Result<Conn, StartupError> {
    client.pool().get().await.map_err(|e| failed(what, e))
}

/// A query's one value.
async fn one<T>(
    conn: &Conn,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<T, StartupError>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    conn.query_one(sql, params)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed(what, db_message(&e)))
}

/// Runs a statement.
async fn exec(
    conn: &Conn,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), StartupError> {
    conn.execute(sql, params)
        .await
        .map(|_| ())
        .map_err(|e| failed(what, db_message(&e)))
}

/// A database error's own message (a node's, through PL/Proxy: without its prefix).
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// `triggers partitions move`
async fn move_partition(args: PartitionsMoveArgs) -> Result<(), StartupError> {
    let proxy = proxy_of(&args.db).await?;
    let source = db::node(&args.from, "--from").await?;
    let target = db::node(&args.to, "--to").await?;
    let entries = proxy
        .partition_entries()
        .await
        .map_err(|e| failed("proxy", e))?;
    let partitions = entries.len() as i32;
    let part = args.partition as i32;
    if part >= partitions {
        return Err(StartupError::Command(format!(
            "the proxy's cluster has partitions 0 to {}; there is no partition {part}",
            partitions - 1
        )));
    }
    // DATABASE_URL's proxy, then the others: each pauses, switches and resumes.
    let mut proxies = vec![(conn(&proxy, "proxy").await?, "the proxy".to_string())];
    for (i, url) in args.other_proxies.iter().enumerate() {
        let what = format!("--other-proxies entry {}", i + 1);
        let other = db::proxy(url, &what).await?;
        proxies.push((conn(&other, &what).await?, what));
    }
    let s = conn(&source, "--from").await?;
    let t = conn(&target, "--to").await?;
    for (c, what) in proxies
        .iter()
        .map(|(c, w)| (c, w.as_str()))
        .chain([(&s, "--from"), (&t, "--to")])
    {
        let allowed: bool = one(
            c,
            what,
            "SELECT r.rolsuper OR pg_has_role('pg_read_all_stats', 'member') FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
        if !allowed {
            return Err(StartupError::Command(format!(
                "{what}: moving a partition waits for other sessions' transactions, which needs a \
                 superuser or a member of pg_read_all_stats"
            )));
        }
    }
    let versions: Vec<String> = vec![
        one(&s, "--from", "SELECT triggers.version()", &[]).await?,
        one(&t, "--to", "SELECT triggers.version()", &[]).await?,
    ];
    if versions[0] != versions[1] {
        return Err(StartupError::Command(format!(
            "--from has triggers {} and --to {}: update them to the same version first",
            versions[0], versions[1]
        )));
    }
    let source_node: String = one(&s, "--from", "SELECT triggers._node(NULL)", &[]).await?;
    let target_node: String = one(&t, "--to", "SELECT triggers._node(NULL)", &[]).await?;
    if source_node == target_node {
        return Err(StartupError::Command(
            "--from and --to are the same database".into(),
        ));
    }
    // Which node each proxy routes the partition to: --from, or --to after a switch.
    let mut switched = Vec::new();
    for (p, what) in &proxies {
        let serving: String = one(p, what, "SELECT triggers.partition_node($1)", &[&part]).await?;
        if serving != source_node && serving != target_node {
            return Err(StartupError::Command(format!(
                "{what} routes partition {part} to {serving}, which is neither --from ({source_node}) nor --to ({target_node})"
            )));
        }
        switched.push(serving == target_node);
    }
    let imported: bool = one(
        &t,
        "--to",
        "SELECT EXISTS (SELECT 1 FROM triggers.partition_moves m WHERE m.partitions = $1 AND m.part = $2 AND m.state = 'in')",
        &[&partitions, &part],
    )
    .await?;
    let entry = args
        .entry
        .clone()
        .unwrap_or_else(|| entry_for(&args.to, &entries));

    if args.abort {
        if imported || switched.contains(&true) {
            return Err(StartupError::Command(format!(
                "partition {part} was copied to --to already: finish the move (run it again without --abort)"
            )));
        }
        let n: i64 = one(
            &s,
            "--from",
            "SELECT triggers.partition_unfence($1, $2)",
            &[&partitions, &part],
        )
        .await?;
        for (p, what) in &proxies {
            exec(p, what, "SELECT triggers.partition_resume($1)", &[&part]).await?;
        }
        say(&format!("partition {part}: move given up; {n} messages and deliveries are --from's again, its calls are served"));
        return Ok(());
    }

    let started = Instant::now();
    let mut rows = serde_json::Map::new();
    if switched.contains(&false) {
        say(&format!(
            "partition {part} of {partitions}: pausing it at {} prox{}",
            proxies.len(),
            if proxies.len() == 1 { "y" } else { "ies" }
        ));
        for (p, what) in &proxies {
            exec(p, what, "SELECT triggers.partition_pause($1)", &[&part]).await?;
        }
        for (p, what) in &proxies {
            wait_for_older(p, what).await?;
        }
        if !imported {
            fence(&s, partitions, part).await?;
            say("copying its rows to --to");
            rows = copy(&s, &t, partitions, part).await?;
        }
        say(&format!("switching p{part} to '{entry}'"));
        for ((p, what), done) in proxies.iter().zip(&switched) {
            if *done {
                continue;
            }
            set_entry(p, what, part, &entry).await?;
            let now: String = one(p, what, "SELECT triggers.partition_node($1)", &[&part]).await?;
            if now != target_node {
                set_entry(p, what, part, &entries[part as usize]).await?;
                return Err(StartupError::Command(format!(
                    "{what}: the entry '{entry}' reaches {now}, not --to ({target_node}); p{part} is back on \
                     --from there and still paused: run again with --entry naming --to as the proxies reach it"
                )));
            }
        }
    }
    // Switched everywhere (now, or by a run cut short after): the source's rows go.
    let dropped = s
        .query(
            "SELECT d.name, d.rows FROM triggers.partition_drop($1, $2) d
              WHERE EXISTS (SELECT 1 FROM triggers.partition_moves m WHERE m.partitions = $1 AND m.part = $2)",
            &[&partitions, &part],
        )
        .await
        .map_err(|e| failed("--from", db_message(&e)))?;
    let deleted: i64 = dropped.iter().map(|r| r.get::<_, i64>(1)).sum();
    for (p, what) in &proxies {
        exec(p, what, "SELECT triggers.partition_resume($1)", &[&part]).await?;
    }
    let copied: i64 = rows.values().filter_map(|v| v.as_i64()).sum();
    say(&format!(
        "partition {part} is on --to: {copied} rows copied, {deleted} deleted from --from, paused {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    println!(
        "{}",
        serde_json::json!({
            "partition": part,
            "partitions": partitions,
            "from": source_node,
            "to": target_node,
            "entry": entry,
            "copied": rows,
            "deleted_from_source": deleted,
            "paused_ms": started.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}

fn say(what: &str) {
    eprintln!("{what}");
}

/// Sets partition `part`'s entry in the proxy's cluster `triggers`.
async fn set_entry(proxy: &Conn, what: &str, part: i32, entry: &str) -> Result<(), StartupError> {
    let sql: String = one(
        proxy,
        what,
        "SELECT format('ALTER SERVER triggers OPTIONS (SET %I %L)', 'p' || $1::int, $2::text)",
        &[&part, &entry],
    )
    .await?;
    proxy
        .batch_execute(&sql)
        .await
        .map_err(|e| failed(&format!("{what}: switching the entry"), db_message(&e)))
}

/// Waits until every transaction of this database that began before now has ended.
async fn wait_for_older(conn: &Conn, what: &str) -> Result<(), StartupError> {
    let since: chrono::DateTime<chrono::Utc> =
        one(conn, what, "SELECT clock_timestamp()", &[]).await?;
    let mut wait = Wait::new();
    loop {
        let row = conn
            .query_one(
                "SELECT count(*), coalesce(string_agg(a.pid::text, ', '), '')
                   FROM pg_catalog.pg_stat_activity a
                  WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                    AND a.backend_type = 'client backend' AND a.xact_start < $1",
                &[&since],
            )
            .await
            .map_err(|e| failed(what, db_message(&e)))?;
        let (n, pids): (i64, String) = (row.get(0), row.get(1));
        if n == 0 {
            return Ok(());
        }
        wait.again(
            || format!("waiting on {what} for {n} transactions that began before the pause (pids {pids})"),
            || format!("{what}: transactions that began before the pause are still open (pids {pids})"),
        )
        .await?;
    }
}

/// A step's wait: it gives up after [`PATIENCE`], and says what it waits for every
/// [`SAY_EVERY`].
struct Wait {
    started: Instant,
    said: Instant,
}

impl Wait {
    fn new() -> Wait {
        Wait {
            started: Instant::now(),
            said: Instant::now(),
        }
    }

    /// Before looking again: `waiting` said now and then, the error `gave_up` past
    /// [`PATIENCE`] (the partition stays paused), else a pause of [`POLL`].
    async fn again(
        &mut self,
        waiting: impl FnOnce() -> String,
        gave_up: impl FnOnce() -> String,
    ) -> Result<(), StartupError> {
        if self.started.elapsed() > PATIENCE {
            return Err(StartupError::Command(format!(
                "{} after {} s; the partition stays paused: run the move again, or --abort",
                gave_up(),
                PATIENCE.as_secs()
            )));
        }
        if self.said.elapsed() >= SAY_EVERY {
            say(&waiting());
            self.said = Instant::now();
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}

/// Step 2: fences the partition on the source until nothing of it can change there.
async fn fence(source: &Conn, partitions: i32, part: i32) -> Result<(), StartupError> {
    let sql = "SELECT f.hidden, f.busy FROM triggers.partition_fence($1, $2) f";
    let fenced = |row: tokio_postgres::Row| (row.get::<_, i64>(0), row.get::<_, i64>(1));
    let first = source
        .query_one(sql, &[&partitions, &part])
        .await
        .map_err(|e| failed("--from", db_message(&e)))?;
    let (hidden, _) = fenced(first);
    say(&format!(
        "fenced it on --from ({hidden} queued messages and deliveries hidden from its workers)"
    ));
    // Producers that passed the check before the fence committed.
    wait_for_older(source, "--from").await?;
    let mut wait = Wait::new();
    loop {
        let row = source
            .query_one(sql, &[&partitions, &part])
            .await
            .map_err(|e| failed("--from", db_message(&e)))?;
        let (hidden, busy) = fenced(row);
        if hidden == 0 && busy == 0 {
            return Ok(());
        }
        wait.again(
            || format!("waiting for --from's workers to let go of {busy} messages or deliveries"),
            || format!("--from: {busy} messages or deliveries of the partition are still held by workers"),
        )
        .await?;
    }
}

/// Step 3: every row of the partition, from one snapshot of the source, into the
/// target in one transaction. Rows per table.
async fn copy(
    source: &Conn,
    target: &Conn,
    partitions: i32,
    part: i32,
) -> Result<serde_json::Map<String, serde_json::Value>, StartupError> {
    let from = |e: tokio_postgres::Error| failed("--from", db_message(&e));
    let to = |e: tokio_postgres::Error| failed("--to", db_message(&e));
    source
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(from)?;
    target.batch_execute("BEGIN").await.map_err(to)?;
    let result = async {
        let tables = source
            .query(
                "SELECT t.name, t.query FROM triggers.partition_tables($1, $2) t",
                &[&partitions, &part],
            )
            .await
            .map_err(from)?;
        target
            .batch_execute("SELECT triggers.partition_stage()")
            .await
            .map_err(to)?;
        for table in tables {
            let (name, query): (String, String) = (table.get(0), table.get(1));
            let out = source
                .copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
                .await
                .map_err(from)?;
            let sink = target
                .copy_in::<_, Bytes>(&format!(
                    "COPY pg_temp.\"move_{name}\" FROM STDIN (FORMAT binary)"
                ))
                .await
                .map_err(to)?;
            futures_util::pin_mut!(out);
            futures_util::pin_mut!(sink);
            while let Some(chunk) = out.next().await {
                sink.send(chunk.map_err(from)?).await.map_err(to)?;
            }
            sink.finish().await.map_err(to)?;
        }
        let imported = target
            .query(
                "SELECT i.name, i.rows FROM triggers.partition_import($1, $2) i",
                &[&partitions, &part],
            )
            .await
            .map_err(to)?;
        let mut rows = serde_json::Map::new();
        for row in imported {
            rows.insert(row.get(0), serde_json::json!(row.get::<_, i64>(1)));
        }
        Ok::<_, StartupError>(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            target.batch_execute("COMMIT").await.map_err(to)?;
            source.batch_execute("COMMIT").await.map_err(from)?;
            Ok(rows)
        }
        Err(e) => {
            let _ = target.batch_execute("ROLLBACK").await;
            let _ = source.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// The entry of the database `url` names, as the proxy's cluster should hold it: an
/// existing entry naming the same host, port and database (so that calls on all nodes
/// reach it once), else `dbname=… host=… port=…` (the user mapping gives the user).
fn entry_for(url: &str, entries: &[String]) -> String {
    let Ok(config) = triggers_client::ConnectConfig::parse(url).map(|c| c.postgres) else {
        return url.to_string();
    };
    let wanted = crate::shards::identity(&config);
    for entry in entries {
        if let Ok(existing) = entry.parse::<tokio_postgres::Config>() {
            if crate::shards::identity(&existing) == wanted {
                return entry.clone();
            }
        }
    }
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        "dbname={} host={} port={}",
        quote(&wanted.2),
        quote(&wanted.0),
        wanted.1
    )
}
