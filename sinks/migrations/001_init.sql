-- 001: the audit tables. Columns carry the Avro field names of the records they hold
-- (the sink inserts Avro and ClickHouse maps fields to columns by name). Every row keeps
-- `raw`, the record exactly as it crossed the wire (Avro single-object bytes), so replay
-- and hash-chain checks need nothing else.
CREATE TABLE IF NOT EXISTS lineage (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    team_id LowCardinality(String),
    user_id Nullable(String),
    key_id String,
    wallet_id String,
    region LowCardinality(String),
    model_requested String,
    model_selected String,
    provider LowCardinality(String),
    selection_reason String,
    attempts Array(Tuple(provider String, model String, status Int32, latency_ms Float64, error_class Nullable(String))),
    policies_applied Array(String),
    guardrails_triggered Array(Tuple(name String, action String)),
    decision LowCardinality(String),
    prompt_tokens Int64,
    completion_tokens Int64,
    usage_source LowCardinality(String),
    cost_nanousd Int64,
    reserved_nanousd Int64,
    latency_ms Float64,
    ttft_ms Nullable(Float64),
    gateway_overhead_ms Float64,
    http_status UInt16,
    error_code Nullable(String),
    stream Bool,
    request_sha256 String,
    response_sha256 Nullable(String),
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS control_events (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    key_id String DEFAULT '',
    key_prefix String DEFAULT '',
    key_sha256 String DEFAULT '',
    team_id String DEFAULT '',
    wallet_id String DEFAULT '',
    name String DEFAULT '',
    issued_by String DEFAULT '',
    expires_at Nullable(DateTime64(3, 'UTC')),
    reason String DEFAULT '',
    revoked_by String DEFAULT '',
    amount_nanousd Int64 DEFAULT 0,
    memo String DEFAULT '',
    funded_by String DEFAULT '',
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS wallet_state (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    wallet_id String,
    team_id String,
    balance_nanousd Int64,
    funded_nanousd Int64,
    spent_nanousd Int64,
    entry_count Int64,
    last_event_id String,
    last_occurred_at DateTime64(3, 'UTC'),
    applied_seqs Map(String, Int64),
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (tenant_id, wallet_id, entry_count, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS dead_letters (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    origin_topic String,
    origin_partition Int32,
    origin_offset Int64,
    consumer LowCardinality(String),
    error String,
    payload String,
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
