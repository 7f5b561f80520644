//! The scale-out harness (issue 17): what the PL/Proxy proxy costs, on one machine. One
//! private cluster holds two node databases (plain `triggers` installs) and a proxy
//! database (`triggers_proxy` over a cluster of 8 partitions, 4 per node). Measured in
//! the same run, alternating which side goes first:
//! - `SELECT triggers.enqueue(...)` through the proxy, 8 connections, tenants of both
//!   nodes, vs the same call directly on one node, 8 connections;
//! - HTTP `POST /events`, 64 keep-alive connections, against a server over the proxy
//!   and its two nodes vs a server on one node (router and workers in this process);
//! - then how long moving a partition to a new node keeps it paused, with
//!   `--move-events` (100,000) stored events of its tenants and as many queued.
//!
//! On 2 cores this shows the proxy's cost, not scaling: every side shares the same CPUs.
//!
//! ```text
//! bash scripts/setup.sh --release
//! cargo run --release -p triggers-benches --bin triggers-proxy-load [-- --seconds 5 --move-events 100000]
//! ```

#[path = "common.rs"]
mod common;
#[path = "wire.rs"]
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_postgres::Config;

const PARTITIONS: usize = 8;
const SECRETS_KEY: &str = "triggers-proxy-load-throwaway-secrets-key-0123456789";

