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
-- Checkpoints v2 carry their Ed25519 signature (chain_checkpoint.v2.avsc).
ALTER TABLE chain_checkpoints ADD COLUMN IF NOT EXISTS signer_root_id String DEFAULT '';
ALTER TABLE chain_checkpoints ADD COLUMN IF NOT EXISTS signer_role LowCardinality(String) DEFAULT '';
ALTER TABLE chain_checkpoints ADD COLUMN IF NOT EXISTS signer_public_key String DEFAULT '';
ALTER TABLE chain_checkpoints ADD COLUMN IF NOT EXISTS signer_certificate String DEFAULT '';
ALTER TABLE chain_checkpoints ADD COLUMN IF NOT EXISTS signature String DEFAULT '';
