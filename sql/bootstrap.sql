-- triggers: schema objects created before any #[pg_extern] function.
-- Runs inside CREATE EXTENSION triggers, in schema triggers, after pgmq exists.

-- Settings. One row, typed columns, each with the range it accepts, so a bad value is
-- rejected when it is written rather than when a worker reads it.
CREATE TABLE triggers.config (
    singleton              boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_retries            integer NOT NULL DEFAULT 3       CHECK (max_retries BETWEEN 0 AND 100),
    backoff_base_ms        integer NOT NULL DEFAULT 1000    CHECK (backoff_base_ms BETWEEN 1 AND 3600000),
    backoff_cap_ms         integer NOT NULL DEFAULT 300000  CHECK (backoff_cap_ms BETWEEN 1 AND 86400000),
    max_payload_bytes      integer NOT NULL DEFAULT 1048576 CHECK (max_payload_bytes BETWEEN 2 AND 268435456),
    batch_size             integer NOT NULL DEFAULT 100     CHECK (batch_size BETWEEN 1 AND 10000),
    -- How long the messages of a claim that never finished (its backend died, or
    -- statement_timeout cancelled it) stay hidden before they are tried again.
    visibility_timeout_s   integer NOT NULL DEFAULT 30      CHECK (visibility_timeout_s BETWEEN 1 AND 86400),
    -- A session that sent a wake-up NOTIFY sends the next one only this much later:
    -- NOTIFY takes a cluster-wide lock through commit, so one per enqueue would
    -- serialise all committing producers. Workers re-check once this long after going
    -- idle, which catches anything enqueued without a NOTIFY of its own.
    notify_throttle_ms     integer NOT NULL DEFAULT 100     CHECK (notify_throttle_ms BETWEEN 0 AND 10000),
    -- How long an event enqueued with debug = queue_delay waits before processing.
    queue_delay_ms         integer NOT NULL DEFAULT 5000    CHECK (queue_delay_ms BETWEEN 0 AND 3600000),
    -- How many times triggers.retry may queue a failed event again.
    max_manual_retries     integer NOT NULL DEFAULT 3       CHECK (max_manual_retries BETWEEN 0 AND 100),
    -- What a stream does when its head is dead-lettered: go on with the next event
    -- ('continue'), or stop until the head is retried, redriven or skipped ('halt').
    stream_failure_policy  text    NOT NULL DEFAULT 'continue' CHECK (stream_failure_policy IN ('continue', 'halt')),
    -- Webhooks: the wait before each attempt of a delivery (seconds; the first is the
    -- wait after the event is stored), ±webhook_jitter_pct percent so that failures of
    -- many deliveries at once do not come back at once; after the last, the delivery
    -- has failed. An endpoint that has not succeeded for endpoint_disable_after_s while
    -- failing is disabled.
    webhook_schedule_s     integer[] NOT NULL DEFAULT '{0,5,300,1800,7200,18000,36000,36000}'
        CHECK (cardinality(webhook_schedule_s) BETWEEN 1 AND 100 AND 0 <= ALL(webhook_schedule_s)
               AND 604800 >= ALL(webhook_schedule_s)),
    webhook_jitter_pct     integer NOT NULL DEFAULT 10      CHECK (webhook_jitter_pct BETWEEN 0 AND 50),
    endpoint_disable_after_s integer NOT NULL DEFAULT 432000 CHECK (endpoint_disable_after_s BETWEEN 1 AND 31536000),
    -- Attempts in flight to one endpoint at most, over all delivery workers (each keeps
    -- up to 64 requests in flight, 256 with the 4 default workers): a slow or hanging
    -- receiver holds this many of their slots, never all of them.
    webhook_endpoint_concurrency integer NOT NULL DEFAULT 64 CHECK (webhook_endpoint_concurrency BETWEEN 1 AND 1000),
    -- Webhook endpoints a tenant may have, unless triggers.tenants says otherwise (0: no limit).
    max_endpoints          integer NOT NULL DEFAULT 100     CHECK (max_endpoints >= 0),
    CHECK (backoff_base_ms <= backoff_cap_ms)
);
INSERT INTO triggers.config DEFAULT VALUES;
COMMENT ON TABLE triggers.config IS
    'triggers settings: one row. UPDATE triggers.config SET max_retries = 5; takes effect on the next batch.';
-- Keep user changes to the settings in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('triggers.config', '');

-- Delivery positions (live.sql): an event takes the next one each time processing
-- stores it.
CREATE SEQUENCE triggers.event_positions AS bigint;

