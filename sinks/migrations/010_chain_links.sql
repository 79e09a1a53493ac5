-- 010: chain links. A record the sink drops as a duplicate by event_id (a processor that
-- re-derives an alert with a deterministic id after a restart seals it again, in a new
-- chain) is not stored as data a second time, but its sealed bytes and auth header are
-- kept here, so its producer's chain has no gap: `govledger audit verify` walks these
-- rows with the data rows (checking hash, links and auth) and counts them apart.
-- `table_name` is the table that holds the data the link copies (retention cuts a link
-- with that table's rules). Idempotent: the sink looks a link up before writing it, and a
-- copy written twice anyway is collapsed by the engine (same producer, seq and hash).
CREATE TABLE IF NOT EXISTS chain_links (
    event_id UUID,
    event_type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    producer_id String,
    seq UInt64,
    prev_hash String,
    record_hash String,
    topic LowCardinality(String),
    table_name LowCardinality(String),
    raw String,
    auth String DEFAULT '',
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (producer_id, seq, record_hash);
