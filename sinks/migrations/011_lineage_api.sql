-- 011: lineage v2 names the API a call came in by (chat.completions, embeddings,
-- completions). Rows stored from v1 records were all chat completions.
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS api LowCardinality(String) DEFAULT 'chat.completions' AFTER response_sha256;
