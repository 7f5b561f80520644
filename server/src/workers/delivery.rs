//! The webhook delivery workers (SPEC §10): each takes due deliveries from the outbox
//! (`_claim_deliveries`: SKIP LOCKED, leased), POSTs the event signed per Standard
//! Webhooks, and records what came back (`_record_attempts`, which keeps the schedule,
//! Retry-After, 410 and the disabling rules). Delivery is at least once: an attempt
//! whose outcome is never recorded (the server died) is due again when its lease ends,
//! with the same `webhook-id`, so receivers dedupe on it.
//!
//! Only public addresses are sent to unless `--webhook-allow-private`: a host name is
//! resolved by [`PublicOnly`], which hands the HTTP client only the public addresses, so
//! the address checked is the address connected to (no DNS rebinding); an address
//! written in the URL is checked before sending. Proxy settings of the environment
//! (`HTTP_PROXY`, `ALL_PROXY`, …) are ignored: a proxy would resolve and connect in our
//! place, past that check. Only `--webhook-proxy` sends through one, and then that proxy
//! must refuse private addresses itself. What an attempt's error stores names no
//! address but one written in the URL ([`redact_addresses`]).

use std::collections::hash_map::{Entry, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::watch;
use triggers_client::{
    AttemptOutcome, ClaimedDelivery, Client, Event, EventId, Listener, STORED_CHANNEL,
};
use triggers_core::webhooks::{is_public_address, redact_addresses, signature_header, Secret};

use crate::cli::WebhookArgs;
use crate::render::{event_json, ts};
use crate::workers::processing::notified;
use crate::workers::tasks::Tasks;

/// How much longer than the timeout a claimed delivery stays leased (an attempt's
/// outcome is recorded within it, unless the server died: then it is due again).
const LEASE_MARGIN_S: u64 = 10;
/// Requests one worker keeps in flight (to any endpoints; the per-endpoint cap,
/// `webhook_endpoint_concurrency`, is kept by the claim over all workers).
const IN_FLIGHT: usize = 64;
/// How long an idle worker waits for a notification before looking anyway (retries
/// come due without one).
const POLL: Duration = Duration::from_millis(100);
/// After finding work, a worker looks this often for a while (a batch stored without
/// a notification of its own — they are throttled — is found as soon), ...
const EAGER_POLL: Duration = Duration::from_millis(5);
/// ... for this long.
const EAGER_FOR: Duration = Duration::from_millis(100);
/// How much of an answer's body is logged.
const RESPONSE_BYTES: usize = 1000;

/// Starts `args.webhook_workers` delivery workers on `client` (whose connections carry
/// the secrets key); stopped, each finishes the attempts in flight (at most
/// `--webhook-timeout`).
pub fn delivery_workers(client: &Client, args: &WebhookArgs) -> Tasks {
    let timeout = Duration::from_secs(args.webhook_timeout);
    let http = http_client(args, timeout);
    let allow_private = args.webhook_allow_private;
    let lease_s = (args.webhook_timeout + LEASE_MARGIN_S).min(i32::MAX as u64) as i32;
    Tasks::spawn(args.webhook_workers.into(), |_, stopped| {
        Worker {
            client: client.clone(),
            http: http.clone(),
            allow_private,
            timeout,
            lease_s,
        }
        .run(stopped)
    })
}

/// One shared HTTP client (connections reused across deliveries): no redirects
/// followed, `timeout` for the whole exchange, public addresses only unless allowed,
/// no proxy but `--webhook-proxy` (never one from the environment).
fn http_client(args: &WebhookArgs, timeout: Duration) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("triggers/", env!("CARGO_PKG_VERSION")));
    builder = match &args.webhook_proxy {
        Some(proxy) => builder.proxy(proxy.clone()),
        None => builder.no_proxy(),
    };
    if !args.webhook_allow_private {
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
                // Which addresses they were stays here: a tenant could map the
                // internal network by pointing hosts at it.
                return Err(format!(
                    "refused: {host} resolves to no public address (the server's --webhook-allow-private allows it)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One delivery worker: claims due deliveries, keeps up to [`IN_FLIGHT`] requests
/// going, and records what they got in one transaction per handful.
struct Worker {
    client: Client,
    http: reqwest::Client,
    allow_private: bool,
    /// How long a receiver has to answer.
    timeout: Duration,
    /// How long a claimed delivery is leased.
    lease_s: i32,
}

type Flight =
    std::pin::Pin<Box<dyn std::future::Future<Output = (ClaimedDelivery, AttemptOutcome)> + Send>>;

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut flying: FuturesUnordered<Flight> = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut listener: Option<Listener> = None;
        let mut found_at: Option<Instant> = None;
        loop {
            // What finished, recorded together: one transaction for the lot.
            while let Some(Some(finished)) = flying.next().now_or_never() {
                done.push(finished);
            }
            self.record(&done).await;
            done.clear();
            let stopping = *stop.borrow();
            if stopping && flying.is_empty() {
                break;
            }
            if !stopping && flying.len() < IN_FLIGHT {
                if listener.is_none() {
                    listener = self.client.listener_on(STORED_CHANNEL).await.ok();
                }
                match self.take(IN_FLIGHT - flying.len()).await {
                    Ok(flights) if !flights.is_empty() => {
                        flying.extend(flights);
                        found_at = Some(Instant::now());
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: cannot take deliveries; trying again in 1 s");
                        listener = None;
                        found_at = None;
                        if flying.is_empty() {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = stop.changed() => {}
                            }
                            continue;
                        }
                    }
                }
            }
            let wait = match found_at {
                Some(at) if at.elapsed() < EAGER_FOR => EAGER_POLL,
                _ => POLL,
            };
            tokio::select! {
                Some(finished) = flying.next(), if !flying.is_empty() => done.push(finished),
                woken = notified(listener.as_ref()), if !stopping => if woken.is_err() { listener = None },
                _ = tokio::time::sleep(wait), if !stopping => {}
                _ = stop.changed(), if !stopping => {}
                else => {}
            }
        }
    }

    /// Logs attempts' outcomes; one that is not recorded is tried again when its lease
    /// runs out.
    async fn record(&self, done: &[(ClaimedDelivery, AttemptOutcome)]) {
        if done.is_empty() {
            return;
        }
        if let Err(e) = self.client.record_attempts(done).await {
            tracing::warn!(error = %e, attempts = done.len(), "webhooks: cannot record attempts");
        }
    }

    /// Claims up to `room` due deliveries and starts a request for each: their events
    /// are read in one query, each endpoint's secrets once per claim (so a rotation
    /// signs every claim after it with both secrets).
    async fn take(&self, room: usize) -> Result<Vec<Flight>, triggers_client::Error> {
        let claimed = self
            .client
            .claim_deliveries(room.min(i32::MAX as usize) as i32, self.lease_s)
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<EventId> = claimed.iter().map(|d| d.event_id).collect();
        let events: HashMap<EventId, Arc<Event>> = self
            .client
            .delivery_events(&ids)
            .await?
            .into_iter()
            .map(|e| (e.event_id, Arc::new(e)))
            .collect();
        let mut secrets: HashMap<uuid::Uuid, Result<Arc<Vec<Secret>>, String>> = HashMap::new();
        let mut flights = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            let secrets = match secrets.entry(delivery.endpoint_id) {
                Entry::Occupied(read) => read.get().clone(),
                Entry::Vacant(slot) => slot
                    .insert(self.secrets(delivery.endpoint_id).await)
                    .clone(),
            };
            let event = events.get(&delivery.event_id).cloned();
            let (http, allow_private, timeout) =
                (self.http.clone(), self.allow_private, self.timeout);
            flights.push(Box::pin(async move {
                let outcome =
                    attempt(&http, &delivery, event, secrets, allow_private, timeout).await;
                (delivery, outcome)
            }) as Flight);
        }
        Ok(flights)
    }

    /// The secrets an endpoint signs with now.
    async fn secrets(&self, endpoint_id: uuid::Uuid) -> Result<Arc<Vec<Secret>>, String> {
        let texts = self
            .client
            .endpoint_secrets(endpoint_id)
            .await
            .map_err(|e| format!("cannot read the endpoint's secrets: {e}"))?;
        Ok(Arc::new(
            texts.iter().filter_map(|t| Secret::parse(t).ok()).collect(),
        ))
    }
}

