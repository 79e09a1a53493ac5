"""The FOCUS export: the calls of the `lineage` table as a FOCUS 1.2 cost and usage dataset
(`focus_spec` says what that asks), one row per call.

Why one row per call rather than per hour or day: a row per call reconciles with the ledger
row for row (`x_EventId` is the call's event id, and `x_CostNanoUsd` its cost as the ledger
holds it), so a missing or doubled call shows by its id, not as a difference in a sum; the
export keeps the keyset pages, the snapshot and the hash-chain heads of the manifest that
the other types have; and a FinOps tool groups rows by any period it likes, which it could
not split again if we had summed them. The charge period is the UTC second the call was
charged in (its `occurred_at`): FOCUS date/times are whole seconds, and the end is
exclusive, so [second, second + 1 s).

Money: `cost_nanousd` is an integer of 1e-9 USD; BilledCost and the other cost columns are
Decimal(18, 9) built in the engine as that integer times 1e-9, which is exact (the
unscaled decimal *is* the integer), and written as decimals in every format (Parquet
decimal, plain decimal text in CSV, JSON numbers in JSON Lines): the file sums back to the
ledger to the nano-dollar. Every cost column holds the same amount: govledger charges at
its price table's (list) rates with no negotiated discount, commitment or amortization.

Who is who (specification/appendix/origination_of_cost_data.md, scenario 1.1, buying from
the model provider directly): ProviderName, PublisherName and InvoiceIssuerName are the
upstream provider that served the call (`govledger` for a call refused before any provider
was asked, which costs 0). The tenant is the billing account, the team the sub account, the
key the resource; tenant, team and key are also Tags (`govledger:tenant`, `govledger:team`,
`govledger:key`). The model is the SKU (`provider/model`), and `x_` columns carry the rest
of the call: ids, tokens by kind, the integer cost, and the hash-chain fields the manifest
reads."""

from __future__ import annotations

from sinks.exports.focus_spec import FOCUS_VERSION, SERVICE_CATEGORY_AI

# How a cost column is made from the integer: exact (see the module's docstring).
NANOUSD_AS_USD = "toDecimal64(t.cost_nanousd, 0) * toDecimal64('0.000000001', 9)"
CHARGED_SECOND = "toDateTime64(toStartOfSecond(t.occurred_at), 0, 'UTC')"
BILLING_MONTH = "toDateTime64(toStartOfMonth(t.occurred_at), 0, 'UTC')"
PROVIDER = "if(t.provider = '', 'govledger', toString(t.provider))"
MODEL = "if(t.model_selected = '', t.model_requested, t.model_selected)"
SKU = f"concat({PROVIDER}, '/', {MODEL})"
TOKENS = "toDecimal64(t.prompt_tokens + t.completion_tokens, 0)"
TAG_PREFIX = "govledger:"


def _text(column: str) -> str:
    """A text column, null where the ledger has none (FOCUS wants null, not '')."""
    return f"nullIf(toString(t.{column}), '')"


FOCUS_COLUMNS: tuple[str, ...] = (
    # --- FOCUS columns, alphabetical ---
    f"{NANOUSD_AS_USD} AS BilledCost",
    "toString(t.tenant_id) AS BillingAccountId",
    "toString(t.tenant_id) AS BillingAccountName",
    "'Tenant' AS BillingAccountType",
    "'USD' AS BillingCurrency",
    f"{BILLING_MONTH} + toIntervalMonth(1) AS BillingPeriodEnd",
    f"{BILLING_MONTH} AS BillingPeriodStart",
    "'Usage' AS ChargeCategory",
    "CAST(NULL AS Nullable(String)) AS ChargeClass",
    f"concat({MODEL}, ' ', toString(t.api), ' call: ', toString(t.prompt_tokens), "
    "' prompt and ', toString(t.completion_tokens), ' completion tokens') AS ChargeDescription",
    "'Usage-Based' AS ChargeFrequency",
    f"{CHARGED_SECOND} + toIntervalSecond(1) AS ChargePeriodEnd",
    f"{CHARGED_SECOND} AS ChargePeriodStart",
    f"{TOKENS} AS ConsumedQuantity",
    "'Tokens' AS ConsumedUnit",
    f"{NANOUSD_AS_USD} AS ContractedCost",
    f"{NANOUSD_AS_USD} AS EffectiveCost",
    f"{PROVIDER} AS InvoiceIssuerName",
    f"{NANOUSD_AS_USD} AS ListCost",
    f"{TOKENS} AS PricingQuantity",
    "'Tokens' AS PricingUnit",
    f"{PROVIDER} AS ProviderName",
    f"{PROVIDER} AS PublisherName",
    f"{_text('region')} AS RegionId",
    f"{_text('region')} AS RegionName",
    f"{_text('key_id')} AS ResourceId",
    "'API Key' AS ResourceType",
    f"'{SERVICE_CATEGORY_AI}' AS ServiceCategory",
    f"concat({PROVIDER}, ' ', toString(t.api)) AS ServiceName",
    "'Generative AI' AS ServiceSubcategory",
    f"{SKU} AS SkuId",
    # The price list is keyed by provider and model (with effective dates): the SKU.
    f"{SKU} AS SkuPriceId",
    f"{_text('team_id')} AS SubAccountId",
    f"{_text('team_id')} AS SubAccountName",
    "if(t.team_id = '', NULL, 'Team') AS SubAccountType",
    f"toJSONString(map('{TAG_PREFIX}tenant', {_text('tenant_id')}, "
    f"'{TAG_PREFIX}team', {_text('team_id')}, '{TAG_PREFIX}key', {_text('key_id')})) AS Tags",
    # --- custom columns (x_), after every FOCUS column ---
    "toString(t.event_id) AS x_EventId",
    "t.occurred_at AS x_OccurredAt",
    "toString(t.tenant_id) AS x_TenantId",
    f"{_text('team_id')} AS x_TeamId",
    f"{_text('key_id')} AS x_KeyId",
    "t.user_id AS x_UserId",
    "t.model_requested AS x_ModelRequested",
    f"{_text('model_selected')} AS x_ModelSelected",
    "toString(t.api) AS x_Api",
    f"{_text('decision')} AS x_Decision",
    "t.http_status AS x_HttpStatus",
    f"{_text('usage_source')} AS x_UsageSource",
    "t.prompt_tokens AS x_PromptTokens",
    "t.completion_tokens AS x_CompletionTokens",
    "t.cached_prompt_tokens AS x_CachedPromptTokens",
    "t.reasoning_tokens AS x_ReasoningTokens",
    "t.cost_nanousd AS x_CostNanoUsd",
    f"{_text('trace_id')} AS x_TraceId",
    "t.producer_id AS x_ProducerId",
    "t.seq AS x_Seq",
    "t.record_hash AS x_RecordHash",
)
# The columns the manifest's tally reads: the time range, and the hash-chain heads.
TIME_COLUMN = "x_OccurredAt"
CHAIN_COLUMNS = ("x_ProducerId", "x_Seq", "x_RecordHash")
STANDARD = f"FOCUS {FOCUS_VERSION}"
