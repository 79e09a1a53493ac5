-- 009: each stored record's `govledger-auth` header (see schemas/authn.py), next to its
-- `raw` bytes, so `govledger audit verify` and a restore can check it again later. Rows
-- stored before record authentication have ''.
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE escalation_events ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE breaker_state ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE sla_windows ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
ALTER TABLE chain_checkpoints ADD COLUMN IF NOT EXISTS auth String DEFAULT '';
