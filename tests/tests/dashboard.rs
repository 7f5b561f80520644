//! The dashboard (SPEC §7) in a real headless Chromium, served by a real `triggers serve`:
//! the cards equal `/metrics`; each debug button's event shows up in the cards and the
//! inbox through the live stream (no reload); ack and retry; the error state and its
//! recovery when the database stops and starts; the webhooks view against a receiver in
//! the test (add an endpoint and see its secret once, its deliveries and attempts,
//! resend, recover, rotate, disable, delete); 4/2/1 columns without horizontal scroll;
//! axe-core finds no accessibility violation in either colour scheme; no console error
//! and no request outside the server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use triggers_tests::browser::Browser;
use triggers_tests::hooks::Hook;
use triggers_tests::{
    column, connect, free_port, serve_test_database, triggers, ExternalCluster, Server, TempDir,
};

/// A server on a fresh test database with `workers` workers, and an API key of `tenant`.
async fn server(
    name: &str,
    tenant: &str,
    workers: &str,
) -> (
    Server,
    String,
    tokio_postgres::Client,
    tokio_postgres::Config,
) {
    serve_test_database(name, tenant, &["--workers", workers]).await
}

/// Opens the page and enters `key`; waits until it is ready.
async fn open(browser: &Browser, url: &str, key: &str) {
    browser.client.goto(url).await.unwrap();
    browser.type_into("#api-key", key).await;
    browser.click("#use-key").await;
    wait_ready(browser).await;
}

async fn wait_ready(browser: &Browser) {
    browser
        .until(
            "data-state=ready",
            "return document.documentElement.dataset.state === 'ready'",
        )
        .await;
}

/// The text of every `[data-metric]` card, by name.
async fn cards(browser: &Browser) -> Value {
    browser
        .js(
            "const o = {}; for (const e of document.querySelectorAll('[data-metric]')) o[e.dataset.metric] = e.textContent.trim(); return o;",
            vec![],
        )
        .await
}

/// `GET /metrics` of the key's tenant.
async fn metrics(url: &str, key: &str) -> Value {
    let reply = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    reply.json::<Value>().await.unwrap()["data"].clone()
}

/// Whether the page's cards show what `/metrics` says (numbers compared as numbers: the
/// page may write 1.0 as "1"; a null last_processed_at as a dash).
fn cards_match(cards: &Value, m: &Value) -> Result<(), String> {
    for name in [
        "total",
        "pending",
        "delivered",
        "failed",
        "queue_depth",
        "dlq_count",
        "processing_rate_per_min",
        "last_processed_at",
    ] {
        let shown = cards[name].as_str().ok_or(format!("no card {name}"))?;
        let same = match &m[name] {
            Value::Number(n) => shown.parse::<f64>().ok() == n.as_f64(),
            Value::String(s) => shown == s,
            Value::Null => shown.parse::<f64>().is_err() && !shown.contains('T'),
            other => return Err(format!("{name}: unexpected {other}")),
        };
        if !same {
            return Err(format!("{name}: card {shown:?}, /metrics {}", m[name]));
        }
    }
    Ok(())
}

/// Waits until the cards equal `/metrics` (read again each time: processing may move).
async fn wait_cards_match(browser: &Browser, url: &str, key: &str) {
    triggers_tests::wait_for("the cards equal /metrics", || async {
        let m = metrics(url, key).await;
        cards_match(&cards(browser).await, &m)
    })
    .await
}

/// The status the inbox row of `id` shows, once it shows `status`.
async fn wait_row(browser: &Browser, id: &str, status: &str) {
    browser
        .until(
            &format!("inbox row {id} {status}"),
            &format!(
                "const r = document.querySelector('[data-event-id=\"{id}\"]'); return r !== null && r.dataset.status === '{status}' && r.textContent.includes('{status}');"
            ),
        )
        .await;
}

/// Waits until the card `name` shows `figure`.
async fn wait_card(browser: &Browser, name: &str, figure: &str) {
    browser
        .until(
            &format!("card {name} = {figure}"),
            &format!("return document.querySelector('[data-metric={name}]').textContent.trim() === '{figure}'"),
        )
        .await;
}

