//! A consumer loop: `DATABASE_URL=postgres://… cargo run -p triggers-client --example consumer -- 10`
//!
//! Processes the queue, then reads the tenant's pending events and acknowledges each,
//! sleeping on the enqueue notification when there is nothing to do (no polling).
//! Exits after acknowledging the given number of events, or after 10 idle seconds.

use std::time::Duration;

use triggers_client::{Client, InboxQuery, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let want: usize = std::env::args()
        .nth(1)
        .map_or(Ok(usize::MAX), |n| n.parse())
        .map_err(|_| "count must be a number")?;
    let tenant = std::env::var("TRIGGERS_TENANT").unwrap_or_else(|_| "default".into());
    let client = Client::connect(&url)?;
    let listener = client.listener().await?;
    // A producer session sends at most one NOTIFY per notify_throttle_ms (triggers.config),
    // so an idle consumer looks once more after that long before sleeping.
    let throttle_ms = client.settings().await?.notify_throttle_ms;
    let linger = Duration::from_millis(u64::try_from(throttle_ms).unwrap_or(0));
    let mut lingered = false;
    let mut acked = 0;
    while acked < want {
        // Drain the queue into the store, then hand out what is pending.
        while client.process_batch(None, None).await?.read > 0 {}
        let page = client
            .inbox(
                &InboxQuery::new(tenant.as_str())
                    .status([Status::Pending])
                    .limit(100),
            )
            .await?;
        for event in &page.events {
            client.ack(&tenant, event.event_id).await?;
            println!("acked {} {}", event.event_id, event.payload);
            acked += 1;
        }
        if !page.events.is_empty() {
            lingered = false;
        } else if !lingered {
            listener.wait_for_events(linger).await?;
            lingered = true;
        } else if listener.wait_for_events(Duration::from_secs(10)).await? {
            lingered = false;
        } else {
            eprintln!("idle for 10 s; stopping");
            break;
        }
    }
    println!("done: {acked} acked");
    Ok(())
}
