//! Following the live stream: `DATABASE_URL=postgres://… cargo run -p triggers-client --example subscribe -- 10 [POSITION]`
//!
//! Prints each event stored from now on (or after POSITION, the position of an event
//! printed before) with its position, and exits after the given number of events.
//! Something must process the queue meanwhile (`triggers worker`, `triggers serve`, or
//! the consumer example). Stop it and run it again with the last position: it goes on
//! from there, nothing missed, nothing twice.

use futures_util::StreamExt;
use triggers_client::{Client, LiveFilter, Position};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let mut args = std::env::args().skip(1);
    let want: usize = args
        .next()
        .map_or(Ok(usize::MAX), |n| n.parse())
        .map_err(|_| "count must be a number")?;
    let from: Option<Position> = args.next().map(|p| p.parse()).transpose()?;
    let tenant = std::env::var("TRIGGERS_TENANT").unwrap_or_else(|_| "default".into());
    let client = Client::connect(&url)?;
    let events = client
        .subscribe(LiveFilter::tenant(tenant), from)
        .take(want);
    futures_util::pin_mut!(events);
    while let Some(stored) = events.next().await {
        let stored = stored?;
        println!(
            "{} {} {}",
            stored.position, stored.event.event_id, stored.event.payload
        );
    }
    Ok(())
}
