//! Tenant-safe under abuse (issue 26), each against the real `triggers serve`: no client
//! or tenant can lock out, starve or exhaust the others.
//!
//! - A flood of bad keys from the victim's own address never fails the victim's key, and
//!   costs the database a few lookups (counted by Postgres: `pg_stat_user_functions`).
//! - Wrong secrets for a real key id spend nobody's request budget.
//! - Half a million random tokens, from as many addresses, grow the server's memory by a
//!   bounded amount.
//! - An inbox page of 1 MiB payloads stops at its byte budget, with a cursor.
//! - A tenant's live streams are capped, and unread ones hold little memory.
//! - A tenant at its quota or its queue share is refused while another is served; caps
//!   set in `triggers.tenants` apply; so does the endpoint cap.
//! - A statement timeout ends a stuck request; a client that goes away cancels its query;
//!   one tenant's stuck requests leave connections to the others and to logins.
//! - The webhook client ignores proxy variables and stores no resolved address.
//! - A key file that is a symlink or readable by others is refused.
//! - An ordinary role setting `triggers.now` moves nothing.
//! - A tenant-bound role acts for its tenant only; the server runs as a least-privilege role.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use triggers_tests::hooks::Receiver;
use triggers_tests::{
    connect, database_url, free_port, run, serve_database, test_database, triggers, wait_until,
    Server, TempDir,
};

/// The single value `sql` returns.
async fn scalar<T: tokio_postgres::types::FromSqlOwned>(
    db: &tokio_postgres::Client,
    sql: &str,
) -> T {
    db.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// `triggers serve` over test database `t_<name>` with `args`, its functions' calls
/// counted by Postgres (`track_functions`); a key of tenant "victim".
async fn serve(
    name: &str,
    args: &[&str],
) -> (
    Server,
    String,
    tokio_postgres::Client,
    tokio_postgres::Config,
) {
    let config = test_database(name).await;
    let db = connect(&config).await;
    db.batch_execute(&format!(
        "ALTER DATABASE t_{name} SET track_functions = 'all'"
    ))
    .await
    .unwrap();
    let key: String = scalar(&db, "SELECT triggers.create_api_key('victim', 'test')").await;
    let server = serve_database(&config, args);
    (server, key, db, config)
}

/// GET `path` with `key`: status, error code, body.
async fn get(http: &reqwest::Client, base: &str, path: &str, key: &str) -> (u16, String, Value) {
    answer(http.get(format!("{base}{path}")).bearer_auth(key)).await
}

/// POST `path` with `key` and `body`: status, error code, body.
async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, String, Value) {
    answer(
        http.post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

/// Sends `request`: status, error code, body.
async fn answer(request: reqwest::RequestBuilder) -> (u16, String, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, body)
}

/// A well-formed key that no database holds.
fn random_token(rng: &mut impl Rng) -> String {
    let word = |rng: &mut dyn rand::RngCore, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect()
    };
    format!("trg_{}_{}", word(rng, 17), word(rng, 32))
}

/// Sends `requests` (whole HTTP/1.1 requests) to `addr` over `connections` connections,
/// `depth` at a time on each (pipelined), and returns how many answers had each status.
fn blast(addr: &str, requests: Vec<Vec<u8>>, connections: usize, depth: usize) -> Vec<(u16, u64)> {
    let chunks: Vec<Vec<Vec<u8>>> = {
        let per = requests.len().div_ceil(connections);
        let mut it = requests.into_iter();
        (0..connections)
            .map(|_| it.by_ref().take(per).collect())
            .collect()
    };
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                let mut buffer = Vec::new();
                let mut read = vec![0u8; 1 << 16];
                for group in chunk.chunks(depth) {
                    let out: Vec<u8> = group.concat();
                    stream.write_all(&out).unwrap();
                    let (mut answered, mut at) = (0, 0);
                    while answered < group.len() {
                        match next_response(&buffer[at..]) {
                            Some((status, length)) => {
                                *statuses.entry(status).or_default() += 1;
                                answered += 1;
                                at += length;
                            }
                            None => {
                                let n = stream.read(&mut read).unwrap();
                                assert!(n > 0, "the server closed the connection");
                                buffer.extend_from_slice(&read[..n]);
                            }
                        }
                    }
                    buffer.drain(..at);
                }
                statuses
            })
        })
        .collect();
    let mut total = std::collections::BTreeMap::<u16, u64>::new();
    for thread in threads {
        for (status, n) in thread.join().unwrap() {
            *total.entry(status).or_default() += n;
        }
    }
    total.into_iter().collect()
}

