//! Scale-out (issue 17): two node databases and a PL/Proxy proxy with `triggers_proxy`
//! over them, 8 partitions. The proxy has a node's API, signature for signature; 200
//! tenants work through it with the Rust client as against one database: every tenant's
//! events land on its node only, each node holds some; inbox, ack, retry, keys and
//! metrics give what the nodes hold, and figures over all tenants combine every node's
//! exactly. A node down: its tenants get an error, the other node's keep working, keys
//! included (they route by the tenant hash they carry, not by asking every node).

use std::collections::HashMap;

use serde_json::{json, Value};
use triggers_client::{Client, DebugFlag, Error, InboxQuery, NewEvent, Status};
use triggers_tests::sharded::Sharded;
use triggers_tests::{connect, wait_until, ExternalCluster, TempDir};

const PARTITIONS: usize = 8;

/// The public functions of a database's `triggers` schema: (name, arguments, result).
/// `partition_*` are each side's own administration (moving a partition), not the API.
async fn api(config: &tokio_postgres::Config) -> Vec<(String, String, String)> {
    let db = connect(config).await;
    db.query(
        "SELECT p.proname::text, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'triggers' AND p.proname !~ '^_' AND p.proname !~ '^partition_'
          ORDER BY 1, 2",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// The columns of each row type the API returns: (type, column, its type), in order.
async fn row_types(config: &tokio_postgres::Config) -> Vec<(String, String, String)> {
    let db = connect(config).await;
    db.query(
        "SELECT t.typname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE n.nspname = 'triggers'
            AND t.typname IN ('events', 'inbox_row', 'stored_row', 'endpoint_row', 'delivery_row', 'attempt_row')
          ORDER BY 1, a.attnum",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_has_a_nodes_api() {
    let sharded = Sharded::new("proxy_api", 2, PARTITIONS).await;
    let node = api(&sharded.nodes[0]).await;
    assert!(node.len() > 30, "{node:?}");
    assert_eq!(api(&sharded.proxy).await, node);
    assert_eq!(
        row_types(&sharded.proxy).await,
        row_types(&sharded.nodes[0]).await
    );
}

/// How many events of each tenant each node holds: (tenant, node) → count.
async fn held(sharded: &Sharded) -> HashMap<(String, usize), i64> {
    let mut counts = HashMap::new();
    for (i, node) in sharded.nodes.iter().enumerate() {
        let db = connect(node).await;
        for row in db
            .query(
                "SELECT tenant, count(*) FROM triggers.events GROUP BY tenant",
                &[],
            )
            .await
            .unwrap()
        {
            counts.insert((row.get(0), i), row.get(1));
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_tenants_through_the_proxy() {
    let sharded = Sharded::new("proxy_200", 2, PARTITIONS).await;
    let proxy = Client::from_config(sharded.proxy.clone(), 4).unwrap();
    let nodes: Vec<Client> = sharded
        .nodes
        .iter()
        .map(|c| Client::from_config(c.clone(), 2).unwrap())
        .collect();
    let tenants: Vec<String> = (0..200).map(|i| format!("tenant-{i:03}")).collect();

    // Produce: a plain event, one with an idempotency key (sent twice), one that goes
    // to the dead-letter queue; and a key per tenant.
    let mut keys = Vec::new();
    let mut plain = Vec::new();
    let mut failing = Vec::new();
    for tenant in &tenants {
        keys.push(proxy.create_api_key(tenant, "k").await.unwrap());
        plain.push(
            proxy
                .enqueue(&NewEvent::new(json!({"tenant": tenant})).tenant(tenant))
                .await
                .unwrap()
                .event_id,
        );
        let keyed = NewEvent::new(json!({"keyed": true}))
            .tenant(tenant)
            .idempotency_key("once");
        let first = proxy.enqueue(&keyed).await.unwrap();
        let again = proxy.enqueue(&keyed).await.unwrap();
        assert_eq!(
            first.event_id, again.event_id,
            "{tenant}: the key names one event"
        );
        failing.push(
            proxy
                .enqueue(
                    &NewEvent::new(json!({"bad": true}))
                        .tenant(tenant)
                        .debug(DebugFlag::DlqRouting),
                )
                .await
                .unwrap()
                .event_id,
        );
    }

    // A refusal passes on the node's code and message, as from one database.
    let refused = proxy
        .enqueue(
            &NewEvent::new(json!({}))
                .tenant(&tenants[0])
                .debug(DebugFlag::ValidationError),
        )
        .await;
    assert!(
        matches!(&refused, Err(Error::InvalidPayload(m)) if m == "payload rejected (debug flag validation_error)"),
        "{refused:?}"
    );

    // Process through the proxy (a batch on every node) until every queue is empty.
    while proxy.metrics(None).await.unwrap().queue_depth > 0 {
        proxy.process_batch(Some(100), None).await.unwrap();
    }

    // Each tenant's events on its node only; both nodes hold some tenants.
    let node_of = sharded.nodes_of(&tenants).await;
    let held = held(&sharded).await;
    let expected: HashMap<(String, usize), i64> = tenants
        .iter()
        .zip(&node_of)
        .map(|(tenant, &node)| ((tenant.clone(), node), 3))
        .collect();
    assert_eq!(held, expected);
    let per_node: Vec<usize> = (0..sharded.nodes.len())
        .map(|n| node_of.iter().filter(|&&m| m == n).count())
        .collect();
    assert!(
        per_node.iter().all(|&n| n > 20),
        "tenants per node: {per_node:?}"
    );

    // Reads through the proxy are the node's.
    for (i, tenant) in tenants.iter().enumerate() {
        let node = &nodes[node_of[i]];
        let query = InboxQuery::new(tenant.as_str());
        assert_eq!(
            proxy.inbox(&query).await.unwrap().events,
            node.inbox(&query).await.unwrap().events
        );
        assert_eq!(
            proxy.metrics(Some(tenant)).await.unwrap(),
            node.metrics(Some(tenant)).await.unwrap()
        );
        assert_eq!(
            proxy.dead_letters(tenant, 10).await.unwrap(),
            node.dead_letters(tenant, 10).await.unwrap()
        );
    }

    // Ack and retry through the proxy change the node's rows.
    for (i, tenant) in tenants.iter().enumerate() {
        let node = &nodes[node_of[i]];
        assert_eq!(
            proxy.ack(tenant, plain[i]).await.unwrap().status,
            Status::Delivered
        );
        assert_eq!(
            node.get_event(tenant, plain[i]).await.unwrap().status,
            Status::Delivered
        );
        assert_eq!(
            node.get_event(tenant, failing[i]).await.unwrap().status,
            Status::Failed
        );
        assert_eq!(proxy.retry(tenant, failing[i]).await.unwrap(), 1);
        assert_eq!(
            node.metrics(Some(tenant)).await.unwrap().queue_depth,
            1,
            "{tenant}: re-queued"
        );
    }
    // Another tenant's event is not found through the proxy either.
    assert!(matches!(
        proxy.get_event(&tenants[1], plain[0]).await,
        Err(Error::NotFound(_))
    ));

    // Keys: each authenticates through the proxy; a revoked one no longer does.
    for (i, tenant) in tenants.iter().enumerate() {
        assert_eq!(&proxy.authenticate(&keys[i]).await.unwrap(), tenant);
    }
    assert!(proxy.revoke_api_key(&tenants[0], &keys[0]).await.unwrap());
    assert!(matches!(
        proxy.authenticate(&keys[0]).await,
        Err(Error::Unauthorized(m)) if m.contains("revoked")
    ));
    assert!(matches!(
        proxy.authenticate("trg_ffffffffabcdefghi_nope").await,
        Err(Error::Unauthorized(_))
    ));

    // Figures over every tenant: counts are every node's rows, exactly.
    while proxy.metrics(None).await.unwrap().queue_depth > 0 {
        proxy.process_batch(Some(100), None).await.unwrap();
    }
    let all = proxy.metrics(None).await.unwrap();
    let (mut pending, mut delivered, mut failed) = (0, 0, 0);
    for node in &sharded.nodes {
        let db = connect(node).await;
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'delivered'),
                        count(*) FILTER (WHERE status = 'failed') FROM triggers.events",
                &[],
            )
            .await
            .unwrap();
        pending += row.get::<_, i64>(0);
        delivered += row.get::<_, i64>(1);
        failed += row.get::<_, i64>(2);
    }
    assert_eq!(
        (all.pending, all.delivered, all.failed),
        (pending, delivered, failed)
    );
    assert_eq!((all.total, all.delivered), (600, 200));
    let counters = proxy.counters(None).await.unwrap();
    let mut by_node = (0, 0, 0);
    for node in &nodes {
        let c = node.counters(None).await.unwrap();
        by_node = (
            by_node.0 + c.enqueued,
            by_node.1 + c.stored,
            by_node.2 + c.acknowledged,
        );
    }
    assert_eq!(
        (counters.enqueued, counters.stored, counters.acknowledged),
        by_node
    );
    assert_eq!(counters.acknowledged, 200);

    // The latency percentiles over every tenant are those of both nodes' histograms
    // together (what one database holding every event would say), not an average.
    let node0 = connect(&sharded.nodes[0]).await;
    wait_until(
        "metrics(NULL) through the proxy = both nodes' parts combined",
        || async {
            let mut parts = Vec::new();
            for node in &sharded.nodes {
                let db = connect(node).await;
                parts.push(
                    db.query_one("SELECT triggers._metrics_parts(NULL)", &[])
                        .await
                        .unwrap()
                        .get::<_, Value>(0),
                );
            }
            let combined: Value = node0
                .query_one(
                    "SELECT triggers._metrics_combine(NULL, $1::jsonb[])",
                    &[&parts],
                )
                .await
                .unwrap()
                .get(0);
            let db = connect(&sharded.proxy).await;
            let through: Value = db
                .query_one("SELECT triggers.metrics(NULL)", &[])
                .await
                .unwrap()
                .get(0);
            // Per minute too: every node's processed events, minute by minute.
            let history = "SELECT coalesce(sum(processed), 0)::bigint, count(*) FROM triggers.metrics_history(NULL, 10)";
            let row = db.query_one(history, &[]).await.unwrap();
            let (mut processed, minutes): (i64, i64) = (0, row.get(1));
            for node in &sharded.nodes {
                processed += connect(node)
                    .await
                    .query_one(history, &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0);
            }
            through == combined
                && combined["latency_ms"]["p50"].is_number()
                && row.get::<_, i64>(0) == processed
                && processed >= 600
                && minutes == 10
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_down_stops_only_its_tenants() {
    // Node 1 in a cluster of its own, to stop. PL/Proxy has one user mapping per
    // cluster: a role of the same name and password on both.
    let tmp = TempDir::new("proxy-down");
    let node0 = triggers_tests::test_database("proxy_down_n0").await;
    let dir = tmp.join("node1");
    let external = ExternalCluster::start(&dir).await;
    let role = "CREATE ROLE proxy_down LOGIN SUPERUSER PASSWORD 'proxy-down-pw'";
    let shared = connect(&node0).await;
    shared
        .batch_execute("DROP ROLE IF EXISTS proxy_down")
        .await
        .unwrap();
    shared.batch_execute(role).await.unwrap();
    connect(&external.config())
        .await
        .batch_execute(role)
        .await
        .unwrap();
    let sharded = Sharded::over(
        "proxy_down",
        vec![node0, external.config()],
        PARTITIONS,
        "proxy_down",
        "proxy-down-pw",
    )
    .await;
    let proxy = Client::from_config(sharded.proxy.clone(), 4).unwrap();

    let mut on = [Vec::new(), Vec::new()];
    for i in 0..40 {
        let tenant = format!("down-{i}");
        let key = proxy.create_api_key(&tenant, "k").await.unwrap();
        on[sharded.node_of(&tenant).await].push((tenant, key));
    }
    assert!(!on[0].is_empty() && !on[1].is_empty());

    drop(external);
    for (tenant, key) in &on[0] {
        proxy
            .enqueue(&NewEvent::new(json!({"up": true})).tenant(tenant))
            .await
            .unwrap();
        assert_eq!(&proxy.authenticate(key).await.unwrap(), tenant);
    }
    for (tenant, key) in &on[1] {
        let sent = proxy
            .enqueue(&NewEvent::new(json!({"down": true})).tenant(tenant))
            .await;
        assert!(
            matches!(sent, Err(Error::Unavailable(_))),
            "{tenant} on the stopped node: {sent:?}"
        );
        let authenticated = proxy.authenticate(key).await;
        assert!(
            matches!(authenticated, Err(Error::Unavailable(_))),
            "{authenticated:?}"
        );
    }

    // Back: its tenants work again, without touching the proxy.
    let _external = ExternalCluster::start(&dir).await;
    let (tenant, key) = &on[1][0];
    wait_until("the node's tenants served again", || async {
        proxy
            .enqueue(&NewEvent::new(json!({"back": true})).tenant(tenant))
            .await
            .is_ok()
    })
    .await;
    assert_eq!(&proxy.authenticate(key).await.unwrap(), tenant);
}
