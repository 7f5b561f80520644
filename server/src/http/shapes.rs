//! The shapes of request bodies and answers as `/openapi.json` describes them (utoipa
//! `ToSchema` types). Handlers build their JSON with `json!`; these types exist for the
//! document only, so they are never constructed (hence `dead_code`). String patterns
//! are literals (utoipa takes no constants): a test holds each copy to
//! `openapi::TEXT_PATTERN` / `HEADER_PATTERN`.

use utoipa::ToSchema;

/// An event to enqueue. Unknown fields are refused (400 INVALID_PARAMETER). No string or
/// key may hold a NUL character (`\u0000`, which Postgres cannot store) and numbers keep
/// their exact digits, up to Postgres's `numeric` (131,072 digits before the point,
/// 16,383 after); the payload's stored size is at most `max_payload_bytes` (1 MiB).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventIn {
    /// Any JSON object.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// A JSON object, or null.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Makes enqueueing idempotent within the tenant (or send the Idempotency-Key header).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F]*$"
    )]
    idempotency_key: Option<String>,
    /// An ordering stream.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F]*$"
    )]
    stream: Option<String>,
}

/// 1 to 1,000 events, all or nothing.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchIn {
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<EventIn>,
}

/// A stored event.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventOut {
    event_id: uuid::Uuid,
    status: StatusName,
    /// The producer's object, numbers and strings exactly as sent.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    stream: Option<String>,
    seq: Option<i64>,
    /// RFC 3339, UTC, milliseconds.
    created_at: String,
    updated_at: String,
    processed_at: Option<String>,
    delivered_at: Option<String>,
    retry_count: i32,
    error_message: Option<String>,
}

/// An event's status.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StatusName {
    Pending,
    Delivered,
    Failed,
}

/// `POST /events`: accepted (committed).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Accepted {
    data: AcceptedData,
    timestamp: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AcceptedData {
    event_id: uuid::Uuid,
    /// Always "accepted".
    #[schema(pattern = "^accepted$")]
    status: String,
    timestamp: String,
    /// Present (true) when the idempotency key was seen before: event_id is the first event's.
    duplicate: Option<bool>,
}

/// `POST /events/batch`: all accepted (committed), ids in order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchAccepted {
    data: BatchAcceptedData,
    timestamp: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchAcceptedData {
    event_ids: Vec<uuid::Uuid>,
    count: i64,
    #[schema(pattern = "^accepted$")]
    status: String,
    timestamp: String,
}

/// `GET /events/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventEnvelope {
    data: EventOut,
}

/// `GET /inbox`: one page.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InboxPage {
    data: Vec<EventOut>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
    limit: i32,
}

/// `POST /inbox/{id}/ack`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Acked {
    data: AckedData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AckedData {
    event_id: uuid::Uuid,
    #[schema(pattern = "^delivered$")]
    status: String,
    timestamp: String,
}

/// `POST /inbox/{id}/retry`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Retrying {
    data: RetryingData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RetryingData {
    event_id: uuid::Uuid,
    #[schema(pattern = "^retrying$")]
    status: String,
    /// The manual attempt, 1 to `triggers.config.max_manual_retries` (3 by default).
    #[schema(minimum = 1, maximum = 100)]
    new_attempt: i32,
}

/// `GET /dlq`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeadLetters {
    data: Vec<DeadLetterOut>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeadLetterOut {
    msg_id: i64,
    event_id: Option<uuid::Uuid>,
    error: Option<String>,
    attempts: Option<i32>,
    failed_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
}

/// `POST /dlq/redrive`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Redriven {
    data: RedrivenData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RedrivenData {
    redriven: i32,
    timestamp: String,
}

/// One ordered stream (SPEC §4.4).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamOut {
    name: String,
    /// The last seq handed out at enqueue.
    last_seq: i64,
    /// Every seq up to this one is finished (stored, or dead-lettered and passed).
    done_seq: i64,
    state: StreamStateName,
    /// The event the stream waits on: its backing-off head (waiting) or its
    /// dead-lettered head (halted); null otherwise.
    blocking_event: Option<uuid::Uuid>,
    /// The blocking event's last error; null when nothing blocks the stream.
    blocking_error: Option<String>,
    /// When a waiting stream's head is tried again (RFC 3339); null unless waiting.
    next_attempt_at: Option<String>,
}