/// One attempt at a delivery: what it got, never an error.
async fn attempt(
    http: &reqwest::Client,
    delivery: &ClaimedDelivery,
    event: Option<Arc<Event>>,
    secrets: Result<Arc<Vec<Secret>>, String>,
    allow_private: bool,
    timeout: Duration,
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
    // An address written in the URL: the one address an error may name.
    let written: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        _ => None,
    };
    if !allow_private {
        if let Some(ip) = written.filter(|ip| !is_public_address(*ip)) {
            return failed(format!(
                "refused: {ip} is not a public address (the server's --webhook-allow-private allows it)"
            ));
        }
    }
    let Some(event) = event else {
        return failed("the event no longer exists (purged)".into());
    };
    let secrets = match secrets {
        Ok(secrets) if !secrets.is_empty() => secrets,
        Ok(_) => return failed("the endpoint has no secret to sign with".into()),
        Err(e) => return failed(e),
    };
    let now = chrono::Utc::now();
    let body = json!({"type": "event.stored", "timestamp": ts(&now), "data": event_json(&event)})
        .to_string();
    let id = delivery.event_id.to_string();
    let signature = signature_header(&secrets, &id, now.timestamp(), body.as_bytes());
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
        Err(e) => return failed(redact_addresses(&describe(&e, timeout), written)),
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
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
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
