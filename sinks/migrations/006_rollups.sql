-- 006: rollups kept by ClickHouse itself. Materialized views fed from `lineage` at insert
-- time (an insert that ClickHouse drops as a retried duplicate feeds no view either):
-- spend per tenant, team, model and UTC day; provider performance per tenant, provider,
-- model and UTC hour with a latency digest (merge with quantilesTDigestMerge). Rows that
-- existed before this migration are folded in once, below.
CREATE TABLE IF NOT EXISTS spend_daily (
    tenant_id LowCardinality(String),
    team_id LowCardinality(String),
    model String,
    day Date,
    calls UInt64,
    errors UInt64,
    prompt_tokens Int64,
    completion_tokens Int64,
    cost_nanousd Int64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, team_id, model)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_daily_mv TO spend_daily AS
SELECT
    tenant_id,
    team_id,
    if(model_selected = '', model_requested, model_selected) AS model,
    toDate(occurred_at) AS day,
    toUInt64(count()) AS calls,
    toUInt64(countIf(error_code IS NOT NULL)) AS errors,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(cost_nanousd) AS cost_nanousd
FROM lineage
GROUP BY tenant_id, team_id, model, day;

CREATE TABLE IF NOT EXISTS provider_hourly (
    tenant_id LowCardinality(String),
    provider LowCardinality(String),
    model String,
    hour DateTime('UTC'),
    calls SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    latency_ms AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64),
    ttft_ms AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, provider, model, hour)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS provider_hourly_mv TO provider_hourly AS
SELECT
    tenant_id,
    provider,
    if(model_selected = '', model_requested, model_selected) AS model,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    toUInt64(count()) AS calls,
    toUInt64(countIf(http_status >= 500)) AS errors,
    quantilesTDigestState(0.5, 0.9, 0.99)(lineage.latency_ms) AS latency_ms,
    quantilesTDigestStateIf(0.5, 0.9, 0.99)(assumeNotNull(lineage.ttft_ms), lineage.ttft_ms IS NOT NULL) AS ttft_ms
FROM lineage
GROUP BY tenant_id, provider, model, hour;

INSERT INTO spend_daily
SELECT
    tenant_id,
    team_id,
    if(model_selected = '', model_requested, model_selected) AS model,
    toDate(occurred_at) AS day,
    toUInt64(count()) AS calls,
    toUInt64(countIf(error_code IS NOT NULL)) AS errors,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(cost_nanousd) AS cost_nanousd
FROM lineage
GROUP BY tenant_id, team_id, model, day;

INSERT INTO provider_hourly
SELECT
    tenant_id,
    provider,
    if(model_selected = '', model_requested, model_selected) AS model,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    toUInt64(count()) AS calls,
    toUInt64(countIf(http_status >= 500)) AS errors,
    quantilesTDigestState(0.5, 0.9, 0.99)(lineage.latency_ms) AS latency_ms,
    quantilesTDigestStateIf(0.5, 0.9, 0.99)(assumeNotNull(lineage.ttft_ms), lineage.ttft_ms IS NOT NULL) AS ttft_ms
FROM lineage
GROUP BY tenant_id, provider, model, hour;
