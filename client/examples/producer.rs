//! Enqueues events: `DATABASE_URL=postgres://… cargo run -p triggers-client --example producer -- 10`
//!
//! Prints one line per event: its id, and whether it was a duplicate of an earlier one
//! with the same idempotency key.

use triggers_client::{Client, NewEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let count: u32 = std::env::args()
        .nth(1)
        .map_or(Ok(10), |n| n.parse())
        .map_err(|_| "count must be a number")?;
    let tenant = std::env::var("TRIGGERS_TENANT").unwrap_or_else(|_| "default".into());
    let client = Client::connect(&url)?;
    for n in 0..count {
        let event = NewEvent::new(serde_json::json!({"n": n, "kind": "example"}))
            .tenant(tenant.as_str())
            .metadata(serde_json::json!({"source": "producer"}))
            .idempotency_key(format!("example-{n}"));
        let sent = client.enqueue(&event).await?;
        println!("enqueued {} duplicate={}", sent.event_id, sent.duplicate);
    }
    Ok(())
}
