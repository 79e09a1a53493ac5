-- 005: wallets as a tree journal. Allocations, refunds, corrections and overdraft limits
-- join the admin log (amount_nanousd, memo, reason, set_by and wallet_id are shared with
-- earlier control events); wallet-state v3 carries the tree's entries and the limit.
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS from_wallet_id String DEFAULT '' AFTER reviewer;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS to_wallet_id String DEFAULT '' AFTER from_wallet_id;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS allocated_by String DEFAULT '' AFTER to_wallet_id;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS call_event_id String DEFAULT '' AFTER allocated_by;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS refunded_by String DEFAULT '' AFTER call_event_id;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS entry_event_id String DEFAULT '' AFTER refunded_by;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS corrected_by String DEFAULT '' AFTER entry_event_id;
ALTER TABLE control_events ADD COLUMN IF NOT EXISTS overdraft_limit_nanousd Int64 DEFAULT 0 AFTER corrected_by;

ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS allocated_in_nanousd Int64 DEFAULT 0 AFTER period_spent_nanousd;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS allocated_out_nanousd Int64 DEFAULT 0 AFTER allocated_in_nanousd;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS refunded_nanousd Int64 DEFAULT 0 AFTER allocated_out_nanousd;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS corrected_nanousd Int64 DEFAULT 0 AFTER refunded_nanousd;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS overdraft_limit_nanousd Int64 DEFAULT 0 AFTER corrected_nanousd;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS rejected_count Int64 DEFAULT 0 AFTER overdraft_limit_nanousd;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS last_decided_event_id String DEFAULT '' AFTER rejected_count;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS last_decision LowCardinality(String) DEFAULT '' AFTER last_decided_event_id;
ALTER TABLE wallet_state ADD COLUMN IF NOT EXISTS revision Int64 DEFAULT 0 AFTER last_decision;