-- One row per processed event. Status changes are the only thing metrics count, so the
-- CHECK on status is what keeps the counters honest.
CREATE TABLE triggers.events (
    event_id        uuid        PRIMARY KEY,
    tenant          text        NOT NULL CHECK (tenant <> ''),
    stream          text        NULL,
    seq             bigint      NULL CHECK (seq >= 1),
    payload         jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    metadata        jsonb       NULL CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    status          text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    processed_at    timestamptz NULL,
    delivered_at    timestamptz NULL,
    retry_count     integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    error_message   text        NULL,
    idempotency_key text        NULL,
    -- Manual retries so far (at most config.max_manual_retries); also counted in retry_count.
    manual_retries  integer     NOT NULL DEFAULT 0 CHECK (manual_retries >= 0),
    -- Its delivery position (live.sql): taken each time processing stores it, so the
    -- live stream sends it again if it is stored again; NULL if it never was (an event
    -- that went straight to the dead-letter queue).
    position        bigint      NULL DEFAULT nextval('triggers.event_positions'),
    -- An event is either on a stream with a position or on no stream at all.
    CONSTRAINT events_stream_seq_together CHECK ((stream IS NULL) = (seq IS NULL))
)
-- Rows are updated on ack and retry; leave room for HOT updates and vacuum early.
WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05);

CREATE INDEX events_status_created_at_idx ON triggers.events (status, created_at);
-- The live stream reads stored events in position order (live.sql). One index for the
-- server's reader and a tenant's replay alike: a second, per tenant, cost the drain
-- about a tenth, and a replay is the rare path.
CREATE INDEX events_position_idx ON triggers.events (position) WHERE position IS NOT NULL;
-- The inbox's keyset order is (created_at, event_id) within a tenant and status.
CREATE INDEX events_tenant_status_created_at_idx ON triggers.events (tenant, status, created_at, event_id);
CREATE INDEX events_created_at_idx ON triggers.events (created_at);
-- UNIQUE (tenant, idempotency_key) as a partial index: the same guarantee (NULL keys
-- never collide anyway), but events without a key cost no index entry.
CREATE UNIQUE INDEX events_tenant_idempotency_key_key ON triggers.events (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX events_tenant_stream_seq_idx ON triggers.events (tenant, stream, seq)
    WHERE stream IS NOT NULL;

COMMENT ON TABLE triggers.events IS
    'One row per processed event; status pending -> delivered | failed, failed -> pending on retry.';

-- Idempotency keys are claimed at enqueue, before the event is stored, so a repeated
-- key returns the first event's id even while that event is still queued.
CREATE TABLE triggers.idempotency_keys (
    tenant          text        NOT NULL,
    idempotency_key text        NOT NULL,
    event_id        uuid        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);

-- The last position handed out on each stream: seq is gapless per (tenant, stream)
-- because it is taken here, under the row lock, in the enqueueing transaction.
CREATE TABLE triggers.streams (
    tenant   text   NOT NULL,
    stream   text   NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, stream)
-- Every enqueue on a stream updates its row: leave room for HOT updates.
) WITH (fillfactor = 50);

-- Every tenant that queued an event: its lane of the queue (claim.sql). A row is
-- written by the tenant's first enqueue, without a unique index, so that a producer whose
-- first event is not committed yet never makes another producer of the tenant wait; two
-- first events at once may write two rows, which the claim reads as one.
CREATE TABLE triggers.lanes (
    tenant text NOT NULL
);
CREATE INDEX lanes_tenant_idx ON triggers.lanes (tenant);

-- Per-tenant settings, written by an operator; a tenant without a row has the defaults,
-- and so has a NULL limit (a server's flag, or config.max_endpoints; limits.sql). 0 is
-- no limit.
CREATE TABLE triggers.tenants (
    tenant  text    PRIMARY KEY CHECK (tenant <> ''),
    -- Relative share of each batch while other tenants also have events ready.
    weight  integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    -- What one tenant may take of a server (server/src/guard/tenants.rs): requests per
    -- minute per API key, events per minute (a batch counts each), events waiting in
    -- the queue, requests using the database at once, live streams open on a server.
    requests_per_minute integer NULL CHECK (requests_per_minute >= 0),
    events_per_minute   integer NULL CHECK (events_per_minute >= 0),
    max_queued          bigint  NULL CHECK (max_queued >= 0),
    max_concurrency     integer NULL CHECK (max_concurrency >= 0),
    max_live_streams    integer NULL CHECK (max_live_streams >= 0),
    -- Webhook endpoints at most (create_endpoint refuses more: TG010).
    max_endpoints       integer NULL CHECK (max_endpoints >= 0)
);
COMMENT ON TABLE triggers.tenants IS
    'Per-tenant settings: weight, the relative share of each batch while other tenants have events ready (default 1).';

-- How far processing has come on each stream (sql/streams.sql). Producers lock
-- `streams`, workers lock this: one never waits on the other. A worker holds a stream's
-- row for its whole batch, which is what keeps two workers off one stream.
CREATE TABLE triggers.stream_progress (
    tenant        text        NOT NULL,
    stream        text        NOT NULL,
    -- Every seq up to here is finished (stored, or dead-lettered and passed).
    done_seq      bigint      NOT NULL DEFAULT 0 CHECK (done_seq >= 0),
    -- Set while the stream is halted on this dead-lettered head (policy 'halt').
    halted_event  uuid        NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, stream)
) WITH (fillfactor = 70);

