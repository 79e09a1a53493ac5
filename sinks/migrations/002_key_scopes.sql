-- 002: key.issued v2 carries scopes and rate limits.
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS models Array(String) AFTER funded_by;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS providers Array(String) AFTER models;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS regions Array(String) AFTER providers;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS policy_pack String DEFAULT '' AFTER regions;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS requests_per_minute Int64 DEFAULT 0 AFTER policy_pack;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS tokens_per_minute Int64 DEFAULT 0 AFTER requests_per_minute;
