//! Moving a partition to a new node (issue 17, README → Scale-out → Moving a
//! partition): `triggers partitions move` with DATABASE_URL the proxy, two nodes and a
//! third, empty one to move to.
//!
//! Under load: a server over the proxy and the three nodes; producers of three tenants
//! of the moving partition and two of others resend each event until it is accepted,
//! before, during and after the move; a live-stream subscriber and a webhook endpoint of
//! a moving tenant. Afterwards every accepted event exists exactly once, the moving
//! tenants' on the new node only and nothing of them on the old one; the stream went on
//! with every event once; every event was delivered to the webhook once; keys, the
//! stream's numbering, dead letters and metrics came along.
//!
//! Cut short: with two proxy databases, the move waits for a transaction open on the
//! old node, and is killed there. Meanwhile the partition's calls are refused (503) and
//! the old node refuses its events; `--abort` gives it back; a second move killed the
//! same way is finished by running it again (both proxies then route to the new node),
//! and running it once more changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use triggers_client::{Client, DebugFlag, Error, NewEvent};
use triggers_tests::hooks::Receiver;
use triggers_tests::sharded::Sharded;
use triggers_tests::sse::Sse;
use triggers_tests::{
    connect, database_url, free_port, run, scalar, send_until_accepted, test_database, triggers,
    wait_until, Server, TempDir,
};

const PARTITIONS: usize = 8;
/// The partition that moves: on node 0 (partition p is on node p % 2).
const MOVING: i32 = 2;

/// Two nodes and a proxy, and a third node with no partition yet.
struct Layout {
    sharded: Sharded,
    spare: tokio_postgres::Config,
    proxy_url: String,
    /// Node 0, node 1, the spare.
    urls: Vec<String>,
    /// Other proxy databases over the same nodes, moved along (`--other-proxies`).
    others: Vec<Sharded>,
}

impl Layout {
    async fn new(name: &str) -> Layout {
        let sharded = Sharded::new(name, 2, PARTITIONS).await;
        let spare = test_database(&format!("{name}_n2")).await;
        let proxy_url = database_url(&sharded.proxy);
        let mut urls: Vec<String> = sharded.nodes.iter().map(database_url).collect();
        urls.push(database_url(&spare));
        Layout {
            sharded,
            spare,
            proxy_url,
            urls,
            others: Vec::new(),
        }
    }

    /// A second proxy database over the same two nodes.
    async fn another_proxy(&mut self, name: &str) {
        let user = self.sharded.proxy.get_user().unwrap().to_string();
        let password =
            String::from_utf8_lossy(self.sharded.proxy.get_password().unwrap()).into_owned();
        let other = Sharded::over(
            name,
            self.sharded.nodes.clone(),
            PARTITIONS,
            &user,
            &password,
        )
        .await;
        self.others.push(other);
    }

    /// `n` tenants named `<prefix>-<i>` in `partition`.
    async fn tenants_in(&self, prefix: &str, partition: i32, n: usize) -> Vec<String> {
        let proxy = connect(&self.sharded.proxy).await;
        let candidates: Vec<String> = (0..2000).map(|i| format!("{prefix}-{i}")).collect();
        let rows = proxy
            .query(
                "SELECT t FROM unnest($1::text[]) WITH ORDINALITY u(t, i)
                  WHERE triggers.partition_of(t, $2) = $3 ORDER BY i LIMIT $4",
                &[&candidates, &(PARTITIONS as i32), &partition, &(n as i64)],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), n);
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// `triggers partitions move <MOVING> --from node 0 --to the spare`, and `extra`.
    fn move_command(&self, extra: &[&str]) -> Command {
        let mut command = triggers(&["partitions", "move", &MOVING.to_string()]);
        command
            .env("DATABASE_URL", &self.proxy_url)
            .args(["--from", &self.urls[0], "--to", &self.urls[2]])
            .args(extra);
        if !self.others.is_empty() {
            let others: Vec<String> = self.others.iter().map(|o| database_url(&o.proxy)).collect();
            command.args(["--other-proxies", &others.join(",")]);
        }
        command
    }