/// The status and length of the first whole response in `buffer`, if it has one.
fn next_response(buffer: &[u8]) -> Option<(u16, usize)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..end]).unwrap();
    let length: usize = head
        .split("\r\n")
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        })
        .map_or(0, |(_, v)| v.trim().parse().unwrap());
    if buffer.len() < end + length {
        return None;
    }
    Some((head[9..12].parse().unwrap(), end + length))
}

fn request(path: &str, token: &str, forwarded_for: Option<&str>) -> Vec<u8> {
    let forwarded = forwarded_for
        .map(|a| format!("x-forwarded-for: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\n{forwarded}\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_keys_from_the_victims_address_never_fails_its_key() {
    // Trusted from memory for a second only, so the victim's key is looked up again and
    // again while the flood goes on.
    let (mut server, key, db, config) = serve(
        "abuse_lockout",
        &["--auth-failures-per-minute", "3", "--key-cache-ttl", "1"],
    )
    .await;
    let base = server.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    assert_eq!(get(&http, &base, "/metrics", &key).await.0, 200);
    let id = key.split('_').nth(1).unwrap().to_string();
    let mut rng = rand::rng();
    let (mut unknown, mut wrong) = (HashSet::new(), HashSet::new());
    let started = std::time::Instant::now();
    for round in 0..40 {
        for _ in 0..25 {
            let token = random_token(&mut rng);
            let (status, code, _) = get(&http, &base, "/metrics", &token).await;
            assert!(
                (status, code.as_str()) == (401, "INVALID_TOKEN")
                    || (status, code.as_str()) == (429, "RATE_LIMIT_EXCEEDED"),
                "{status} {code}"
            );
            unknown.insert(status);
            let token = format!(
                "trg_{id}_{}",
                random_token(&mut rng).split('_').nth(2).unwrap()
            );
            let (status, _, body) = get(&http, &base, "/metrics", &token).await;
            assert_eq!(status, 401, "a wrong secret for a real id: {body}");
            assert_eq!(body["error"]["message"], "API key is not valid");
            wrong.insert(status);
        }
        let (status, _, body) = get(&http, &base, "/metrics", &key).await;
        assert_eq!(
            status, 200,
            "round {round}: the victim's key failed: {body}"
        );
    }
    // The random ids spent this address's budget; the victim's key never needed it.
    assert!(unknown.contains(&429), "{unknown:?}");
    let (status, _, body) = get(&http, &base, "/metrics", "trg_not-a-key").await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (401, Some("API key is malformed"))
    );
    // 2,000 bad tokens; the database looked up the victim's key once per second it was
    // trusted for, and 3 unknown ids (the address's budget): the bound, however many bad
    // tokens come. (A server's statistics reach Postgres when its sessions end.)
    let seconds = started.elapsed().as_secs() as i64 + 1;
    server.stop_with(libc::SIGTERM, Duration::from_secs(30));
    let n = key_lookups(&config).await;
    assert!(
        n <= 3 + seconds + 2,
        "{n} key lookups in {seconds} s for 2,000 bad tokens"
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secrets_for_a_real_key_spend_none_of_its_budget_nor_a_lookup_each() {
    // Trusted from memory for the whole test: one lookup of the key, then none.
    let (mut server, key, _db, config) = serve(
        "abuse_budget",
        &["--rate-limit", "5", "--key-cache-ttl", "3600"],
    )
    .await;
    let base = server.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let id = key.split('_').nth(1).unwrap().to_string();
    for i in 0..50 {
        let (status, _, _) = get(&http, &base, "/metrics", &format!("trg_{id}_wrong{i}")).await;
        assert_eq!(status, 401);
    }
    for remaining in (0..5).rev() {
        let response = http
            .get(format!("{base}/metrics"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let (status, code, _) = get(&http, &base, "/metrics", &key).await;
    assert_eq!((status, code.as_str()), (429, "RATE_LIMIT_EXCEEDED"));
    // 56 requests with the key's id, one database lookup: a cached key, right or wrong
    // secret, is checked in memory.
    server.stop_with(libc::SIGTERM, Duration::from_secs(30));
    assert_eq!(key_lookups(&config).await, 1);
}

/// How many times the stopped server looked a key up (`triggers._key_record`), as
/// Postgres counts them (a server's statistics reach it when its sessions end).
async fn key_lookups(config: &tokio_postgres::Config) -> i64 {
    let db = connect(config).await;
    let calls = "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_user_functions WHERE funcname = '_key_record'";
    wait_until("the lookups are counted", || async {
        scalar::<i64>(&db, calls).await > 0
    })
    .await;
    scalar::<i64>(&db, calls).await
}

#[tokio::test(flavor = "multi_thread")]
async fn half_a_million_random_tokens_from_as_many_addresses_keep_memory_bounded() {
    let (server, key, _db, _) = serve(
        "abuse_memory",
        &["--trusted-proxies", "127.0.0.1", "--rate-limit", "0"],
    )
    .await;
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut rng = rand::rng();
    let requests = |n: usize, rng: &mut rand::rngs::ThreadRng| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let forwarded = if i % 2 == 0 {
                    format!(
                        "{}.{}.{}.{}",
                        rng.random_range(1..224),
                        rng.random::<u8>(),
                        rng.random::<u8>(),
                        rng.random::<u8>()
                    )
                } else {
                    format!(
                        "2001:db8:{:x}:{:x}::1",
                        rng.random::<u16>(),
                        rng.random::<u16>()
                    )
                };
                request("/metrics", &random_token(rng), Some(&forwarded))
            })
            .collect()
    };
    // Warm up: the allocator's arenas and the maps' first growth.
    blast(&addr, requests(20_000, &mut rng), 4, 64);
    let before = server.rss_kib();
    let statuses = blast(&addr, requests(500_000, &mut rng), 4, 64);
    let after = server.rss_kib();
    let answered: u64 = statuses.iter().map(|(_, n)| n).sum();
    assert_eq!(answered, 500_000);
    assert!(
        statuses.iter().all(|(s, _)| [401, 429].contains(s)),
        "{statuses:?}"
    );
    let grown = after.saturating_sub(before);
    eprintln!(
        "RSS {before} KiB → {after} KiB (+{grown} KiB) over 500,000 random tokens: {statuses:?}"
    );
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    assert_eq!(get(&http, &base, "/metrics", &key).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_page_of_big_payloads_stops_at_its_byte_budget_with_a_cursor() {
    let (server, key, db, _) = serve("abuse_page", &["--workers", "0"]).await;
    let base = server.url.trim_end_matches('/').to_string();
    // Twelve events of ~1 MiB (the payload limit), stored.
    db.batch_execute(
        "SELECT triggers.enqueue(jsonb_build_object('n', n, 'blob', repeat('x', 1040000)), tenant => 'victim')
           FROM generate_series(1, 12) n;
         SELECT triggers.process_batch(100);",
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/inbox?limit=1000&cursor={c}"),
            None => "/inbox?limit=1000".to_string(),
        };
        let response = http
            .get(format!("{base}{path}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let bytes = response.bytes().await.unwrap();
        // The budget (4 MiB) and the event that reaches it.
        assert!(bytes.len() < 6 << 20, "a page of {} bytes", bytes.len());
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        pages += 1;
        for event in page["data"].as_array().unwrap() {
            seen.push(event["payload"]["n"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    assert!(pages >= 3, "{pages} pages");
    // In SQL too: a budget of one byte is one event, which says more may follow.
    let row = db
        .query_one(
            "SELECT count(*), bool_and(more) FROM triggers.inbox('victim', lim => 1000, max_bytes => 1)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (1, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_live_streams_are_capped_and_unread_ones_hold_little_memory() {
    let (server, key, db, _) = serve("abuse_streams", &["--workers", "1"]).await;
    let base = server.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        let response = http
            .get(format!("{base}/inbox/stream"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            // Kept, never read.
            200 => open.push(response),
            429 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "LIMIT_EXCEEDED");
                refused += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!((open.len(), refused), (20, 30));
    let before = server.rss_kib();
    // 60 MB of events for 20 streams that read nothing.
    for _ in 0..6 {
        db.batch_execute(
            "SELECT triggers.enqueue(jsonb_build_object('blob', repeat(md5(n::text), 6250)), tenant => 'victim')
               FROM generate_series(1, 50) n",
        )
        .await
        .unwrap();
    }
    wait_until("every event stored", || async {
        scalar::<i64>(&db, "SELECT count(*) FROM triggers.events").await == 300
    })
    .await;
    let after = server.rss_kib();
    let grown = after.saturating_sub(before);
    eprintln!(
        "RSS {before} KiB → {after} KiB (+{grown} KiB) with 20 unread streams and 60 MB of events"
    );
    assert!(grown < 100 * 1024, "RSS grew {grown} KiB");
    // A stream closed gives its place back.
    open.truncate(15);
    wait_until("a closed stream's place taken again", || async {
        let response = http
            .get(format!("{base}/inbox/stream"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        response.status().as_u16() == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_at_its_quota_is_refused_while_another_is_served() {
    let (server, _key, db, _) = serve(
        "abuse_quota",
        &["--workers", "0", "--tenant-events-per-minute", "10"],
    )
    .await;
    let base = server.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let key_of = |tenant: &'static str| {
        let db = &db;
        async move {
            scalar::<String>(
                db,
                &format!("SELECT triggers.create_api_key('{tenant}', 'test')"),
            )
            .await
        }
    };
    let (a, b, c) = (key_of("a").await, key_of("b").await, key_of("c").await);
    let event = json!({"payload": {"n": 1}});
    for _ in 0..10 {
        assert_eq!(
            post(&http, &base, "/events", &a, event.clone()).await.0,
            200
        );
    }
    let (status, code, _) = post(&http, &base, "/events", &a, event.clone()).await;
    assert_eq!((status, code.as_str()), (429, "RATE_LIMIT_EXCEEDED"));
    let batch =
        json!({"events": (0..11).map(|n| json!({"payload": {"n": n}})).collect::<Vec<_>>()});
    let (status, _, body) = post(&http, &base, "/events/batch", &b, batch).await;
    assert_eq!(status, 429);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a batch of 11 events"));
    // Another tenant is served.
    assert_eq!(
        post(&http, &base, "/events", &b, event.clone()).await.0,
        200
    );
    // Per tenant, triggers.tenants: c may send any number but queue only 5.
    db.batch_execute(
        "INSERT INTO triggers.tenants (tenant, events_per_minute, max_queued, max_endpoints) VALUES ('c', 0, 5, 2)",
    )
    .await
    .unwrap();
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    wait_until("c refused at its share of the queue", || async {
        let (status, code, _) = post(&http, &base, "/events", &c, event.clone()).await;
        match (status, code.as_str()) {
            (200, _) => {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                false
            }
            // Until the server reads c's row (every few seconds), c has the defaults.
            (429, "RATE_LIMIT_EXCEEDED") => false,
            _ => {
                assert_eq!((status, code.as_str()), (429, "LIMIT_EXCEEDED"));
                true
            }
        }
    })
    .await;
    let accepted = accepted.into_inner();
    assert!(accepted >= 5, "{accepted}");
    assert_eq!(
        post(&http, &base, "/events", &b, event.clone()).await.0,
        200
    );
    // The endpoint cap, kept by the database.
    for n in 0..2 {
        let (status, _, body) = post(
            &http,
            &base,
            "/webhooks/endpoints",
            &c,
            json!({"url": format!("https://example.com/{n}")}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, code, _) = post(
        &http,
        &base,
        "/webhooks/endpoints",
        &c,
        json!({"url": "https://example.com/3"}),
    )
    .await;
    assert_eq!((status, code.as_str()), (429, "LIMIT_EXCEEDED"));
}

/// The server's sessions waiting on a lock (the test's), running an ack.
async fn stuck_acks(db: &tokio_postgres::Client) -> i64 {
    scalar(
        db,
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%triggers.ack%'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_and_a_disconnect_end_stuck_queries_and_leave_room_for_others() {
    let config = test_database("abuse_timeout").await;
    let db = connect(&config).await;
    let a: String = scalar(&db, "SELECT triggers.create_api_key('a', 'test')").await;
    let id: uuid::Uuid = scalar(&db, "SELECT triggers.enqueue('{}', tenant => 'a')").await;
    db.batch_execute("SELECT triggers.process_batch(10)")
        .await
        .unwrap();
    // The test holds the event's row: an ack of it waits.
    let mut holder = connect(&config).await;
    let lock = holder.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM triggers.events WHERE event_id = $1 FOR UPDATE",
        &[&id],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    // With a statement timeout, the stuck request ends with a clear 503.
    {
        let server = serve_database(&config, &["--statement-timeout", "1", "--workers", "0"]);
        let base = server.url.trim_end_matches('/').to_string();
        let (status, code, body) =
            post(&http, &base, &format!("/inbox/{id}/ack"), &a, json!({})).await;
        assert_eq!(
            (status, code.as_str()),
            (503, "SERVICE_UNAVAILABLE"),
            "{body}"
        );
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("statement timeout"));
    }
    // Without one: 16 stuck requests of tenant a hold no more than its 8 turns, so a new
    // tenant's key is checked and its reads served; then a's clients go away, and their
    // queries are cancelled (nothing else would end them).
    let server = serve_database(&config, &["--statement-timeout", "0", "--workers", "0"]);
    let base = server.url.trim_end_matches('/').to_string();
    let stuck: Vec<_> = (0..16)
        .map(|_| {
            let (http, base, a) = (http.clone(), base.clone(), a.clone());
            tokio::spawn(async move {
                let _ = http
                    .post(format!("{base}/inbox/{id}/ack"))
                    .bearer_auth(&a)
                    .send()
                    .await;
            })
        })
        .collect();
    wait_until("a's requests stuck on the lock", || async {
        stuck_acks(&db).await == 8
    })
    .await;
    let b: String = scalar(&db, "SELECT triggers.create_api_key('b', 'test')").await;
    assert_eq!(get(&http, &base, "/metrics", &b).await.0, 200);
    assert_eq!(
        post(&http, &base, "/events", &b, json!({"payload": {}}))
            .await
            .0,
        200
    );
    for request in &stuck {
        request.abort();
    }
    wait_until("the stuck queries cancelled", || async {
        stuck_acks(&db).await == 0
    })
    .await;
    lock.rollback().await.unwrap();
}

/// A TCP listener that counts the connections made to it and answers each request 200.
async fn recording_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 65536];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0
                        || socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_ignore_proxy_variables_and_store_no_resolved_address() {
    let (proxy, seen) = recording_proxy().await;
    let receiver = Receiver::start().await;
    let config = test_database("abuse_proxy").await;
    let db = connect(&config).await;
    let key: String = scalar(&db, "SELECT triggers.create_api_key('t', 'test')").await;
    let server = {
        let mut command = triggers(&["serve"]);
        command
            .env("DATABASE_URL", database_url(&config))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "all_proxy",
        ] {
            command.env(name, &proxy);
        }
        Server::start(command)
    };
    let base = server.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    // localhost is private: refused, whatever a proxy would do with it.
    let hook = receiver.url.replace("127.0.0.1", "localhost");
    let (status, _, body) = post(
        &http,
        &base,
        "/webhooks/endpoints",
        &key,
        json!({"url": hook}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = post(&http, &base, "/events", &key, json!({"payload": {"n": 1}})).await;
    assert_eq!(status, 200);
    let event = body["data"]["event_id"].as_str().unwrap().to_string();
    let error = std::sync::Mutex::new(String::new());
    wait_until("the attempt recorded", || async {
        let (_, _, body) = get(&http, &base, &format!("/events/{event}/deliveries"), &key).await;
        let last = body["data"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *error.lock().unwrap() = last.clone();
        !last.is_empty()
    })
    .await;
    let error = error.into_inner().unwrap();
    assert!(error.contains("no public address"), "{error}");
    assert!(
        !error.contains("127.0.0.1") && !error.contains("::1"),
        "{error}"
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(receiver.hooks().is_empty());
    // --webhook-proxy sends through the proxy (which must do the address check itself).
    drop(server);
    let server = {
        let mut command = triggers(&["serve", "--webhook-proxy", &proxy]);
        command
            .env("DATABASE_URL", database_url(&config))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())]);
        Server::start(command)
    };
    let base = server.url.trim_end_matches('/').to_string();
    let (_, _, body) = post(
        &http,
        &base,
        "/webhooks/endpoints",
        &key,
        json!({"url": "http://hooks.example.com/in"}),
    )
    .await;
    assert!(body["data"]["endpoint_id"].is_string(), "{body}");
    post(&http, &base, "/events", &key, json!({"payload": {"n": 2}})).await;
    wait_until("the delivery went through the proxy", || async {
        seen.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_placed_beforehand_is_refused() {
    let config = test_database("abuse_files").await;
    let dir = TempDir::new("abuse_files");
    let keys_create = |file: &std::path::Path| {
        let mut command = triggers(&["keys", "create", "--tenant", "t"]);
        command
            .env("DATABASE_URL", database_url(&config))
            .env("TRIGGERS_SECRETS_KEY_FILE", file);
        run(command, Duration::from_secs(60))
    };
    // A symlink where the key is to be: refused, its target untouched.
    let target = dir.join("elsewhere");
    std::fs::write(&target, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let link = dir.join("linked.key");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = keys_create(&link);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key file others can read: refused.
    let open = dir.join("open.key");
    std::fs::write(&open, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = keys_create(&open);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    // None there: made, readable by its owner only.
    let fresh = dir.join("fresh.key");
    let out = keys_create(&fresh);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&fresh).unwrap()) & 0o777;
    assert_eq!(mode, 0o600);
}

/// A session of `role` (password `secret`) on the database of `config`.
async fn login(config: &tokio_postgres::Config, role: &str) -> tokio_postgres::Client {
    let mut as_role = config.clone();
    as_role.user(role).password("secret");
    connect(&as_role).await
}

/// The SQLSTATE and message of `sql`'s error, or "ok".
async fn outcome(db: &tokio_postgres::Client, sql: &str) -> String {
    match db.batch_execute(sql).await {
        Ok(()) => "ok".into(),
        Err(e) => {
            let e = e.as_db_error().unwrap();
            format!("{} {}", e.code().code(), e.message())
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ordinary_role_setting_the_clock_moves_nothing() {
    let config = test_database("abuse_clock").await;
    let db = connect(&config).await;
    db.batch_execute(
        "CREATE ROLE clock_setter LOGIN PASSWORD 'secret'; GRANT triggers_worker TO clock_setter",
    )
    .await
    .unwrap();
    let key: String = scalar(
        &db,
        "SELECT triggers.create_api_key('t', 'short', expires_at => now() + interval '1 second')",
    )
    .await;
    wait_until("the key expired", || async {
        scalar::<bool>(
            &db,
            "SELECT bool_and(expires_at < now()) FROM triggers.api_keys",
        )
        .await
    })
    .await;
    let authenticate = format!("SELECT triggers.authenticate_key('{key}')");
    // Set before the library is loaded (a placeholder), then after.
    let ordinary = login(&config, "clock_setter").await;
    ordinary
        .batch_execute("SET triggers.test_clock = on; SET triggers.now = '2000-01-01 00:00:00+00'")
        .await
        .unwrap();
    assert_eq!(
        outcome(&ordinary, &authenticate).await,
        "TG009 API key has expired"
    );
    assert!(outcome(&ordinary, "SET triggers.test_clock = on")
        .await
        .starts_with("42501"));
    assert_eq!(
        outcome(&ordinary, &authenticate).await,
        "TG009 API key has expired"
    );
    // Where a superuser turns it on, the test clock works.
    db.batch_execute("SET triggers.test_clock = on; SET triggers.now = '2000-01-01 00:00:00+00'")
        .await
        .unwrap();
    assert_eq!(outcome(&db, &authenticate).await, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_bound_role_acts_for_its_tenant_only_and_the_server_needs_no_more_than_its_roles()
{
    let config = test_database("abuse_roles").await;
    let db = connect(&config).await;
    db.batch_execute(
        "CREATE ROLE acme_app LOGIN PASSWORD 'secret';
         GRANT triggers_producer, triggers_consumer TO acme_app;
         SELECT triggers.grant_tenant('acme_app', 'acme');
         CREATE ROLE just_producer LOGIN PASSWORD 'secret';
         GRANT triggers_producer TO just_producer;
         CREATE ROLE triggers_server_role LOGIN PASSWORD 'secret';
         GRANT triggers_producer, triggers_consumer, triggers_worker TO triggers_server_role;",
    )
    .await
    .unwrap();
    let acme = login(&config, "acme_app").await;
    assert_eq!(
        outcome(&acme, "SELECT triggers.enqueue('{}', tenant => 'acme')").await,
        "ok"
    );
    for refused in [
        "SELECT triggers.enqueue('{}', tenant => 'globex')",
        "SELECT triggers.enqueue_batch('[{\"payload\": {}}]', 'globex')",
        "SELECT * FROM triggers.inbox('globex')",
        "SELECT triggers.metrics(NULL)",
        "SELECT * FROM triggers.stored(NULL)",
        "SELECT triggers.create_endpoint('globex', 'https://example.com/')",
    ] {
        let got = outcome(&acme, refused).await;
        assert!(
            got.starts_with("TG011 role acme_app acts only for tenant acme"),
            "{refused}: {got}"
        );
    }
    for denied in [
        "SELECT count(*) FROM triggers.events",
        "SELECT count(*) FROM pgmq.q_triggers_events",
        "SELECT triggers.process_batch()",
        "SELECT triggers.create_api_key('acme', 'mine')",
    ] {
        assert!(
            outcome(&acme, denied).await.starts_with("42501"),
            "{denied}"
        );
    }
    assert_eq!(
        outcome(
            &acme,
            "SELECT count(*) FROM triggers.inbox('acme', status => '{pending,delivered,failed}')"
        )
        .await,
        "ok"
    );
    let producer = login(&config, "just_producer").await;
    assert!(outcome(&producer, "SELECT * FROM triggers.inbox('acme')")
        .await
        .starts_with("42501"));
    // The server as a role with the producer, consumer and worker grants alone.
    let key: String = scalar(&db, "SELECT triggers.create_api_key('acme', 'test')").await;
    let mut as_server = config.clone();
    as_server.user("triggers_server_role").password("secret");
    let server = serve_database(&as_server, &[]);
    let base = server.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let (status, _, body) = post(&http, &base, "/events", &key, json!({"payload": {"n": 1}})).await;
    assert_eq!(status, 200, "{body}");
    let event = body["data"]["event_id"].as_str().unwrap().to_string();
    wait_until("processed by the server's workers", || async {
        get(&http, &base, &format!("/events/{event}"), &key).await.0 == 200
    })
    .await;
    let (status, _, body) = post(
        &http,
        &base,
        "/webhooks/endpoints",
        &key,
        json!({"url": "https://example.com/hook"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(get(&http, &base, "/inbox", &key).await.0, 200);
    assert_eq!(get(&http, &base, "/metrics", &key).await.0, 200);
}
