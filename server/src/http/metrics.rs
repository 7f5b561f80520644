//! `GET /metrics` (JSON), `GET /metrics/history` (per minute, for charts) and
//! `GET /metrics/prometheus` (Prometheus text): the tenant's counts by status, queue and
//! dead-letter depth, rate and latency; for Prometheus also counters that only grow
//! (`triggers_events_*_total`) and an all-time latency histogram.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::auth::Tenant;
use super::error::{AppError, ErrorCode};
use super::parse::{self, int_param, Params};
use super::shapes::{HistoryOut, MetricsOut};
use super::state::AppState;
use crate::render::{timestamp_now, ts};

/// `GET /metrics`, `GET /metrics/history`, `GET /metrics/prometheus`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/history", get(history))
        .route("/metrics/prometheus", get(prometheus))
}

/// GET /metrics
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "The tenant's metrics", body = MetricsOut)))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Response, AppError> {
    let m = state.client.metrics(Some(&tenant)).await?;
    let mut data = serde_json::to_value(&m).map_err(|e| {
        AppError::new(ErrorCode::InternalError, "internal error").with_detail(e.to_string())
    })?;
    data["last_processed_at"] = json!(m.last_processed_at.as_ref().map(ts));
    data["webhooks"] = json!(state.client.webhook_metrics(Some(&tenant)).await?);
    Ok(Json(json!({"data": data, "timestamp": timestamp_now()})).into_response())
}

/// GET /metrics/history
#[utoipa::path(get, path = "/metrics/history", params(("minutes" = Option<i32>, Query, minimum = 1, maximum = 1440, description = "how many minutes back, the current one last (default 60)")), responses((status = 200, description = "Per minute: events processed and latency percentiles", body = HistoryOut), (status = 400, description = "minutes out of range", body = super::shapes::ErrorEnvelope)))]
pub(super) async fn history(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["minutes"], false)?;
    let minutes = int_param(&pairs, "minutes")?.unwrap_or(60);
    let rows = state.client.metrics_history(Some(&tenant), minutes).await?;
    let data: Vec<_> = rows
        .iter()
        .map(|m| {
            json!({
                "minute": ts(&m.minute),
                "processed": m.processed,
                "latency_ms": {"p50": m.p50_ms, "p95": m.p95_ms, "p99": m.p99_ms},
            })
        })
        .collect();
    Ok(Json(json!({"data": data, "timestamp": timestamp_now()})).into_response())
}

/// GET /metrics/prometheus
#[utoipa::path(get, path = "/metrics/prometheus", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub(super) async fn prometheus(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Response, AppError> {
    let m = state.client.metrics(Some(&tenant)).await?;
    let c = state.client.counters(Some(&tenant)).await?;
    let w = state.client.webhook_metrics(Some(&tenant)).await?;
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            text.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let t = format!(
        "tenant=\"{}\"",
        tenant.replace('\\', "\\\\").replace('"', "\\\"")
    );
    metric(
        "triggers_events",
        "gauge",
        "Stored events by status.",
        &[
            (&format!("{t},status=\"pending\""), m.pending as f64),
            (&format!("{t},status=\"delivered\""), m.delivered as f64),
            (&format!("{t},status=\"failed\""), m.failed as f64),
        ],
    );
    metric(
        "triggers_queue_depth",
        "gauge",
        "Messages waiting in the queue.",
        &[(&t, m.queue_depth as f64)],
    );
    metric(
        "triggers_dlq_messages",
        "gauge",
        "Messages in the dead-letter queue.",
        &[(&t, m.dlq_count as f64)],
    );
    metric(
        "triggers_streams",
        "gauge",
        "Streams held back: waiting on a backing-off head, or halted on a dead one.",
        &[
            (&format!("{t},state=\"waiting\""), m.streams_waiting as f64),
            (&format!("{t},state=\"halted\""), m.streams_halted as f64),
        ],
    );
    metric(
        "triggers_oldest_queued_age_seconds",
        "gauge",
        "Age of the oldest queued message.",
        &[(&t, m.oldest_queued_age_s)],
    );
    metric(
        "triggers_processing_rate_per_minute",
        "gauge",
        "Events stored per minute, last 5 minutes.",
        &[(&t, m.processing_rate_per_min)],
    );
    // Quantiles over the last 5 minutes (ms in, seconds out): a summary's samples without
    // its _sum and _count (the histogram below has those); a quantile with no data has
    // no sample.
    let quantiles = |[p50, p95, p99]: [Option<f64>; 3]| -> Vec<(String, f64)> {
        [("0.5", p50), ("0.95", p95), ("0.99", p99)]
            .into_iter()
            .filter_map(|(q, v)| v.map(|v| (format!("{t},quantile=\"{q}\""), v / 1000.0)))
            .collect()
    };
    let latency = quantiles([m.latency_ms.p50, m.latency_ms.p95, m.latency_ms.p99]);
    let latency: Vec<(&str, f64)> = latency.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "triggers_latency_seconds",
        "summary",
        "Enqueue-to-stored latency quantiles, last 5 minutes.",
        &latency,
    );
    metric(
        "triggers_webhook_deliveries",
        "gauge",
        "Webhook deliveries kept, by status.",
        &[
            (&format!("{t},status=\"pending\""), w.pending as f64),
            (&format!("{t},status=\"succeeded\""), w.succeeded as f64),
            (&format!("{t},status=\"failed\""), w.failed as f64),
        ],
    );
    metric(
        "triggers_webhook_attempts",
        "gauge",
        "Attempts made at the webhook deliveries kept.",
        &[(&t, w.attempts as f64)],
    );
    let delivery = quantiles([w.latency_ms.p50, w.latency_ms.p95, w.latency_ms.p99]);
    let delivery: Vec<(&str, f64)> = delivery.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "triggers_webhook_latency_seconds",
        "summary",
        "Stored-to-received latency quantiles of each endpoint's last 1,000 successful deliveries.",
        &delivery,
    );
    for (name, value, help) in [
        (
            "enqueued",
            c.enqueued,
            "Events queued by producers (a repeated idempotency key is not counted).",
        ),
        (
            "stored",
            c.stored,
            "Times processing stored an event (again after a manual retry).",
        ),
        (
            "retried",
            c.retried,
            "Times an event was queued again after a failure: back-off, manual retry, redrive.",
        ),
        (
            "dead_lettered",
            c.dead_lettered,
            "Messages moved to the dead-letter queue.",
        ),
        (
            "acknowledged",
            c.acknowledged,
            "Events acknowledged (pending to delivered).",
        ),
    ] {
        metric(
            &format!("triggers_events_{name}_total"),
            "counter",
            help,
            &[(&t, value as f64)],
        );
    }
    // The histogram's samples: cumulative buckets (bounds are the edges of the stored log
    // histogram, so each count is exact for its bound), +Inf, then sum and count.
    let name = "triggers_processing_latency_seconds";
    text.push_str(&format!(
        "# HELP {name} Enqueue-to-stored latency of every processed event.\n# TYPE {name} histogram\n"
    ));
    for b in &c.latency_buckets {
        text.push_str(&format!(
            "{name}_bucket{{{t},le=\"{}\"}} {}\n",
            b.le_s, b.count
        ));
    }
    text.push_str(&format!(
        "{name}_bucket{{{t},le=\"+Inf\"}} {}\n",
        c.latency_count
    ));
    text.push_str(&format!("{name}_sum{{{t}}} {}\n", c.latency_sum_s));
    text.push_str(&format!("{name}_count{{{t}}} {}\n", c.latency_count));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