    /// Runs the move to its end; its JSON summary.
    fn run_move(&self, extra: &[&str]) -> Value {
        let done = run(self.move_command(extra), Duration::from_secs(300));
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "the move failed: {stderr}");
        println!("{stderr}");
        serde_json::from_slice(&done.stdout).unwrap_or(Value::Null)
    }

    /// Rows of the moving partition's tenants in each table of a node.
    async fn partition_rows(&self, node: &tokio_postgres::Config) -> BTreeMap<String, i64> {
        let db = connect(node).await;
        let mut rows = BTreeMap::new();
        for table in db
            .query(
                "SELECT t.name, t.query FROM triggers.partition_tables($1, $2) t",
                &[&(PARTITIONS as i32), &MOVING],
            )
            .await
            .unwrap()
        {
            let (name, query): (String, String) = (table.get(0), table.get(1));
            let n = scalar(&db, &format!("SELECT count(*) FROM ({query}) q")).await;
            if n > 0 {
                rows.insert(name, n);
            }
        }
        rows
    }
}

/// Follows a tenant's live stream from its first event, reconnecting with the last id
/// it got whenever the server ends it; every event id received, in order.
fn follow(url: String, key: String) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let into = got.clone();
    let task = tokio::spawn(async move {
        // From the start: every event the tenant has.
        let mut last = Some("0".to_string());
        loop {
            let mut stream = Sse::connect(&url, &key, last.as_deref(), &[]).await;
            if stream.status != 200 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            while let Some(frame) = stream.next_event(Duration::from_secs(3600)).await {
                let event: Value = serde_json::from_str(&frame.data).unwrap();
                into.lock()
                    .unwrap()
                    .push(event["event_id"].as_str().unwrap().to_string());
                last = frame.id;
            }
        }
    });
    (got, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_a_partition_under_load_loses_and_repeats_nothing() {
    let layout = Layout::new("move_load").await;
    let tmp = TempDir::new("move-load");
    let moving = layout.tenants_in("mv", MOVING, 3).await;
    let staying = [
        layout.tenants_in("st", 4, 1).await.remove(0), // node 0 too
        layout.tenants_in("st", 3, 1).await.remove(0), // node 1
    ];
    let tenants: Vec<String> = moving.iter().chain(&staying).cloned().collect();
    let proxy = Client::from_config(layout.sharded.proxy.clone(), 2).unwrap();
    let mut keys = Vec::new();
    for tenant in &tenants {
        keys.push(proxy.create_api_key(tenant, "move").await.unwrap());
    }

    let mut command = triggers(&["serve"]);
    command
        .env("DATABASE_URL", &layout.proxy_url)
        .env("TRIGGERS_NODES", layout.urls.join(","))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--rate-limit",
            "0",
            "--webhook-allow-private",
            "--secrets-key-file",
        ])
        .arg(tmp.join("secrets-key"));
    let server = Server::start(command);
    assert!(server.banner.contains("over 3 nodes"), "{}", server.banner);
    let base = server.url.clone();
    let http = reqwest::Client::new();

    // A webhook endpoint and a live-stream subscriber of a moving tenant.
    let receiver = Receiver::start().await;
    let created: Value = http
        .post(format!("{base}/webhooks/endpoints"))
        .bearer_auth(&keys[0])
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["data"]["secret"].as_str().unwrap().to_string();
    let (streamed, follower) = follow(format!("{base}/inbox/stream"), keys[0].clone());

    // Before the producers (with the endpoint there, so each is delivered): a stream of
    // three events, a dead letter, a tenant weight.
    for n in 0..3 {
        proxy
            .enqueue(
                &NewEvent::new(json!({"n": n}))
                    .tenant(&moving[0])
                    .stream("orders"),
            )
            .await
            .unwrap();
    }
    let dead = proxy
        .enqueue(
            &NewEvent::new(json!({"dead": true}))
                .tenant(&moving[1])
                .debug(DebugFlag::DlqRouting),
        )
        .await
        .unwrap()
        .event_id;
    connect(&layout.sharded.nodes[0])
        .await
        .batch_execute(&format!(
            "INSERT INTO triggers.tenants (tenant, weight) VALUES ('{}', 7)",
            moving[2]
        ))
        .await
        .unwrap();

    // Producers: each tenant's events one after another, each resent until accepted.
    const PER_TENANT: usize = 60;
    let accepted: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let producers: Vec<_> = tenants
        .iter()
        .zip(&keys)
        .map(|(tenant, key)| {
            let (http, base, key, tenant, accepted) = (
                http.clone(),
                base.clone(),
                key.clone(),
                tenant.clone(),
                accepted.clone(),
            );
            tokio::spawn(async move {
                for n in 0..PER_TENANT {
                    let idem = format!("{tenant}-{n}");
                    let id = send_until_accepted(&http, &base, &key, &idem).await;
                    accepted.lock().unwrap().insert(idem, (tenant.clone(), id));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    wait_until("a third of the events accepted", || async {
        accepted.lock().unwrap().len() >= tenants.len() * PER_TENANT / 3
    })
    .await;

    let summary = layout.run_move(&[]);
    assert_eq!(summary["partition"], MOVING);
    assert!(
        summary["copied"]["events"].as_i64().unwrap() > 0,
        "{summary}"
    );
    for producer in producers {
        producer.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), tenants.len() * PER_TENANT);
    // The stream goes on where it was: its fourth event.
    proxy
        .enqueue(
            &NewEvent::new(json!({"n": 3}))
                .tenant(&moving[0])
                .stream("orders"),
        )
        .await
        .unwrap();

    let nodes = [
        connect(&layout.sharded.nodes[0]).await,
        connect(&layout.sharded.nodes[1]).await,
        connect(&layout.spare).await,
    ];
    wait_until("every queue drained", || async {
        let mut queued = 0;
        for db in &nodes {
            queued += scalar(
                db,
                "SELECT count(*) FROM pgmq.q_triggers_events WHERE vt < now() + interval '1 hour'",
            )
            .await;
        }
        queued == 0
    })
    .await;

    // Every accepted event exactly once, on its tenant's node: the moving ones on the spare.
    let mut misplaced = Vec::new();
    for (idem, (tenant, id)) in &accepted {
        let mut found = Vec::new();
        for (i, db) in nodes.iter().enumerate() {
            let n = scalar(
                db,
                &format!("SELECT count(*) FROM triggers.events WHERE event_id = '{id}' AND idempotency_key = '{idem}'"),
            )
            .await;
            found.extend(std::iter::repeat_n(i, n as usize));
        }
        let home = if moving.contains(tenant) {
            2
        } else if *tenant == staying[0] {
            0
        } else {
            1
        };
        if found != [home] {
            misplaced.push(format!(
                "{idem} ({tenant}) on nodes {found:?}, not [{home}]"
            ));
        }
    }
    assert!(misplaced.is_empty(), "{misplaced:#?}");
    // Nothing of the partition is left on node 0; the spare holds every table's share.
    assert_eq!(
        layout.partition_rows(&layout.sharded.nodes[0]).await,
        BTreeMap::new()
    );
    let on_spare = layout.partition_rows(&layout.spare).await;
    for table in [
        "events",
        "api_keys",
        "webhook_endpoints",
        "webhook_deliveries",
        "streams",
        "dlq",
        "tenants",
    ] {
        assert!(
            on_spare.contains_key(table),
            "{table} not moved: {on_spare:?}"
        );
    }
    // Metrics equal what each node holds.
    for db in &nodes {
        assert!(
            triggers_tests::metrics_are_exact(db).await,
            "metrics equal count(*) by status"
        );
    }
    let m0 = proxy.metrics(Some(&moving[0])).await.unwrap();
    // 60 sent, 3 before on its stream, the stream's fourth.
    assert_eq!(m0.total as usize, PER_TENANT + 4, "{m0:?}");

    // Keys, the stream's numbering, the dead letter and the weight came along.
    for (tenant, key) in tenants.iter().zip(&keys) {
        assert_eq!(&proxy.authenticate(key).await.unwrap(), tenant);
    }
    assert_eq!(
        scalar(
            &nodes[2],
            &format!(
                "SELECT last_seq FROM triggers.streams WHERE tenant = '{}' AND stream = 'orders'",
                moving[0]
            )
        )
        .await,
        4
    );
    let letters = proxy.dead_letters(&moving[1], 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, Some(dead));
    assert_eq!(
        scalar(
            &nodes[2],
            &format!(
                "SELECT weight::bigint FROM triggers.tenants WHERE tenant = '{}'",
                moving[2]
            )
        )
        .await,
        7
    );
    // An event sent straight to node 0 for a moved tenant is refused there.
    let node0 = Client::from_config(layout.sharded.nodes[0].clone(), 1).unwrap();
    match node0
        .enqueue(&NewEvent::new(json!({"stray": true})).tenant(&moving[0]))
        .await
    {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains("no longer on this node"), "{message}")
        }
        other => panic!("a moved tenant's event on its old node: {other:?}"),
    }

    // The live stream went on across the move: every event of the tenant once, in order.
    let expected: Vec<String> = {
        let mut ids: Vec<(i64, String)> = nodes[2]
            .query(
                "SELECT position, event_id::text FROM triggers.events WHERE tenant = $1 AND position IS NOT NULL",
                &[&moving[0]],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    };
    wait_until("the stream caught up", || async {
        streamed.lock().unwrap().len() >= expected.len()
    })
    .await;
    follower.abort();
    let streamed = streamed.lock().unwrap().clone();
    let mut sorted = streamed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), streamed.len(), "no event streamed twice");
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want, "every stored event streamed");

    // Every event of the tenant delivered to its endpoint once, signed with its secret.
    wait_until("every webhook delivered", || async {
        receiver.hooks().len() >= expected.len()
    })
    .await;
    let hooks = receiver.hooks();
    let mut delivered: Vec<String> = hooks.iter().map(|h| h.id.clone()).collect();
    delivered.sort();
    assert_eq!(delivered, want, "each event delivered once");
    for hook in &hooks {
        hook.verify(&secret)
            .expect("signed with the endpoint's secret");
    }
    // A delivered webhook marks its event delivered: counted on the new node.
    wait_until("every delivery recorded", || async {
        proxy.metrics(Some(&moving[0])).await.unwrap().delivered as usize == PER_TENANT + 4
    })
    .await;
    drop(server);
}