/// Where a stream is: idle (nothing queued), active (its head is ready or being
/// processed), waiting (its head backs off after a failure), halted (on a dead-lettered
/// head, `stream_failure_policy = 'halt'`, until it is retried, redriven or resumed).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StreamStateName {
    Idle,
    Active,
    Waiting,
    Halted,
}

/// `GET /streams`: one page, by name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamList {
    data: StreamListData,
    timestamp: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamListData {
    streams: Vec<StreamOut>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
    limit: i32,
}

/// `GET /streams/{name}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StreamEnvelope {
    data: StreamOut,
    timestamp: String,
}

/// `POST /streams/{name}/resume`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Resumed {
    data: ResumedData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResumedData {
    name: String,
    /// The stream's new done_seq: its dead-lettered head is passed.
    done_seq: i64,
    timestamp: String,
}

/// `GET /metrics/history`: a row per minute, oldest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HistoryOut {
    data: Vec<MinuteOut>,
    timestamp: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MinuteOut {
    /// The minute's start (RFC 3339).
    minute: String,
    /// Events processed in it.
    processed: i64,
    /// Latency percentiles in ms, enqueue to processed; null in a minute without events.
    latency_ms: MinuteLatency,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MinuteLatency {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// `GET /metrics` (SPEC §5).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricsOut {
    data: MetricsData,
    timestamp: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MetricsData {
    tenant: Option<String>,
    total: i64,
    pending: i64,
    delivered: i64,
    failed: i64,
    queue_depth: i64,
    dlq_count: i64,
    streams_waiting: i64,
    streams_halted: i64,
    last_processed_at: Option<String>,
    processing_rate_per_min: f64,
    oldest_queued_age_s: f64,
    latency_ms: LatencyData,
    webhooks: WebhookMetricsOut,
}

/// Webhook deliveries of the tenant's endpoints.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookMetricsOut {
    /// Waiting for their next attempt, or in flight.
    pending: i64,
    /// Taken by the receiver (2xx).
    succeeded: i64,
    /// Failed every attempt of the schedule.
    failed: i64,
    /// Attempts made at the deliveries kept.
    attempts: i64,
    endpoints: i64,
    /// Stored to received, in ms, over the last 1,000 successes of each endpoint.
    latency_ms: MinuteLatency,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LatencyData {
    window_s: i64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// `GET /health`, `GET /ready`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HealthOut {
    #[schema(pattern = "^ok$")]
    status: String,
}

/// Every error: `{"error": {...}}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// The error itself.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// One of the stable codes (the enum is filled in from the server's table).
    code: String,
    /// For people; names the field at fault.
    message: String,
    timestamp: String,
    correlation_id: String,
}

/// A webhook endpoint to create. Unknown fields are refused.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EndpointIn {
    /// Where deliveries are POSTed: http:// or https:// with a host, no spaces.
    #[schema(
        min_length = 8,
        max_length = 2000,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^/?#@\u0000-\u0020\u007F]+([/?#][^\u0000-\u0020\u007F]*)?$"
    )]
    url: String,
    filter: Option<FilterIn>,
    /// A note for the owner.
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F]*$")]
    description: Option<String>,
}

/// Which events an endpoint gets: those of `stream`, and/or whose metadata contains
/// `metadata`. Absent or `{}`: every event.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FilterIn {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F]*$"
    )]
    stream: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// What to change of an endpoint; absent fields keep their value, a null filter means
/// every event.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EndpointPatch {
    #[schema(
        min_length = 8,
        max_length = 2000,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^/?#@\u0000-\u0020\u007F]+([/?#][^\u0000-\u0020\u007F]*)?$"
    )]
    url: Option<String>,
    filter: Option<FilterIn>,
    /// false stops deliveries (they wait, and resume when enabled again).
    enabled: Option<bool>,
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u001F\u007F]*$")]
    description: Option<String>,
}

