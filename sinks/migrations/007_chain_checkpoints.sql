-- 007: producers' chain checkpoints (topic govledger.checkpoints): each producer's head,
-- read by `govledger audit verify` to find a tail truncated past a checkpoint.
CREATE TABLE IF NOT EXISTS chain_checkpoints (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    checkpoint_seq UInt64,
    checkpoint_hash String,
    record_count UInt64,
    reason LowCardinality(String),
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (producer_id, seq, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