-- Exact counts of events by status, maintained by statement triggers on events.
-- Writers only append deltas (no row is updated, so writers never wait on each other or
-- deadlock); one worker at a time folds them into metric_totals. Reads sum both.
CREATE TABLE triggers.metric_deltas (
    tenant            text        NOT NULL,
    pending           bigint      NOT NULL DEFAULT 0,
    delivered         bigint      NOT NULL DEFAULT 0,
    failed            bigint      NOT NULL DEFAULT 0,
    last_processed_at timestamptz NULL,
    -- Counters that only grow (Prometheus `..._total`): events queued by producers
    -- (repeated idempotency keys not counted), stored by processing, queued again after
    -- a failure (back-off, manual retry, redrive), dead-lettered, and acknowledged; and
    -- the sum of every processing latency (the histogram's buckets are latency_totals).
    enqueued          bigint      NOT NULL DEFAULT 0,
    stored            bigint      NOT NULL DEFAULT 0,
    retried           bigint      NOT NULL DEFAULT 0,
    dead_lettered     bigint      NOT NULL DEFAULT 0,
    acknowledged      bigint      NOT NULL DEFAULT 0,
    latency_sum_s     float8      NOT NULL DEFAULT 0
);
CREATE TABLE triggers.metric_totals (
    LIKE triggers.metric_deltas INCLUDING DEFAULTS,
    PRIMARY KEY (tenant)
);

-- Processing latency (created_at -> processed_at) per minute as a log-scale histogram:
-- bucket b holds latencies near exp(b/10) - 1 ms (about 10% wide). Gives the processing
-- rate and latency percentiles without scanning events. Appended, then folded, as above.
CREATE TABLE triggers.latency_deltas (
    tenant  text        NOT NULL,
    minute  timestamptz NOT NULL,
    bucket  smallint    NOT NULL,
    n       bigint      NOT NULL
);
CREATE TABLE triggers.latency_minutes (
    tenant  text        NOT NULL,
    minute  timestamptz NOT NULL,
    bucket  smallint    NOT NULL,
    n       bigint      NOT NULL,
    PRIMARY KEY (tenant, minute, bucket)
);
-- The same histogram over all time (the buckets of the Prometheus latency histogram),
-- folded from latency_deltas beside latency_minutes and never pruned.
CREATE TABLE triggers.latency_totals (
    tenant  text        NOT NULL,
    bucket  smallint    NOT NULL,
    n       bigint      NOT NULL,
    PRIMARY KEY (tenant, bucket)
);

-- API keys: only a SHA-256 of the key is kept. key_id is the public part of the key
-- (trg_<key_id>_<secret>) and finds the row; the hash is then compared in constant time.
CREATE TABLE triggers.api_keys (
    key_id     text        PRIMARY KEY,
    tenant     text        NOT NULL CHECK (tenant <> ''),
    name       text        NOT NULL,
    key_hash   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz NULL,
    -- After this the key is refused (NULL: never). Added in 0.2.0.
    expires_at timestamptz NULL
);
CREATE INDEX api_keys_tenant_idx ON triggers.api_keys (tenant);

-- Webhook endpoints (sql/webhooks.sql). A secret is kept sealed (AES-256-GCM) under the
-- server's secrets key, which is not in the database: a dump alone cannot sign. After a
-- rotation the previous secret signs beside the new one until previous_until.
CREATE TABLE triggers.webhook_endpoints (
    endpoint_id     uuid        PRIMARY KEY,
    tenant          text        NOT NULL CHECK (tenant <> ''),
    url             text        NOT NULL,
    -- NULL: every event; else {"stream": s, "metadata": {...}} (either or both), by containment.
    filter          jsonb       NULL,
    description     text        NULL,
    enabled         boolean     NOT NULL DEFAULT true,
    disabled_reason text        NULL,
    secret          bytea       NOT NULL,
    previous_secret bytea       NULL,
    previous_until  timestamptz NULL,
    -- Since when its attempts fail without a success in between (NULL: it is fine).
    failing_since   timestamptz NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CHECK (enabled OR disabled_reason IS NOT NULL)
);
CREATE INDEX webhook_endpoints_tenant_idx ON triggers.webhook_endpoints (tenant, created_at);

-- The transactional outbox: one delivery per event and matching endpoint, written by
-- processing in the transaction that stores the event; every attempt at it is logged.
CREATE TABLE triggers.webhook_deliveries (
    delivery_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant          text        NOT NULL,
    endpoint_id     uuid        NOT NULL REFERENCES triggers.webhook_endpoints ON DELETE CASCADE,
    event_id        uuid        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due (pending only).
    next_attempt_at timestamptz NULL,
    -- While an attempt is in flight: until when its worker holds it (its lease).
    leased_until    timestamptz NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NULL,
    UNIQUE (endpoint_id, event_id)
);
-- A claim walks each enabled endpoint's due deliveries in order (its lane), and counts
-- what each has in flight (leased_until is set from claim to record).
CREATE INDEX webhook_deliveries_due_idx ON triggers.webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased_idx ON triggers.webhook_deliveries (endpoint_id)
    WHERE leased_until IS NOT NULL;
CREATE INDEX webhook_deliveries_event_idx ON triggers.webhook_deliveries (event_id);
-- An endpoint's recent deliveries (deliveries(), metrics) are read newest event first
-- from the UNIQUE (endpoint_id, event_id) index (event ids are UUIDv7, in time order):
-- every index here costs each claim and record an insertion, as neither is a HOT update.
CREATE TABLE triggers.webhook_attempts (
    delivery_id  bigint      NOT NULL REFERENCES triggers.webhook_deliveries ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    -- The receiver's HTTP status, or NULL when there was no answer (see error).
    status_code  integer     NULL,
    latency_ms   integer     NULL,
    -- The first 1,000 characters of the answer's body.
    response     text        NULL,
    error        text        NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Partitions of a sharded layout (README → Scale-out) moved off this node ('out': its
-- tenants' events are refused here, from the start of the move) or onto it ('in').
-- sql/partitions.sql; empty on a node that never took part in a move.
CREATE TABLE triggers.partition_moves (
    partitions integer     NOT NULL CHECK (partitions BETWEEN 1 AND 1048576 AND (partitions & (partitions - 1)) = 0),
    part       integer     NOT NULL CHECK (part >= 0 AND part < partitions),
    state      text        NOT NULL CHECK (state IN ('out', 'in')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partitions, part)
);

-- The work queue and its dead-letter queue.
SELECT pgmq.create('triggers_events');
SELECT pgmq.create('triggers_events_dlq');
-- Every read updates vt and read_ct: leave room for HOT updates and vacuum early.
ALTER TABLE pgmq.q_triggers_events SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
-- pgmq's `headers` column is ours on this queue: {"tenant"} for an event on no stream,
-- {"tenant", "stream", "seq"} for one on a stream, and "alone": true on a message held
-- by a claim that died (process.sql). Messages held by a claim that died are claimed
-- one at a time; this index finds those on no stream, and is empty the rest of the time.
CREATE INDEX q_triggers_events_alone_idx ON pgmq.q_triggers_events (msg_id)
    WHERE headers ? 'alone' AND NOT headers ? 'seq';
-- Messages on no stream by tenant ("lane") and msg_id: the plain claim (claim.sql) walks
-- each tenant's lane from that tenant's low-water mark, so queued stream messages,
-- other tenants' backlogs and dead rows below the mark are never in its way. Headless
-- messages (put on the queue by pgmq.send, not by triggers) are lane ''.
CREATE INDEX q_triggers_events_lane_idx ON pgmq.q_triggers_events
    ((coalesce(headers->>'tenant', '')), msg_id) WHERE NOT coalesce(headers ? 'seq', false);
-- Stream messages by (tenant, stream, seq): the stream claim walks it (streams.sql).
CREATE INDEX q_triggers_events_stream_idx ON pgmq.q_triggers_events
    ((headers->>'tenant'), (headers->>'stream'), ((headers->>'seq')::bigint))
    WHERE headers ? 'seq';

-- Tables created by an extension script belong to the extension, and pg_dump skips the
-- data of extension tables unless told otherwise: keep events and queued messages.
SELECT pg_catalog.pg_extension_config_dump('triggers.events', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.streams', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.lanes', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.stream_progress', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.metric_deltas', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.metric_totals', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.latency_deltas', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.latency_minutes', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.latency_totals', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.webhook_endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.webhook_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.webhook_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.api_keys', '');
SELECT pg_catalog.pg_extension_config_dump('pgmq.q_triggers_events', '');
SELECT pg_catalog.pg_extension_config_dump('pgmq.a_triggers_events', '');
SELECT pg_catalog.pg_extension_config_dump('pgmq.q_triggers_events_dlq', '');
SELECT pg_catalog.pg_extension_config_dump('pgmq.a_triggers_events_dlq', '');
SELECT pg_catalog.pg_extension_config_dump('triggers.partition_moves', '');