/// An endpoint (never its secret).
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct EndpointOut {
    endpoint_id: uuid::Uuid,
    url: String,
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    description: Option<String>,
    enabled: bool,
    /// Why it is disabled: by its owner, a 410, or failing for endpoint_disable_after_s.
    disabled_reason: Option<String>,
    /// While a rotation overlaps: until when the previous secret signs too.
    rotating_until: Option<String>,
    created_at: String,
    updated_at: String,
}

/// `GET /webhooks/endpoints/{id}`, `PATCH /webhooks/endpoints/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EndpointEnvelope {
    data: EndpointOut,
    timestamp: String,
}

/// `GET /webhooks/endpoints`: oldest first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EndpointList {
    data: Vec<EndpointOut>,
    timestamp: String,
}

/// `POST /webhooks/endpoints`: the endpoint, and its secret, shown only now.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreatedEndpoint {
    data: CreatedEndpointData,
    timestamp: String,
}

#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct CreatedEndpointData {
    #[serde(flatten)]
    endpoint: EndpointOut,
    /// `whsec_` + base64: verify deliveries with it (Standard Webhooks). Shown only now.
    #[schema(pattern = "^whsec_")]
    secret: String,
}

/// `POST /webhooks/endpoints/{id}/rotate-secret`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RotatedSecret {
    data: RotatedSecretData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RotatedSecretData {
    endpoint_id: uuid::Uuid,
    /// The new secret, shown only now.
    #[schema(pattern = "^whsec_")]
    secret: String,
    /// Until when deliveries carry a signature with the previous secret too.
    previous_valid_until: Option<String>,
}

/// `DELETE /webhooks/endpoints/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeletedEndpoint {
    data: DeletedEndpointData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeletedEndpointData {
    endpoint_id: uuid::Uuid,
    deleted: bool,
    timestamp: String,
}

/// A delivery of an event to an endpoint, with its last attempt.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct DeliveryOut {
    delivery_id: i64,
    endpoint_id: uuid::Uuid,
    event_id: uuid::Uuid,
    status: DeliveryStatusName,
    /// Attempts so far (one in flight counts).
    attempts: i32,
    /// When the next attempt is due (pending only).
    next_attempt_at: Option<String>,
    created_at: String,
    finished_at: Option<String>,
    last_status_code: Option<i32>,
    last_latency_ms: Option<i32>,
    last_error: Option<String>,
}

/// A delivery's status.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum DeliveryStatusName {
    Pending,
    Succeeded,
    Failed,
}

/// `GET /webhooks/endpoints/{id}/deliveries`: newest event first.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeliveryList {
    data: Vec<DeliveryOut>,
    timestamp: String,
}

/// `GET /events/{id}/deliveries`: each delivery of the event with every attempt.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventDeliveries {
    data: Vec<EventDeliveryOut>,
    timestamp: String,
}

#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct EventDeliveryOut {
    #[serde(flatten)]
    delivery: DeliveryOut,
    /// Every attempt, in order.
    attempt_log: Vec<AttemptOut>,
}

#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct AttemptOut {
    attempt: i32,
    attempted_at: String,
    /// The receiver's status; null when there was no answer (see error).
    status_code: Option<i32>,
    latency_ms: Option<i32>,
    /// The start of the answer's body (1,000 characters at most).
    response: Option<String>,
    error: Option<String>,
}

/// `POST /webhooks/endpoints/{id}/recover`: failed deliveries created since then are
/// tried again now.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RecoverIn {
    /// RFC 3339.
    #[schema(format = DateTime)]
    since: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Recovered {
    data: RecoveredData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RecoveredData {
    endpoint_id: uuid::Uuid,
    /// Deliveries queued again.
    recovered: i64,
    timestamp: String,
}

/// `POST /events/{id}/resend`: deliver the event to this endpoint again, now.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ResendIn {
    endpoint_id: uuid::Uuid,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Resent {
    data: ResentData,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResentData {
    event_id: uuid::Uuid,
    endpoint_id: uuid::Uuid,
    delivery_id: i64,
    #[schema(pattern = "^pending$")]
    status: String,
    timestamp: String,
}
