-- 012: lineage v3 counts the tokens priced at their own rates (parts of prompt_tokens and
-- completion_tokens). Rows stored from v1/v2 records have none: 0.
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS cached_prompt_tokens Int64 DEFAULT 0;
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS cache_write_tokens Int64 DEFAULT 0;
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS audio_prompt_tokens Int64 DEFAULT 0;
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS image_prompt_tokens Int64 DEFAULT 0;
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS reasoning_tokens Int64 DEFAULT 0;
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS audio_completion_tokens Int64 DEFAULT 0;
