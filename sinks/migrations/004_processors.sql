-- 004: what the processors publish. Alerts from every processor share one table (each
-- kind fills its own columns); fleet breaker states; closed SLA minutes with their
-- sketches; wallet budgets and escalation claims join the admin log.
CREATE TABLE IF NOT EXISTS alerts (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    provider String DEFAULT '',
    model String DEFAULT '',
    before String DEFAULT '',
    after String DEFAULT '',
    at Nullable(DateTime64(3, 'UTC')),
    wallet_id String DEFAULT '',
    team_id String DEFAULT '',
    period_start_at Nullable(DateTime64(3, 'UTC')),
    threshold_percent Int32 DEFAULT 0,
    spent_nanousd Int64 DEFAULT 0,
    budget_nanousd Int64 DEFAULT 0,
    metric String DEFAULT '',
    observed Float64 DEFAULT 0,
    target Float64 DEFAULT 0,
    window_start Nullable(DateTime64(3, 'UTC')),
    window_end Nullable(DateTime64(3, 'UTC')),
    escalation_id String DEFAULT '',
    queue String DEFAULT '',
    priority String DEFAULT '',
    deadline_at Nullable(DateTime64(3, 'UTC')),
    breached_at Nullable(DateTime64(3, 'UTC')),
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS breaker_state (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    provider String,
    model String,
    state LowCardinality(String),
    opened_at Nullable(DateTime64(3, 'UTC')),
    open_until Nullable(DateTime64(3, 'UTC')),
    failures_in_window Int64,
    applied_seqs Map(String, Int64),
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (provider, model, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS sla_windows (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    provider LowCardinality(String),
    model String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    revision Int32,
    requests Int64,
    errors Int64,
    caller_faults Int64,
    prompt_tokens Int64,
    completion_tokens Int64,
    cost_nanousd Int64,
    latency_ms Tuple(alpha Float64, max_buckets Int32, zero_count Int64, sum_thousandths Int64, min Float64, max Float64, bucket_indices Array(Int32), bucket_counts Array(Int64)),
    ttft_ms Tuple(alpha Float64, max_buckets Int32, zero_count Int64, sum_thousandths Int64, min Float64, max Float64, bucket_indices Array(Int32), bucket_counts Array(Int64)),
    gateway_overhead_ms Tuple(alpha Float64, max_buckets Int32, zero_count Int64, sum_thousandths Int64, min Float64, max Float64, bucket_indices Array(Int32), bucket_counts Array(Int64)),
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, provider, model, window_start, revision, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

ALTER TABLE control_events ADD COLUMN IF NOT EXISTS budget_nanousd Int64 DEFAULT 0 AFTER note;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS thresholds_percent Array(Int32) AFTER budget_nanousd;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS set_by String DEFAULT '' AFTER thresholds_percent;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS actor String DEFAULT '' AFTER set_by;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS queue String DEFAULT '' AFTER actor;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS reviewer String DEFAULT '' AFTER queue;
