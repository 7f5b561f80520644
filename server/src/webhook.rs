//! The webhook delivery workers (SPEC §10): each takes due deliveries from the outbox
//! (`_claim_deliveries`: SKIP LOCKED, leased), POSTs the event signed per Standard
//! Webhooks, and records what came back (`_record_attempt`, which keeps the schedule,
//! Retry-After, 410 and the disabling rules). Delivery is at least once: an attempt
//! whose outcome is never recorded (the server died) is due again when its lease ends,
//! with the same `webhook-id`, so receivers dedupe on it.
//!
//! Only public addresses are sent to unless `--webhook-allow-private`: a host name is
//! resolved by [`PublicOnly`], which hands the HTTP client only the public addresses, so
//! the address checked is the address connected to (no DNS rebinding); an address
//! written in the URL is checked before sending.

use std::collections::hash_map::{Entry, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use triggers_client::{AttemptOutcome, ClaimedDelivery, Client};
use triggers_core::webhooks::{is_public_address, signature_header, Secret};

use crate::cli::WebhookArgs;
use crate::http::render::{event_json, ts};
use crate::tasks::Tasks;

/// How long a receiver has to answer, body included.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How long a claimed delivery stays leased: longer than an attempt can take.
const LEASE_S: i32 = 60;
/// Deliveries a worker takes at a time.
const CLAIM: i32 = 8;
/// How long an idle worker waits before looking again.
const POLL: Duration = Duration::from_millis(100);
/// How much of an answer's body is logged.
const RESPONSE_BYTES: usize = 1000;

/// Starts `args.webhook_workers` delivery workers on `client` (whose connections carry
/// the secrets key); stopped, each finishes the attempt in flight (at most [`TIMEOUT`]).
pub fn delivery_workers(client: &Client, args: &WebhookArgs) -> Tasks {
    let http = http_client(args.webhook_allow_private);
    let allow_private = args.webhook_allow_private;
    Tasks::spawn(args.webhook_workers.into(), |_, stopped| {
        run(client.clone(), http.clone(), allow_private, stopped)
    })
}

/// One shared HTTP client (connections reused across deliveries): no redirects
/// followed, [`TIMEOUT`] for the whole exchange, public addresses only unless allowed.
fn http_client(allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("triggers/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().expect("an HTTP client with these settings")
}

/// Resolves a host name to its public addresses only; none is an error naming them.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| is_public_address(a.ip()))
                .collect();
            if public.is_empty() {
                let seen: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "refused: {host} resolves to {} — not a public address (the server's --webhook-allow-private allows it)",
                    seen.join(", ")
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

async fn run(
    client: Client,
    http: reqwest::Client,
    allow_private: bool,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let claimed = match client.claim_deliveries(CLAIM, LEASE_S).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot take deliveries; trying again in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        // The secrets of each endpoint, read (and unsealed) once per claim.
        let mut secrets = HashMap::new();
        for delivery in claimed {
            let outcome = attempt(&client, &http, &delivery, allow_private, &mut secrets).await;
            if let Err(e) = client.record_attempt(&delivery, &outcome).await {
                // Not recorded: the lease runs out and the delivery is tried again.
                tracing::warn!(error = %e, delivery = delivery.delivery_id, "webhooks: cannot record an attempt");
            }
        }
    }
}

/// One attempt at a delivery: what it got, never an error.
async fn attempt(
    client: &Client,
    http: &reqwest::Client,
    delivery: &ClaimedDelivery,
    allow_private: bool,
    secrets: &mut HashMap<uuid::Uuid, Vec<Secret>>,
) -> AttemptOutcome {
    let started = Instant::now();
    let failed = |error: String| AttemptOutcome {
        latency_ms: started.elapsed().as_millis().min(i32::MAX as u128) as i32,
        error: Some(error),
        ..AttemptOutcome::default()
    };
    let url = match reqwest::Url::parse(&delivery.url) {
        Ok(url) => url,
        Err(e) => return failed(format!("the endpoint's url cannot be parsed: {e}")),
    };
    if !allow_private {
        let literal: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !is_public_address(*ip)) {
            return failed(format!(
                "refused: {ip} is not a public address (the server's --webhook-allow-private allows it)"
            ));
        }
    }
    let event = match client.get_event(&delivery.tenant, delivery.event_id).await {
        Ok(event) => event,
        Err(e) => return failed(format!("cannot read the event: {e}")),
    };
    let secrets = match secrets.entry(delivery.endpoint_id) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(slot) => match client.endpoint_secrets(delivery.endpoint_id).await {
            Ok(texts) => slot.insert(texts.iter().filter_map(|t| Secret::parse(t).ok()).collect()),
            Err(e) => return failed(format!("cannot read the endpoint's secrets: {e}")),
        },
    };
    if secrets.is_empty() {
        return failed("the endpoint has no secret to sign with".into());
    }
    let now = chrono::Utc::now();
    let body = json!({"type": "event.stored", "timestamp": ts(&now), "data": event_json(&event)})
        .to_string();
    let id = delivery.event_id.to_string();
    let signature = signature_header(secrets, &id, now.timestamp(), body.as_bytes());
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", now.timestamp().to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return failed(describe(&e)),
    };
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let retry_after_s = matches!(status, 429 | 503)
        .then(|| {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)?
                .to_str()
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()
        })
        .flatten()
        .map(|s| s.clamp(0, 86_400));
    let mut text = Vec::new();
    while text.len() < RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => text.extend_from_slice(&chunk),
            _ => break,
        }
    }
    text.truncate(RESPONSE_BYTES);
    let error = match status {
        200..=299 => None,
        300..=399 => Some(format!(
            "HTTP {status}: a redirect, which is never followed, is a failure"
        )),
        _ => Some(format!("HTTP {status}")),
    };
    AttemptOutcome {
        status_code: Some(i32::from(status)),
        latency_ms,
        response: Some(String::from_utf8_lossy(&text).into_owned()),
        error,
        retry_after_s,
    }
}

/// What went wrong with a request, its causes included (the refusal of [`PublicOnly`]
/// is one of them).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", TIMEOUT.as_secs());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
