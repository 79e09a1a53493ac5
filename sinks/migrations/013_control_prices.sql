-- 013: published model prices (PricePublished, event_type pricing.price_published) are
-- control records: their fields as columns of control_events, so `govledger sql` lists
-- prices by model and date. Other control records leave them at their defaults.
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS provider LowCardinality(String) DEFAULT '';
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS model String DEFAULT '';
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS effective_from Nullable(DateTime64(3, 'UTC'));
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS input_nanousd_per_mtok Int64 DEFAULT 0;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS output_nanousd_per_mtok Int64 DEFAULT 0;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS cached_input_nanousd_per_mtok Nullable(Int64);
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS cache_write_nanousd_per_mtok Nullable(Int64);
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS audio_input_nanousd_per_mtok Nullable(Int64);
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS image_input_nanousd_per_mtok Nullable(Int64);
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS reasoning_nanousd_per_mtok Nullable(Int64);
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS audio_output_nanousd_per_mtok Nullable(Int64);
