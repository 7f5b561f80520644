//! `triggers serve` over a sharded layout (issue 17): DATABASE_URL is the PL/Proxy proxy,
//! `--nodes` the two node databases. Keys made with the CLI through the proxy; events
//! POSTed for tenants of both nodes are processed by each node's workers; the live
//! stream of a tenant comes from its node; a webhook endpoint made through the proxy is
//! delivered to by its node's delivery workers, signed with the secret the proxy
//! returned; a key revoked through the proxy is refused at once (the server listens on
//! every node). `serve` with a proxy but no nodes is a clear error.

use std::time::Duration;

use serde_json::{json, Value};
use triggers_client::Client;
use triggers_tests::hooks::Receiver;
use triggers_tests::sharded::Sharded;
use triggers_tests::sse::Sse;
use triggers_tests::{
    database_url, free_port, run, triggers, wait_until, Server, TempDir, PATIENCE,
};

fn key_for(proxy_url: &str, tenant: &str) -> String {
    let mut command = triggers(&["keys", "create", "--tenant", tenant]);
    command.env("DATABASE_URL", proxy_url);
    let made = run(command, Duration::from_secs(60));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    String::from_utf8_lossy(&made.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_a_proxy_and_two_nodes() {
    let tmp = TempDir::new("sharded-serve");
    let sharded = Sharded::new("sharded_serve", 2, 8).await;
    let proxy_url = database_url(&sharded.proxy);
    let nodes: Vec<String> = sharded.nodes.iter().map(database_url).collect();

    // A tenant on each node.
    let candidates: Vec<String> = (0..20).map(|i| format!("shard-{i}")).collect();
    let node_of = sharded.nodes_of(&candidates).await;
    let tenants: Vec<String> = (0..2)
        .map(|n| candidates[node_of.iter().position(|&m| m == n).unwrap()].clone())
        .collect();
    let keys: Vec<String> = tenants.iter().map(|t| key_for(&proxy_url, t)).collect();

    // Without the nodes, serve refuses a proxy.
    let mut alone = triggers(&["serve", "--listen", &format!("127.0.0.1:{}", free_port())]);
    alone.env("DATABASE_URL", &proxy_url);
    let refused = run(alone, Duration::from_secs(60));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("give the nodes too, --nodes"));

    let mut command = triggers(&["serve"]);
    command
        .env("DATABASE_URL", &proxy_url)
        .env("TRIGGERS_NODES", nodes.join(","))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--webhook-allow-private",
            "--key-cache-ttl",
            "3600",
            "--secrets-key-file",
        ])
        .arg(tmp.join("secrets-key"));
    let server = Server::start(command);
    assert!(server.banner.contains("over 2 nodes"), "{}", server.banner);
    let http = reqwest::Client::new();
    let base = server.url.clone();

    // A webhook receiver and an endpoint for the tenant on node 1, made through the proxy.
    let receiver = Receiver::start().await;
    let created: Value = http
        .post(format!("{base}/webhooks/endpoints"))
        .bearer_auth(&keys[1])
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["data"]["secret"]
        .as_str()
        .expect("a secret")
        .to_string();

    // The live stream of the tenant on node 1, open before its event.
    let mut stream = Sse::connect(&format!("{base}/inbox/stream"), &keys[1], None, &[]).await;
    assert_eq!(stream.status, 200);

    let mut ids = Vec::new();
    for (tenant, key) in tenants.iter().zip(&keys) {
        let sent: Value = http
            .post(format!("{base}/events"))
            .bearer_auth(key)
            .json(&json!({"payload": {"tenant": tenant}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(
            sent["data"]["event_id"]
                .as_str()
                .expect("an event id")
                .to_string(),
        );
    }
    for ((key, id), node) in keys.iter().zip(&ids).zip(&sharded.nodes) {
        wait_until("the event processed on its node", || async {
            let event: Value = http
                .get(format!("{base}/events/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            event["data"]["status"].is_string()
        })
        .await;
        let held: i64 = triggers_tests::connect(node)
            .await
            .query_one(
                "SELECT count(*) FROM triggers.events WHERE event_id = $1::text::uuid",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 1, "event {id} on its node");
    }
    let frame = stream
        .next_event(PATIENCE)
        .await
        .expect("the stream's event");
    assert!(frame.data.contains(&ids[1]), "{}", frame.data);

    wait_until("the webhook from node 1", || async {
        !receiver.hooks().is_empty()
    })
    .await;
    let hook = receiver.hooks()[0].clone();
    assert_eq!(hook.id, ids[1]);
    hook.verify(&secret)
        .expect("signed with the secret the proxy returned");

    // Revoked through the proxy: refused at once, though the cache would trust it an hour.
    let metrics = |key: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.get(format!("{base}/metrics"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(metrics(keys[1].clone()).await, 200);
    let proxy = Client::from_config(sharded.proxy.clone(), 1).unwrap();
    assert!(proxy.revoke_api_key(&tenants[1], &keys[1]).await.unwrap());
    wait_until("the revoked key refused", || async {
        metrics(keys[1].clone()).await == 401
    })
    .await;
    assert_eq!(metrics(keys[0].clone()).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_given_the_nodes_alone_processes_every_node() {
    let sharded = Sharded::new("sharded_worker", 2, 8).await;
    let proxy = Client::from_config(sharded.proxy.clone(), 2).unwrap();
    let tenants: Vec<String> = (0..16).map(|i| format!("worker-{i}")).collect();
    let node_of = sharded.nodes_of(&tenants).await;
    assert!(node_of.contains(&0) && node_of.contains(&1));
    for tenant in &tenants {
        proxy
            .enqueue(&triggers_client::NewEvent::new(json!({"n": 1})).tenant(tenant))
            .await
            .unwrap();
    }
    let nodes: Vec<String> = sharded.nodes.iter().map(database_url).collect();
    let tmp = TempDir::new("sharded-worker");
    let mut worker = triggers(&["worker", "--secrets-key-file"])
        .arg(tmp.join("secrets-key"))
        .env("TRIGGERS_NODES", nodes.join(","))
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("every node's queue processed", || async {
        let metrics = proxy.metrics(None).await.unwrap();
        metrics.queue_depth == 0 && metrics.pending == 16
    })
    .await;
    // SAFETY: kill(2) with the pid of a child this test spawned.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    assert!(worker.wait().unwrap().success());
}
