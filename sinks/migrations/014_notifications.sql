-- 014: every delivery attempt of the notifier (NotificationAttempted, topic
-- govledger.notifications): which route, which event, which attempt, how it ended, how
-- long it took and what the destination answered. Routes themselves are control records
-- (notify.route_added / notify.route_removed) in control_events; their sealed secret
-- stays in `raw` only.
CREATE TABLE IF NOT EXISTS notifications (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    route_id String,
    source_event_id String,
    source_event_type LowCardinality(String),
    action LowCardinality(String),
    format LowCardinality(String),
    attempt Int32,
    status LowCardinality(String),
    http_status Int32,
    latency_ms Float64,
    error String,
    destination_host String,
    raw String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    auth String DEFAULT '',
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
ORDER BY (tenant_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
