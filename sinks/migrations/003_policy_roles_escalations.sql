-- 003: key.issued v3 carries a role; policy packs and escalation decisions join the admin
-- log; wallet-state v2 carries the current month's spend; escalations get their own table.
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS role String DEFAULT '' AFTER tokens_per_minute;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS pack_name String DEFAULT '' AFTER role;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS version Int64 DEFAULT 0 AFTER pack_name;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS source_yaml String DEFAULT '' AFTER version;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS source_sha256 String DEFAULT '' AFTER source_yaml;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS diff String DEFAULT '' AFTER source_sha256;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS published_by String DEFAULT '' AFTER diff;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS escalation_id String DEFAULT '' AFTER published_by;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS decision String DEFAULT '' AFTER escalation_id;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS resolved_by String DEFAULT '' AFTER decision;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS note String DEFAULT '' AFTER resolved_by;

ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS period_start_at DateTime64(3, 'UTC') DEFAULT 0 AFTER applied_seqs;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS period_spent_nanousd Int64 DEFAULT 0 AFTER period_start_at;

CREATE TABLE IF NOT EXISTS escalation_events (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    escalation_id String,
    trace_id String,
    team_id String,
    key_id String,
    policy_pack String,
    category LowCardinality(String),
    priority LowCardinality(String),
    mode LowCardinality(String),
    reason String,
    model_requested String,
    request_sha256 String,
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
