//! Back-pressure: while the queue holds `--max-queue-depth` messages, `POST /events` and
//! `POST /events/batch` answer 503 SERVICE_UNAVAILABLE with Retry-After, and accept again
//! once the queue drains; every event that got a 200 is kept.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde_json::{json, Value};
use triggers_tests::{scalar, serve_test_database, wait_until};

/// POST `path` with `body`: status, Retry-After, the answer.
async fn post(base: &str, key: &str, path: &str, body: Value) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry_after,
        response.json().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after_until_it_drains() {
    let (server, key, db, _) = serve_test_database(
        "backpressure",
        "t",
        &["--workers", "0", "--max-queue-depth", "5"],
    )
    .await;
    let base = server.url.trim_end_matches('/').to_string();
    let event = json!({"payload": {"n": 1}});
    let accepted = Rc::new(Cell::new(0_i64));
    let refused = Rc::new(RefCell::new(None));
    wait_until("POST /events refused while the queue is full", || {
        let (base, key, event) = (base.clone(), key.clone(), event.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        async move {
            let (status, retry_after, body) = post(&base, &key, "/events", event).await;
            if status == 200 {
                accepted.set(accepted.get() + 1);
                return false;
            }
            *refused.borrow_mut() = Some((status, retry_after, body));
            true
        }
    })
    .await;
    let (status, retry_after, body) = refused.borrow_mut().take().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the queue is full"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        accepted.get() >= 5,
        "the bound's worth accepted first: {}",
        accepted.get()
    );
    let (status, _, _) = post(&base, &key, "/events/batch", json!({"events": [event]})).await;
    assert_eq!(status, 503, "a batch too");

    // Drained, the server accepts again; every event that got a 200 is there.
    db.batch_execute("SELECT * FROM triggers.process_batch(1000)")
        .await
        .unwrap();
    wait_until("POST /events accepted again", || {
        let (base, key, event, accepted) =
            (base.clone(), key.clone(), event.clone(), accepted.clone());
        async move {
            let (status, _, _) = post(&base, &key, "/events", event).await;
            if status == 200 {
                accepted.set(accepted.get() + 1);
            }
            status == 200
        }
    })
    .await;
    db.batch_execute("SELECT * FROM triggers.process_batch(1000)")
        .await
        .unwrap();
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM triggers.events").await,
        accepted.get(),
        "every accepted event stored, none of the refused"
    );
}
