//! The dashboard (SPEC §7) in a real headless Chromium, served by a real `triggers serve`:
//! the cards equal `/metrics`; each debug button's event shows up in the cards and the
//! inbox through the live stream (no reload); ack and retry; the error state and its
//! recovery when the database stops and starts; 4/2/1 columns without horizontal scroll;
//! axe-core finds no accessibility violation in either colour scheme; no console error
//! and no request outside the server.

use std::collections::HashSet;

use serde_json::{json, Value};
use triggers_tests::browser::Browser;
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
    let deadline = std::time::Instant::now() + triggers_tests::PATIENCE;
    loop {
        let m = metrics(url, key).await;
        match cards_match(&cards(browser).await, &m) {
            Ok(()) => return,
            Err(e) => assert!(std::time::Instant::now() < deadline, "cards: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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
    let deadline = std::time::Instant::now() + triggers_tests::PATIENCE;
    loop {
        if let Some(id) = accepted(db).await.difference(&before).next() {
            browser.click("#tab-inbox").await;
            return id.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was sent for {flag}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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
        for tab in ["#tab-inbox", "#tab-dlq", "#tab-streams", "#tab-debug"] {
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