/// `conns` connections calling `sql` with a tenant each (round robin over `tenants`)
/// back to back for `secs`: calls per second.
async fn rate(config: &Config, conns: usize, secs: f64, sql: &str, tenants: &[String]) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = (0..conns).map(|c| {
        let (config, sql, done) = (config.clone(), sql.to_string(), done.clone());
        let tenants = tenants.to_vec();
        tokio::spawn(async move {
            let db = common::connect(&config).await;
            let statement = db.prepare(&sql).await.expect("prepare");
            let mut i = c;
            while Instant::now() < until {
                db.execute(&statement, &[&tenants[i % tenants.len()]])
                    .await
                    .expect("call");
                i += conns;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    join_all(tasks).await;
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// `conns` keep-alive connections POSTing one event each back to back for `secs`,
/// each connection with its own key (tenant): requests per second.
async fn post_rate(addr: &str, keys: &[String], conns: usize, secs: f64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = (0..conns).map(|c| {
        let request = wire::request(
            "POST",
            "/events",
            &keys[c % keys.len()],
            r#"{"payload":{"n":1}}"#,
        );
        let (addr, done) = (addr.to_string(), done.clone());
        tokio::spawn(async move {
            let mut conn = wire::Conn::open(&addr).await;
            while Instant::now() < until {
                let (status, body) = conn.send(&request).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    join_all(tasks).await;
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Serves the API on `client` over `shards` with 2 workers per node; returns the
/// address.
async fn serve(client: triggers_client::Client, shards: triggers_server::shards::Shards) -> String {
    let state = triggers_server::http::AppState::over(
        client.clone(),
        shards.clone(),
        triggers_server::http::Settings::unlimited(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, triggers_server::http::app(state)).await });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::mem::forget(stop);
    for node in shards.nodes() {
        for id in 0..2 {
            tokio::spawn(triggers_server::workers::processing::run(
                id,
                node.dedicated().unwrap_or_else(|| node.clone()),
                Default::default(),
                stopped.clone(),
            ));
        }
    }
    addr
}

fn keyed(config: &Config) -> triggers_client::Client {
    triggers_client::Client::from_config(
        triggers_server::db::with_key(config.clone(), SECRETS_KEY),
        16,
    )
    .expect("client")
}

#[tokio::main]
async fn main() {
    let secs = common::seconds_arg(5.0);
    let (mut cluster, dir) = common::private_cluster("triggers-proxy-load").await;
    // Each proxy backend holds a connection to every node it called (PL/Proxy's way; a
    // pooler such as PgBouncer goes between in production): more than the default 100.
    common::connect(&cluster.config())
        .await
        .batch_execute("ALTER SYSTEM SET max_connections = 400")
        .await
        .unwrap();
    cluster.stop();
    let mut cluster =
        triggers_server::embedded::Cluster::start(&triggers_server::embedded::ClusterOptions {
            data_dir: dir.clone(),
            pg_config: None,
        })
        .await
        .expect("restart the cluster");
    let base = cluster.config();
    let admin = common::connect(&base).await;
    let mut nodes = Vec::new();
    for name in ["node0", "node1", "single"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut config = base.clone();
        config.dbname(name);
        common::connect(&config)
            .await
            .batch_execute("CREATE EXTENSION triggers CASCADE")
            .await
            .unwrap();
        nodes.push(config);
    }
    let single = nodes.pop().unwrap();
    admin.batch_execute("CREATE DATABASE proxy").await.unwrap();
    let mut proxy = base.clone();
    proxy.dbname("proxy");
    let port = base.get_ports()[0];
    let entries: Vec<String> = (0..PARTITIONS)
        .map(|p| format!("p{p} 'dbname=node{} host=127.0.0.1 port={port}'", p % 2))
        .collect();
    common::connect(&proxy)
        .await
        .batch_execute(&format!(
            "CREATE EXTENSION plproxy;
             CREATE SERVER triggers FOREIGN DATA WRAPPER plproxy OPTIONS ({});
             CREATE USER MAPPING FOR PUBLIC SERVER triggers OPTIONS (user '{}', password '{}');
             CREATE EXTENSION triggers_proxy;",
            entries.join(", "),
            base.get_user().unwrap(),
            String::from_utf8_lossy(base.get_password().unwrap())
        ))
        .await
        .unwrap();

    // Tenants: 64 spread over both nodes for the proxy; those on node 0 for node 0.
    let proxy_client = keyed(&proxy);
    let all: Vec<String> = (0..64).map(|i| format!("tenant-{i}")).collect();
    let mut on_node0 = Vec::new();
    for tenant in &all {
        if proxy_client.partition_of(tenant, PARTITIONS).await.unwrap() % 2 == 0 {
            on_node0.push(tenant.clone());
        }
    }
    println!("one private cluster, 2 cores: node0, node1 and the proxy (8 partitions) in it; {secs} s per measurement\n");
    println!("| measure | through the proxy | directly on a node | ratio | target |");
    println!("|---|---|---|---|---|");

    const ENQUEUE: &str = "SELECT triggers.enqueue('{\"n\": 1}'::jsonb, tenant => $1)";
    let (mut through, mut direct) = (0.0, 0.0);
    for round in 0..2 {
        for side in [round, 1 - round] {
            if side == 0 {
                direct += rate(&nodes[0], 8, secs / 2.0, ENQUEUE, &on_node0).await / 2.0;
            } else {
                through += rate(&proxy, 8, secs / 2.0, ENQUEUE, &all).await / 2.0;
            }
        }
    }
    println!(
        "| `enqueue`, 8 connections | {through:.0} calls/s | {direct:.0} calls/s | {:.2} | ≥ 0.6 |",
        through / direct
    );

    // HTTP: a server over the proxy and both nodes vs one on a database of its own.
    let node_clients: Vec<triggers_client::Client> = nodes.iter().map(keyed).collect();
    let shards = triggers_server::shards::Shards::discover(proxy_client.clone(), node_clients)
        .await
        .expect("the partition map");
    let sharded_addr = serve(proxy_client.clone(), shards).await;
    let single_client = keyed(&single);
    let single_addr = serve(
        single_client.clone(),
        triggers_server::shards::Shards::single(single_client.clone()),
    )
    .await;
    let mut sharded_keys = Vec::new();
    let mut single_keys = Vec::new();
    for tenant in all.iter().take(64) {
        sharded_keys.push(proxy_client.create_api_key(tenant, "load").await.unwrap());
        single_keys.push(single_client.create_api_key(tenant, "load").await.unwrap());
    }
    let (mut sharded_rate, mut single_rate) = (0.0, 0.0);
    for round in 0..2 {
        for side in [round, 1 - round] {
            if side == 0 {
                single_rate += post_rate(&single_addr, &single_keys, 64, secs / 2.0).await / 2.0;
            } else {
                sharded_rate += post_rate(&sharded_addr, &sharded_keys, 64, secs / 2.0).await / 2.0;
            }
        }
    }
    println!(
        "| HTTP `POST /events`, 64 connections (server over the proxy and 2 nodes vs over 1 node) | {sharded_rate:.0} req/s | {single_rate:.0} req/s | {:.2} | ≥ 0.7 |",
        sharded_rate / single_rate
    );

    // What the checks a move relies on cost every call while no partition moves: the
    // node's `_placement_error` in each enqueue, the proxy's `_open` in each routing.
    let loop_us = |db: Config, call: &'static str| async move {
        let db = common::connect(&db).await;
        let sql = format!(
            "DO $$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
               FOR i IN 1..20000 LOOP PERFORM {call}; END LOOP;
               RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0);
             END $$"
        );
        let started = Instant::now();
        db.batch_execute(&sql).await.unwrap();
        started.elapsed().as_secs_f64() * 1e6 / 20000.0
    };
    let placement = loop_us(single.clone(), "triggers._placement_error('tenant-1')").await;
    let enqueue = loop_us(
        single.clone(),
        "triggers.enqueue('{\"n\": 1}', tenant => 'tenant-1')",
    )
    .await;
    let open = loop_us(proxy.clone(), "triggers._route('tenant-1')").await;
    let hash = loop_us(proxy.clone(), "hashtext('tenant-1')").await;
    println!(
        "\nper call, no partition moving (20,000 in a DO loop): the node's placement check {placement:.1} µs \
         in an enqueue of {enqueue:.1} µs ({:.1} %); the proxy's routing with its pause check {open:.1} µs \
         vs hashtext alone {hash:.1} µs",
        100.0 * placement / enqueue
    );

    // Moving a partition: node 0's partition 0 to a new node, with `--move-events`
    // stored events (and as many again queued) of its tenants.
    let events: i64 = common::arg("--move-events")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    admin.batch_execute("CREATE DATABASE spare").await.unwrap();
    let mut spare = base.clone();
    spare.dbname("spare");
    let mut in_p0 = Vec::new();
    for tenant in &all {
        if proxy_client.partition_of(tenant, PARTITIONS).await.unwrap() == 0 {
            in_p0.push(tenant.clone());
        }
    }
    let node0 = common::connect(&nodes[0]).await;
    let fill = |n: i64| {
        let node0 = &node0;
        let in_p0 = &in_p0;
        async move {
            for chunk in 0..n / 1000 {
                let tenant = &in_p0[chunk as usize % in_p0.len()];
                node0
                    .execute(
                        "SELECT triggers.enqueue_batch((SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', i)))
                                                          FROM generate_series(1, 1000) i), $1)",
                        &[tenant],
                    )
                    .await
                    .unwrap();
            }
        }
    };
    fill(events).await;
    while node0
        .query_one("SELECT read FROM triggers.process_batch(1000)", &[])
        .await
        .unwrap()
        .get::<_, i32>(0)
        > 0
    {}
    fill(events).await;
    let url = |config: &Config| {
        format!(
            "postgres://{}:{}@127.0.0.1:{port}/{}",
            config.get_user().unwrap(),
            String::from_utf8_lossy(config.get_password().unwrap()),
            config.get_dbname().unwrap()
        )
    };
    let args = triggers_server::cli::PartitionsMoveArgs {
        partition: 0,
        from: url(&nodes[0]),
        to: url(&spare),
        entry: None,
        other_proxies: Vec::new(),
        abort: false,
        db: triggers_server::cli::DbArgs {
            database_url: Some(url(&proxy)),
            data_dir: dir.join("unused"),
            pg_config: None,
            secrets_key_file: None,
            nodes: Vec::new(),
        },
    };
    let started = Instant::now();
    triggers_server::partitions::partitions(triggers_server::cli::PartitionsCommand::Move(args))
        .await
        .expect("the move");
    let took = started.elapsed().as_secs_f64();
    println!(
        "\nmoving partition 0 ({} tenants; {events} stored events and {events} queued) to a new node: \
         paused {took:.1} s, {:.0} events/s",
        in_p0.len(),
        2.0 * events as f64 / took
    );
    drop(admin);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