/// Picks `ms` in the page's "Refresh every" menu (0: off).
async fn set_refresh(browser: &Browser, ms: &str) {
    browser
        .js(
            "const s = document.querySelector('#refresh-interval'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
            vec![json!(ms)],
        )
        .await;
}

/// Every event id the server has accepted: queued or stored.
async fn accepted(db: &tokio_postgres::Client) -> HashSet<String> {
    column::<Option<String>>(
        db,
        "SELECT message->>'event_id' FROM pgmq.q_triggers_events
          UNION SELECT event_id::text FROM triggers.events",
        &[],
    )
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// Clicks the debug button of `flag` and returns the id of the event the server
/// accepted (read from the database, not from the page under test).
async fn send_from_panel(browser: &Browser, db: &tokio_postgres::Client, flag: &str) -> String {
    browser.click("#tab-debug").await;
    let before = accepted(db).await;
    browser.click(&format!("[data-debug={flag}]")).await;
    let id = triggers_tests::wait_for(&format!("an event sent for {flag}"), || async {
        let sent = accepted(db).await.difference(&before).next().cloned();
        sent.ok_or("none accepted")
    })
    .await;
    browser.click("#tab-inbox").await;
    id
}

/// Console errors (SEVERE) the page logged since the last look.
async fn console_errors(browser: &Browser) -> Vec<String> {
    browser
        .console()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .map(|(_, message)| message)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cards_equal_the_api_and_the_page_loads_clean() {
    let (server, key, db, _) = server("dashboard_cards", "acme", "2").await;
    // Something to show: five events stored, one acknowledged, one failed; and another
    // tenant's events the page must never show.
    db.batch_execute(
        "UPDATE triggers.config SET max_retries = 0;
         SELECT triggers.enqueue(jsonb_build_object('n', i), tenant => 'acme') FROM generate_series(1, 5) i;
         SELECT triggers.enqueue('{}', tenant => 'acme', debug => 'processing_error');
         SELECT triggers.enqueue('{\"secret\": 1}', tenant => 'other') FROM generate_series(1, 3);",
    )
    .await
    .unwrap();
    triggers_tests::wait_until("processed", || async {
        metrics(&server.url, &key).await["failed"] == 1
            && metrics(&server.url, &key).await["total"] == 6
    })
    .await;
    let pending: String = db
        .query_one("SELECT event_id::text FROM triggers.events WHERE tenant = 'acme' AND status = 'pending' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    reqwest::Client::new()
        .post(format!("{}/inbox/{pending}/ack", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();

    // The page and its files: a strict CSP, no inline script.
    let page = reqwest::get(format!("{}/", server.url)).await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "inline script or style"
    );

    let browser = Browser::start(1280, 900).await;
    browser.client.goto(&server.url).await.unwrap();
    browser
        .until(
            "the key field",
            "return document.querySelector('#api-key') !== null",
        )
        .await;
    open(&browser, &server.url, &key).await;
    wait_cards_match(&browser, &server.url, &key).await;
    assert_eq!(cards(&browser).await["failed"], "1");

    // The inbox lists acme's six events, none of the other tenant's.
    browser
        .until(
            "six inbox rows",
            "return document.querySelectorAll('[data-event-id]').length === 6",
        )
        .await;
    let others: Vec<String> = column(
        &db,
        "SELECT event_id::text FROM triggers.events WHERE tenant = 'other'",
        &[],
    )
    .await;
    for id in others {
        let shown = browser
            .js(
                &format!("return document.querySelector('[data-event-id=\"{id}\"]') !== null"),
                vec![],
            )
            .await;
        assert_eq!(shown, false, "another tenant's event {id} on the page");
    }

    // The key: in sessionStorage, never in the URL or localStorage.
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(&key), "{url}");
    let stored = browser
        .js(
            "return [JSON.stringify(sessionStorage), JSON.stringify(localStorage)]",
            vec![],
        )
        .await;
    assert!(stored[0].as_str().unwrap().contains(&key), "{stored}");
    assert!(!stored[1].as_str().unwrap().contains(&key), "{stored}");

    // No console error, no request anywhere but the server.
    let requests = browser
        .js(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await;
    for request in requests.as_array().unwrap() {
        let request = request.as_str().unwrap();
        assert!(
            request.starts_with(&server.url),
            "a request outside the server: {request}"
        );
    }
    assert_eq!(console_errors(&browser).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_debug_button_shows_what_happened_to_its_event_live() {
    let (server, key, db, config) = server("dashboard_debug", "acme", "0").await;
    db.batch_execute(
        "UPDATE triggers.config SET max_retries = 1, backoff_base_ms = 100, backoff_cap_ms = 100, queue_delay_ms = 1500",
    )
    .await
    .unwrap();
    let browser = Browser::start(1280, 900).await;
    open(&browser, &server.url, &key).await;
    browser.click("#tab-debug").await;
    // A mark that a reload would wipe: everything below arrives without one.
    browser.js("window.__noReload = true", vec![]).await;
    // Live stream only: no periodic refresh, so what appears came through the stream.
    set_refresh(&browser, "0").await;
    browser
        .until(
            "the live stream connected",
            "return document.querySelector('#live-status').dataset.live === 'true'",
        )
        .await;

    // A plain event: queued (no worker runs yet), the page's own refresh after sending
    // done; then stored: with no refresh to come, only the live stream can bring it.
    let plain = send_from_panel(&browser, &db, "none").await;
    browser
        .until(
            "the page settled with the event queued",
            &format!("return document.querySelector('[data-activity-event=\"{plain}\"]')?.dataset.activityStatus === 'queued' && document.querySelector('#app').getAttribute('aria-busy') === 'false'"),
        )
        .await;
    db.batch_execute("SELECT triggers.process_batch()")
        .await
        .unwrap();
    wait_row(&browser, &plain, "pending").await;
    wait_card(&browser, "total", "1").await;

    // A worker from here on, and the periodic refresh back on (failures and acks do not
    // travel on the stream).
    let worker_db = connect(&config).await;
    let worker = tokio::spawn(async move {
        loop {
            worker_db
                .batch_execute("SELECT triggers.process_batch()")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    set_refresh(&browser, "2000").await;

    // Ack moves it to delivered.
    browser
        .click(&format!("[data-event-id=\"{plain}\"] [data-action=ack]"))
        .await;
    wait_row(&browser, &plain, "delivered").await;
    wait_card(&browser, "delivered", "1").await;

    // validation_error: refused with its code, nothing stored.
    browser.click("#tab-debug").await;
    browser.click("[data-debug=validation_error]").await;
    browser
        .until("INVALID_PAYLOAD shown", "return document.querySelector('#debug-activity').textContent.includes('INVALID_PAYLOAD')")
        .await;

    // processing_error: ends failed; its retry button queues it again, and (the retry
    // carries no debug flag) it is stored.
    let failing = send_from_panel(&browser, &db, "processing_error").await;
    wait_row(&browser, &failing, "failed").await;
    wait_card(&browser, "failed", "1").await;
    browser
        .click(&format!(
            "[data-event-id=\"{failing}\"] [data-action=retry]"
        ))
        .await;
    wait_row(&browser, &failing, "pending").await;

    // dlq_routing: failed at once, and counted in the dead-letter card.
    let routed = send_from_panel(&browser, &db, "dlq_routing").await;
    wait_row(&browser, &routed, "failed").await;
    wait_card(&browser, "dlq_count", "1").await;

    // queue_delay: queued first (the queue card counts it), stored after the delay.
    let delayed = send_from_panel(&browser, &db, "queue_delay").await;
    wait_row(&browser, &delayed, "pending").await;

    wait_cards_match(&browser, &server.url, &key).await;
    assert_eq!(
        browser
            .js("return window.__noReload === true", vec![])
            .await,
        true,
        "the page reloaded"
    );
    // The one error logged is the browser's note of the 400 the validation_error button
    // provokes on purpose.
    worker.abort();
    let errors = console_errors(&browser).await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/events?debug=validation_error") && e.contains("400")),
        "console errors: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_an_error_with_a_retry_button_while_the_database_is_down() {
    let tmp = TempDir::new("dashboard_down");
    let external = ExternalCluster::start(&tmp.join("db")).await;
    let db = connect(&external.config()).await;
    let key: String = db
        .query_one("SELECT triggers.create_api_key('acme', 'dashboard')", &[])
        .await
        .unwrap()
        .get(0);
    drop(db);
    let mut command = triggers(&["serve"]);
    command
        .env("DATABASE_URL", external.url())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--rate-limit", "0", "--workers", "1"]);
    let server = Server::start(command);
    let browser = Browser::start(1280, 900).await;
    open(&browser, &server.url, &key).await;

    drop(external);
    browser
        .until(
            "data-state=error",
            "return document.documentElement.dataset.state === 'error'",
        )
        .await;
    browser
        .until(
            "a visible retry button and the error code",
            "const b = document.querySelector('[data-action=reload]'); const p = document.querySelector('#error-panel'); return b !== null && b.offsetParent !== null && p.textContent.includes('SERVICE_UNAVAILABLE');",
        )
        .await;
    browser.screenshot("dashboard-error").await;

    let _external = ExternalCluster::start(&tmp.join("db")).await;
    // The retry button brings it back (the periodic refresh would too).
    // (Pressed through the page's own click, not WebDriver's: once the page recovers the
    // button is hidden, and WebDriver refuses to click what is not shown.)
    triggers_tests::wait_until("ready after the database returned", || async {
        let state = browser
            .js("return document.documentElement.dataset.state", vec![])
            .await;
        if state != "ready" {
            browser
                .js(
                    "document.querySelector('[data-action=reload]').click()",
                    vec![],
                )
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        state == "ready"
    })
    .await;
    wait_cards_match(&browser, &server.url, &key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn four_two_one_columns_without_horizontal_scroll_and_no_accessibility_violations() {
    let (server, key, db, _) = server("dashboard_layout", "acme", "2").await;
    // An endpoint for one of the streams, whose deliveries this server refuses (a
    // loopback target without --webhook-allow-private): rows with errors, each with its
    // next attempt an hour away, so they hold still while the browser looks.
    db.batch_execute(
        "UPDATE triggers.config SET webhook_schedule_s = '{0,3600}', webhook_jitter_pct = 0",
    )
    .await
    .unwrap();
    let created = reqwest::Client::new()
        .post(format!("{}/webhooks/endpoints", server.url))
        .bearer_auth(&key)
        .json(&json!({
            "url": format!("http://127.0.0.1:9/{}", "a-long-path/".repeat(12)),
            "filter": {"stream": "orders-1"},
            "description": "a receiver on loopback, refused without --webhook-allow-private",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Every kind of row and card: long payloads on two streams, failures, acks.
    db.batch_execute(
        "UPDATE triggers.config SET max_retries = 0;
         SELECT triggers.enqueue(jsonb_build_object('order', i, 'note', repeat('long text ', 40)), tenant => 'acme', stream => 'orders-' || (i % 2)) FROM generate_series(1, 30) i;
         SELECT triggers.enqueue(jsonb_build_object('order', i), tenant => 'acme', debug => 'processing_error') FROM generate_series(31, 33) i;",
    )
    .await
    .unwrap();
    triggers_tests::wait_until("processed", || async {
        metrics(&server.url, &key).await["total"] == 33
    })
    .await;
    triggers_tests::wait_until("each delivery to orders-1 tried once", || async {
        triggers_tests::scalar(&db, "SELECT count(*) FROM triggers.webhook_attempts").await == 15
    })
    .await;
    db.batch_execute(
        "SELECT triggers.ack(event_id, 'acme') FROM (SELECT event_id FROM triggers.events WHERE status = 'pending' ORDER BY created_at LIMIT 18) e",
    )
    .await
    .unwrap();
    let browser = Browser::start(1280, 900).await;
    open(&browser, &server.url, &key).await;
    browser
        .until(
            "inbox rows",
            "return document.querySelectorAll('[data-event-id]').length > 0",
        )
        .await;
    // The webhooks view with everything open: an endpoint's deliveries, one delivery's
    // attempts, and a secret (a rotation's).
    browser.click("#tab-webhooks").await;
    browser
        .click("#endpoint-list li[data-endpoint-id] [data-action=deliveries]")
        .await;
    browser
        .click("#delivery-list li[data-delivery-id] [data-action=attempts]")
        .await;
    browser
        .until(
            "an attempt in the timeline",
            "return document.querySelector('#attempt-timeline li[data-attempt]') !== null",
        )
        .await;
    browser
        .click("#endpoint-list li[data-endpoint-id] [data-action=rotate]")
        .await;
    browser
        .until(
            "the new secret",
            "return document.querySelector('#endpoint-secret').textContent.startsWith('whsec_')",
        )
        .await;
    // Back to where the page opens: the inbox, scrolled to the top (the clicks scrolled).
    browser.click("#tab-inbox").await;
    browser.js("window.scrollTo(0, 0)", vec![]).await;

    for (width, columns) in [(1280, 4), (800, 2), (390, 1)] {
        browser.viewport(width, 900).await;
        let layout = browser
            .until(
                &format!("the layout at {width} px"),
                &format!(
                    "if (window.innerWidth !== {width}) return null;
                     const lefts = new Set([...document.querySelectorAll('[data-metric]')].map(e => Math.round(e.getBoundingClientRect().left)));
                     return {{columns: lefts.size, scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth}};"
                ),
            )
            .await;
        assert_eq!(layout["columns"], columns, "at {width} px: {layout}");
        assert!(
            layout["scroll"].as_i64() <= layout["client"].as_i64(),
            "horizontal scroll at {width} px: {layout}"
        );
        browser.screenshot(&format!("dashboard-{width}")).await;
        browser.click("#tab-webhooks").await;
        let webhooks = browser
            .js(
                "document.querySelector('#views').scrollIntoView();
                 return {scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth}",
                vec![],
            )
            .await;
        assert!(
            webhooks["scroll"].as_i64() <= webhooks["client"].as_i64(),
            "horizontal scroll in the webhooks view at {width} px: {webhooks}"
        );
        browser
            .screenshot(&format!("dashboard-webhooks-{width}"))
            .await;
        browser.click("#tab-inbox").await;
        browser.js("window.scrollTo(0, 0)", vec![]).await;
    }

    // The README's pictures (docs/dashboard-*.png are these, made smaller).
    browser.viewport(1280, 900).await;
    wait_cards_match(&browser, &server.url, &key).await;
    browser.screenshot("dashboard-light").await;
    browser.color_scheme(true).await;
    browser.screenshot("dashboard-dark").await;
    browser.color_scheme(false).await;

    // axe-core in the page, light and dark, on every tab.
    let axe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/axe/node_modules/axe-core/axe.min.js"
    ))
    .expect("axe-core (scripts/setup.sh --with-browser installs it)");
    browser.js(&axe, vec![]).await;
    for dark in [false, true] {
        browser.color_scheme(dark).await;
        for tab in [
            "#tab-inbox",
            "#tab-dlq",
            "#tab-streams",
            "#tab-webhooks",
            "#tab-debug",
        ] {
            browser.click(tab).await;
            let violations = browser
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))));",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(violations, json!([]), "axe-core, {tab}, dark {dark}");
        }
    }
    browser.color_scheme(false).await;

    // Keyboard: the tabs move with the arrow keys.
    browser.click("#tab-inbox").await;
    browser
        .client
        .find(fantoccini::Locator::Css("#tab-inbox"))
        .await
        .unwrap()
        .send_keys("\u{E014}") // ArrowRight
        .await
        .unwrap();
    browser
        .until(
            "ArrowRight selects the next tab",
            "return document.activeElement.id === 'tab-dlq' && document.querySelector('#tab-dlq').getAttribute('aria-selected') === 'true'",
        )
        .await;
    assert_eq!(
        console_errors(&browser).await,
        Vec::<String>::new(),
        "console errors"
    );
}

/// A webhook receiver on 127.0.0.1 in the test process: while `failing` is set it
/// answers 500 to events whose payload says `"fail": true`, and 200 to everything else.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Hook>>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        let url = triggers_tests::serve_loopback(app).await;
        (receiver, url)
    }

    /// The requests that carried `webhook-id: event`.
    fn of(&self, event: &str) -> Vec<Hook> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|h| h.id == event).cloned().collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let fail = serde_json::from_str::<Value>(&body)
        .is_ok_and(|b| b["data"]["payload"]["fail"] == true)
        && r.failing.load(Ordering::SeqCst);
    r.got.lock().unwrap().push(Hook::new("/", &headers, body));
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// `POST /events` with `body`; the accepted event's id.
async fn send_event(url: &str, key: &str, body: Value) -> String {
    let reply = reqwest::Client::new()
        .post(format!("{url}/events"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    body["data"]["event_id"].as_str().unwrap().to_string()
}

/// `GET path` of the API as JSON, asserting a 200.
async fn get_api(url: &str, key: &str, path: &str) -> Value {
    let reply = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "GET {path}");
    reply.json().await.unwrap()
}

/// Waits until the delivery row of `event` in `#delivery-list` shows `status` (as its
/// data-status and as text) and its text has every one of `texts`.
async fn wait_delivery(browser: &Browser, event: &str, status: &str, texts: &[&str]) {
    browser
        .until(
            &format!("delivery of {event} {status} {texts:?}"),
            &format!(
                "const r = document.querySelector('#delivery-list li[data-delivery-event=\"{event}\"]');
                 return r !== null && r.dataset.status === '{status}' && r.textContent.includes('{status}')
                   && {}.every(t => r.textContent.includes(t));",
                json!(texts)
            ),
        )
        .await;
}

/// The delivery id of the row of `event` in `#delivery-list`.
async fn delivery_id(browser: &Browser, event: &str) -> String {
    browser
        .js(
            &format!("return document.querySelector('#delivery-list li[data-delivery-event=\"{event}\"]').dataset.deliveryId"),
            vec![],
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until the open attempt timeline has attempt `n` of `delivery` showing `text`.
async fn wait_attempt(browser: &Browser, delivery: &str, n: u32, text: &str) {
    browser
        .until(
            &format!("attempt {n} of delivery {delivery}: {text}"),
            &format!(
                "const a = document.querySelector('#attempt-timeline li[data-attempt=\"{n}\"][data-delivery-id=\"{delivery}\"]');
                 return a !== null && a.offsetParent !== null && a.textContent.includes({});",
                json!(text)
            ),
        )
        .await;
}

/// The text of `#endpoint-secret` once it shows a secret other than `not`.
async fn shown_secret(browser: &Browser, not: &str) -> String {
    browser
        .until(
            "a secret shown",
            &format!(
                "const s = document.querySelector('#endpoint-secret');
                 const t = s.textContent;
                 return s.offsetParent !== null && t.startsWith('whsec_') && t !== {} ? t : null;",
                json!(not)
            ),
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// Whether every request in `hooks` is signed with `secret` (one of its signatures
/// verifies).
fn verifies(hooks: &[Hook], secret: &str) -> bool {
    hooks.iter().all(|h| h.verify(secret).is_ok())
}

fn signed_with(hooks: &[Hook], secret: &str) {
    assert!(
        verifies(hooks, secret),
        "not signed with {secret}: {hooks:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhooks_view_adds_an_endpoint_follows_its_deliveries_and_resends_recovers_disables_and_deletes(
) {
    let (server, key, db, _) = serve_test_database(
        "dashboard_webhooks",
        "acme",
        &[
            "--workers",
            "1",
            "--webhook-workers",
            "1",
            "--webhook-allow-private",
        ],
    )
    .await;
    // Two attempts a second apart: a failing delivery gives up soon.
    db.batch_execute(
        "UPDATE triggers.config SET webhook_schedule_s = '{0,1}', webhook_jitter_pct = 0",
    )
    .await
    .unwrap();
    let (receiver, hook_url) = Receiver::start().await;
    let hook_url = format!("{hook_url}/hooks");
    let browser = Browser::start(1280, 900).await;
    open(&browser, &server.url, &key).await;
    set_refresh(&browser, "2000").await;
    browser.click("#tab-webhooks").await;
    browser
        .until(
            "the empty endpoint list",
            "return document.querySelector('#endpoint-empty').offsetParent !== null",
        )
        .await;

    // Added through the form: listed, enabled, and its secret shown this once.
    browser.type_into("#endpoint-url", &hook_url).await;
    browser
        .type_into("#endpoint-description", "the test's receiver")
        .await;
    browser.click("#endpoint-create").await;
    let secret = shown_secret(&browser, "").await;
    let note = browser
        .js(
            "return document.querySelector('#secret-box').textContent",
            vec![],
        )
        .await;
    assert!(
        note.as_str().unwrap().contains("will not be shown again"),
        "{note}"
    );
    let endpoint = browser
        .until(
            "the endpoint listed, enabled",
            &format!(
                "const r = document.querySelector('#endpoint-list li[data-endpoint-id]');
                 return r !== null && r.dataset.enabled === 'true' && r.textContent.includes('enabled')
                   && r.textContent.includes({}) && r.textContent.includes('every event') ? r.dataset.endpointId : null;",
                json!(hook_url)
            ),
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    let listed = get_api(&server.url, &key, "/webhooks/endpoints").await;
    assert_eq!(listed["data"][0]["endpoint_id"], endpoint.as_str());
    assert!(
        !listed.to_string().contains(&secret),
        "the API shows the secret again"
    );
    // Dismissed, it is nowhere on the page any more.
    browser.click("#secret-done").await;
    browser
        .until(
            "the secret gone from the page",
            &format!(
                "return !document.documentElement.outerHTML.includes({})",
                json!(secret)
            ),
        )
        .await;

    // The new endpoint is selected: an event it gets shows up in its deliveries,
    // succeeded, signed with the secret the page showed.
    browser
        .until(
            "the deliveries of the new endpoint",
            "return document.querySelector('#endpoint-detail').offsetParent !== null && document.querySelector('#delivery-empty').offsetParent !== null",
        )
        .await;
    let ok = send_event(&server.url, &key, json!({"payload": {"order": 1}})).await;
    wait_delivery(&browser, &ok, "succeeded", &["1 attempt", "HTTP 200"]).await;
    assert_eq!(receiver.of(&ok).len(), 1);
    signed_with(&receiver.of(&ok), &secret);
    let delivery = delivery_id(&browser, &ok).await;

    // Its attempt timeline; Resend sends it again, and the timeline shows attempt 2.
    browser
        .click(&format!(
            "#delivery-list li[data-delivery-event=\"{ok}\"] [data-action=attempts]"
        ))
        .await;
    wait_attempt(&browser, &delivery, 1, "HTTP 200").await;
    browser
        .click(&format!(
            "#delivery-list li[data-delivery-event=\"{ok}\"] [data-action=resend]"
        ))
        .await;
    triggers_tests::wait_until("the receiver got it again", || async {
        receiver.of(&ok).len() == 2
    })
    .await;
    wait_attempt(&browser, &delivery, 2, "HTTP 200").await;
    wait_delivery(&browser, &ok, "succeeded", &["2 attempts"]).await;
    browser.screenshot("dashboard-webhooks").await;

    // A new secret: shown once, and deliveries are signed with it (as soon as the
    // worker has read it: it keeps the secrets it read for a moment) beside the old one.
    browser
        .click(&format!(
            "#endpoint-list li[data-endpoint-id=\"{endpoint}\"] [data-action=rotate]"
        ))
        .await;
    let rotated = shown_secret(&browser, &secret).await;
    browser
        .until(
            "the rotation shown on the endpoint",
            &format!("return document.querySelector('#endpoint-list li[data-endpoint-id=\"{endpoint}\"]').textContent.includes('previous secret')"),
        )
        .await;
    browser.click("#secret-done").await;
    triggers_tests::wait_until("a delivery signed with the new secret", || async {
        let probe = send_event(&server.url, &key, json!({"payload": {"probe": true}})).await;
        triggers_tests::wait_until("the probe delivered", || async {
            !receiver.of(&probe).is_empty()
        })
        .await;
        verifies(&receiver.of(&probe), &rotated)
    })
    .await;

    // A receiver failing every attempt: the delivery ends failed (and is counted);
    // once it answers again, Recover queues the delivery again and it succeeds.
    receiver.failing.store(true, Ordering::SeqCst);
    let bad = send_event(&server.url, &key, json!({"payload": {"fail": true}})).await;
    wait_delivery(&browser, &bad, "failed", &["2 attempts", "HTTP 500"]).await;
    assert_eq!(receiver.of(&bad).len(), 2);
    signed_with(&receiver.of(&bad), &rotated);
    signed_with(&receiver.of(&bad), &secret);
    wait_card(&browser, "webhooks_failed", "1").await;
    let bad_delivery = delivery_id(&browser, &bad).await;
    browser
        .click(&format!(
            "#delivery-list li[data-delivery-event=\"{bad}\"] [data-action=attempts]"
        ))
        .await;
    wait_attempt(&browser, &bad_delivery, 2, "HTTP 500").await;
    receiver.failing.store(false, Ordering::SeqCst);
    browser
        .click(&format!(
            "#endpoint-list li[data-endpoint-id=\"{endpoint}\"] [data-action=recover]"
        ))
        .await;
    browser
        .until(
            "Recover says what it queued",
            "return document.querySelector('#webhooks-status-line').textContent.includes('queued 1 failed delivery')",
        )
        .await;
    wait_delivery(&browser, &bad, "succeeded", &["3 attempts"]).await;
    wait_attempt(&browser, &bad_delivery, 3, "HTTP 200").await;
    wait_attempt(&browser, &bad_delivery, 1, "HTTP 500").await;
    assert_eq!(receiver.of(&bad).len(), 3);
    wait_card(&browser, "webhooks_failed", "0").await;

    // Disabled: shown as disabled, with the reason the API gives.
    browser
        .click(&format!(
            "#endpoint-list li[data-endpoint-id=\"{endpoint}\"] [data-action=disable]"
        ))
        .await;
    browser
        .until(
            "the endpoint disabled",
            &format!("const r = document.querySelector('#endpoint-list li[data-endpoint-id=\"{endpoint}\"]'); return r.dataset.enabled === 'false' && r.textContent.includes('disabled') && r.querySelector('[data-action=enable]') !== null"),
        )
        .await;
    let reason = get_api(
        &server.url,
        &key,
        &format!("/webhooks/endpoints/{endpoint}"),
    )
    .await["data"]["disabled_reason"]
        .as_str()
        .expect("a disabled endpoint has a reason")
        .to_string();
    let row = browser
        .js(
            &format!("return document.querySelector('#endpoint-list li[data-endpoint-id=\"{endpoint}\"]').textContent"),
            vec![],
        )
        .await;
    assert!(row.as_str().unwrap().contains(&reason), "{row}");

    // Deleted after a second, confirming click; the first one deletes nothing.
    let delete = format!("#endpoint-list li[data-endpoint-id=\"{endpoint}\"] [data-action=delete]");
    browser.click(&delete).await;
    browser
        .until(
            "the delete button asks again",
            &format!("const b = document.querySelector('{delete}'); return b.dataset.confirm === 'true' && b.textContent.includes('Really delete?')"),
        )
        .await;
    assert_eq!(
        get_api(&server.url, &key, "/webhooks/endpoints").await["data"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "deleted on the first click"
    );
    browser.click(&format!("{delete}[data-confirm=true]")).await;
    browser
        .until(
            "the endpoint gone",
            "return document.querySelector('#endpoint-list li[data-endpoint-id]') === null && document.querySelector('#endpoint-empty').offsetParent !== null && document.querySelector('#endpoint-detail').hidden",
        )
        .await;
    assert_eq!(
        get_api(&server.url, &key, "/webhooks/endpoints").await["data"],
        json!([])
    );
    assert_eq!(
        console_errors(&browser).await,
        Vec::<String>::new(),
        "console errors"
    );
}
