-- 008: what each retention run deleted, per table and producer: the seqs it took out of
-- the producers' hash chains. `govledger audit verify` reads these to tell a gap that
-- retention made from a deletion nobody accounted for.
CREATE TABLE IF NOT EXISTS retention_cuts (
    deleted_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    table_name LowCardinality(String),
    producer_id String,
    cutoff_at DateTime64(3, 'UTC'),
    rows UInt64,
    seqs Array(UInt64) CODEC(Delta, ZSTD)
) ENGINE = MergeTree
ORDER BY (producer_id, deleted_at, table_name);