/// Spawns the move, its output discarded.
fn spawn_move(layout: &Layout) -> Child {
    layout
        .move_command(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether the proxy has the moving partition paused and node 0 has it fenced.
async fn paused_and_fenced(proxy: &tokio_postgres::Client, node0: &tokio_postgres::Client) -> bool {
    scalar(
        proxy,
        &format!("SELECT count(*) FROM triggers.paused_partitions WHERE part = {MOVING}"),
    )
    .await
        == 1
        && scalar(
            node0,
            &format!("SELECT count(*) FROM triggers.partition_moves WHERE part = {MOVING} AND state = 'out'"),
        )
        .await
            == 1
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_cut_short_is_given_up_or_finished_by_running_it_again() {
    let mut layout = Layout::new("move_cut").await;
    layout.another_proxy("move_cut_second").await;
    let second_proxy = connect(&layout.others[0].proxy).await;
    let moving = layout.tenants_in("cut", MOVING, 2).await;
    let other = layout.tenants_in("cut", 6, 1).await.remove(0); // node 0, not moving
    let proxy = Client::from_config(layout.sharded.proxy.clone(), 2).unwrap();
    for tenant in &moving {
        for n in 0..20 {
            proxy
                .enqueue(&NewEvent::new(json!({"n": n})).tenant(tenant))
                .await
                .unwrap();
        }
    }
    let proxy_db = connect(&layout.sharded.proxy).await;
    let node0 = connect(&layout.sharded.nodes[0]).await;
    let node0_client = Client::from_config(layout.sharded.nodes[0].clone(), 1).unwrap();
    // A transaction open on node 0: the move waits for it once it has fenced.
    let open = connect(&layout.sharded.nodes[0]).await;
    open.batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();

    let mut first = spawn_move(&layout);
    wait_until("paused at both proxies and fenced on node 0", || async {
        paused_and_fenced(&proxy_db, &node0).await && paused_and_fenced(&second_proxy, &node0).await
    })
    .await;
    // Paused: the partition's calls are refused with a clear error, others served; its
    // events are refused on node 0 itself; its queued messages are hidden there.
    match proxy
        .enqueue(&NewEvent::new(json!({"n": "late"})).tenant(&moving[0]))
        .await
    {
        Err(Error::Unavailable(message)) => assert!(message.contains("is moving"), "{message}"),
        other => panic!("a paused partition's call: {other:?}"),
    }
    proxy
        .enqueue(&NewEvent::new(json!({"n": "other"})).tenant(&other))
        .await
        .unwrap();
    assert!(matches!(
        node0_client
            .enqueue(&NewEvent::new(json!({"n": "direct"})).tenant(&moving[1]))
            .await,
        Err(Error::Unavailable(_))
    ));
    assert_eq!(
        scalar(
            &node0,
            "SELECT count(*) FROM pgmq.q_triggers_events WHERE vt > '3000-01-01'"
        )
        .await,
        40
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // Given up: node 0's again, served, its messages visible.
    let summary = run(layout.move_command(&["--abort"]), Duration::from_secs(120));
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    proxy
        .enqueue(&NewEvent::new(json!({"n": 20})).tenant(&moving[0]))
        .await
        .unwrap();
    assert_eq!(
        scalar(
            &node0,
            "SELECT count(*) FROM pgmq.q_triggers_events WHERE vt > '3000-01-01'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(&node0, "SELECT count(*) FROM triggers.partition_moves").await,
        0
    );

    // Cut short again, then finished by running it again once the transaction ends.
    let mut second = spawn_move(&layout);
    wait_until("paused and fenced again", || async {
        paused_and_fenced(&proxy_db, &node0).await
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    open.batch_execute("COMMIT").await.unwrap();
    let summary = layout.run_move(&[]);
    assert_eq!(summary["copied"]["queue"], 41, "{summary}");
    assert_eq!(summary["copied"]["lanes"], 2, "{summary}");
    // Once more: nothing left to do.
    let again = layout.run_move(&[]);
    assert_eq!(again["copied"], json!({}), "{again}");
    assert_eq!(again["deleted_from_source"], 0, "{again}");
    let abort = run(layout.move_command(&["--abort"]), Duration::from_secs(120));
    assert_eq!(abort.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&abort.stderr).contains("copied to --to already"));

    // Served from the spare now, through either proxy; every message there, none on node 0.
    let spare = connect(&layout.spare).await;
    assert_eq!(
        scalar(&spare, "SELECT count(*) FROM pgmq.q_triggers_events").await,
        41
    );
    assert_eq!(
        layout.partition_rows(&layout.sharded.nodes[0]).await,
        BTreeMap::new()
    );
    proxy
        .enqueue(&NewEvent::new(json!({"n": 21})).tenant(&moving[0]))
        .await
        .unwrap();
    Client::from_config(layout.others[0].proxy.clone(), 1)
        .unwrap()
        .enqueue(&NewEvent::new(json!({"n": 22})).tenant(&moving[1]))
        .await
        .unwrap();
    assert_eq!(
        scalar(&spare, "SELECT count(*) FROM pgmq.q_triggers_events").await,
        43
    );
    let listed = run(
        {
            let mut c = triggers(&["partitions", "list"]);
            c.env("DATABASE_URL", &layout.proxy_url);
            c
        },
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&listed.stdout);
    let entry = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["partition"] == MOVING)
        .unwrap();
    assert!(
        entry["entry"]
            .as_str()
            .unwrap()
            .contains(layout.spare.get_dbname().unwrap()),
        "{entry}"
    );
    assert_eq!(entry["paused"], false);
}
