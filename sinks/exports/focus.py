"""The FOCUS export: the wallet ledger's charges as a FOCUS 1.2 cost and usage dataset
(`focus_spec` says what that asks): one row per call (`lineage`, ChargeCategory `Usage`), and
one per refund (`Credit`) and per correction the wallets applied (`Adjustment`) from the
admin log (`control_events`), so the file sums to what the wallets were charged net.

Why one row per call rather than per hour or day: a row per call reconciles with the ledger
row for row (`x_EventId` is the call's event id, and `x_CostNanoUsd` its charge as the
ledger holds it), so a missing or doubled call shows by its id, not as a difference in a
sum; the export keeps the keyset pages, the snapshot and the hash-chain heads of the
manifest that the other types have; and a FinOps tool groups rows by any period it likes,
which it could not split again if we had summed them. The charge period is the UTC second
the charge was made in (its `occurred_at`): FOCUS date/times are whole seconds, and the end
is exclusive, so [second, second + 1 s).

Money: `cost_nanousd` (a refund's or correction's `amount_nanousd`, negated: a credit to the
wallet is a negative charge) is an integer of 1e-9 USD; BilledCost and the other cost
columns are Decimal(18, 9) built in the engine as that integer times 1e-9, which is exact
(the unscaled decimal *is* the integer), and written as decimals in every format (Parquet
decimal, plain decimal text in CSV, JSON numbers in JSON Lines): the file sums back to the
ledger to the nano-dollar. Every cost column holds the same amount: govledger charges at
its price table's (list) rates with no negotiated discount, commitment or amortization.

Who is who (specification/appendix/origination_of_cost_data.md, scenario 1.1, buying from
the model provider directly): ProviderName, PublisherName and InvoiceIssuerName are the
upstream provider that served the call (`govledger` for a call refused before any provider
was asked, which costs 0, and for refunds and corrections, which the platform grants). The
tenant is the billing account, the team the sub account, the key the resource; tenant,
team and key are also Tags (`govledger:tenant`, `govledger:team`, `govledger:key`). The
model is the SKU (`provider/model`), and `x_` columns carry the rest: ids, tokens by kind,
the integer charge, the wallet, and the hash-chain fields the manifest reads."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sinks.exports.focus_spec import DEFINED, FOCUS_VERSION, SERVICE_CATEGORY_AI

# How a cost column is made from an integer of nano-USD: exact (see the module's docstring).
NANO = "toDecimal64('0.000000001', 9)"
CALL_USD = f"toDecimal64(t.cost_nanousd, 0) * {NANO}"
CREDIT_USD = f"toDecimal64(-t.amount_nanousd, 0) * {NANO}"
CHARGED_SECOND = "toDateTime64(toStartOfSecond(t.occurred_at), 0, 'UTC')"
BILLING_MONTH = "toDateTime64(toStartOfMonth(t.occurred_at), 0, 'UTC')"
PROVIDER = "if(t.provider = '', 'govledger', toString(t.provider))"
MODEL = "if(t.model_selected = '', t.model_requested, t.model_selected)"
SKU = f"concat({PROVIDER}, '/', {MODEL})"
TOKENS = "toDecimal64(t.prompt_tokens + t.completion_tokens, 0)"
TAG_PREFIX = "govledger:"
NULL = "NULL"
REFUND = "t.event_type = 'wallet.refunded'"


def _text(column: str) -> str:
    """A text column, null where the ledger has none (FOCUS wants null, not '')."""
    return f"nullIf(toString(t.{column}), '')"


def _tags(key: str) -> str:
    return (
        f"toJSONString(map('{TAG_PREFIX}tenant', {_text('tenant_id')}, "
        f"'{TAG_PREFIX}team', {_text('team_id')}, '{TAG_PREFIX}key', {key}))"
    )


# Each column: its name, its value for a call (a `lineage` row) and for a refund or
# correction (a `control_events` row). FOCUS columns first, alphabetical; then x_ columns.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("BilledCost", CALL_USD, CREDIT_USD),
    ("BillingAccountId", "toString(t.tenant_id)", "toString(t.tenant_id)"),
    ("BillingAccountName", "toString(t.tenant_id)", "toString(t.tenant_id)"),
    ("BillingAccountType", "'Tenant'", "'Tenant'"),
    ("BillingCurrency", "'USD'", "'USD'"),
    (
        "BillingPeriodEnd",
        f"{BILLING_MONTH} + toIntervalMonth(1)",
        f"{BILLING_MONTH} + toIntervalMonth(1)",
    ),
    ("BillingPeriodStart", BILLING_MONTH, BILLING_MONTH),
    ("ChargeCategory", "'Usage'", f"if({REFUND}, 'Credit', 'Adjustment')"),
    # Null: no row corrects a billing period already invoiced (govledger issues no invoice).
    ("ChargeClass", "CAST(NULL AS Nullable(String))", NULL),
    (
        "ChargeDescription",
        f"concat({MODEL}, ' ', toString(t.api), ' call: ', toString(t.prompt_tokens), "
        "' prompt and ', toString(t.completion_tokens), ' completion tokens')",
        f"if({REFUND}, concat('refund of call ', t.call_event_id), "
        "concat('correction of entry ', t.entry_event_id))",
    ),
    ("ChargeFrequency", "'Usage-Based'", "'One-Time'"),
    (
        "ChargePeriodEnd",
        f"{CHARGED_SECOND} + toIntervalSecond(1)",
        f"{CHARGED_SECOND} + toIntervalSecond(1)",
    ),
    ("ChargePeriodStart", CHARGED_SECOND, CHARGED_SECOND),
    ("ConsumedQuantity", TOKENS, NULL),
    ("ConsumedUnit", "'Tokens'", NULL),
    ("ContractedCost", CALL_USD, CREDIT_USD),
    ("EffectiveCost", CALL_USD, CREDIT_USD),
    ("InvoiceIssuerName", PROVIDER, "'govledger'"),
    ("ListCost", CALL_USD, CREDIT_USD),
    ("PricingQuantity", TOKENS, NULL),
    ("PricingUnit", "'Tokens'", NULL),
    ("ProviderName", PROVIDER, "'govledger'"),
    ("PublisherName", PROVIDER, "'govledger'"),
    ("RegionId", _text("region"), NULL),
    ("RegionName", _text("region"), NULL),
    ("ResourceId", _text("key_id"), NULL),
    ("ResourceType", "if(t.key_id = '', NULL, 'API Key')", NULL),
    ("ServiceCategory", f"'{SERVICE_CATEGORY_AI}'", f"'{SERVICE_CATEGORY_AI}'"),
    ("ServiceName", f"concat({PROVIDER}, ' ', toString(t.api))", "'govledger wallets'"),
    ("ServiceSubcategory", "'Generative AI'", "'Other (AI and Machine Learning)'"),
    ("SkuId", SKU, NULL),
    # The price list is keyed by provider and model (with effective dates): the SKU.
    ("SkuPriceId", SKU, NULL),
    ("SubAccountId", _text("team_id"), _text("team_id")),
    ("SubAccountName", _text("team_id"), _text("team_id")),
    ("SubAccountType", "if(t.team_id = '', NULL, 'Team')", "if(t.team_id = '', NULL, 'Team')"),
    ("Tags", _tags(_text("key_id")), _tags(NULL)),
    # --- custom columns (x_), after every FOCUS column ---
    ("x_EventId", "toString(t.event_id)", "toString(t.event_id)"),
    ("x_EventType", "toString(t.event_type)", "toString(t.event_type)"),
    ("x_OccurredAt", "t.occurred_at", "t.occurred_at"),
    ("x_TenantId", "toString(t.tenant_id)", "toString(t.tenant_id)"),
    ("x_TeamId", _text("team_id"), _text("team_id")),
    ("x_WalletId", _text("wallet_id"), _text("wallet_id")),
    ("x_KeyId", _text("key_id"), NULL),
    ("x_UserId", "t.user_id", NULL),
    # The call a refund credits back, or the ledger entry a correction corrects.
    ("x_RelatedEventId", NULL, f"if({REFUND}, t.call_event_id, t.entry_event_id)"),
    ("x_ModelRequested", "t.model_requested", NULL),
    ("x_ModelSelected", _text("model_selected"), NULL),
    ("x_Api", "toString(t.api)", NULL),
    ("x_Decision", _text("decision"), NULL),
    ("x_HttpStatus", "t.http_status", NULL),
    ("x_UsageSource", _text("usage_source"), NULL),
    ("x_PromptTokens", "t.prompt_tokens", NULL),
    ("x_CompletionTokens", "t.completion_tokens", NULL),
    ("x_CachedPromptTokens", "t.cached_prompt_tokens", NULL),
    ("x_ReasoningTokens", "t.reasoning_tokens", NULL),
    ("x_CostNanoUsd", "t.cost_nanousd", "-t.amount_nanousd"),
    ("x_TraceId", _text("trace_id"), NULL),
    ("x_ProducerId", "t.producer_id", "t.producer_id"),
    ("x_Seq", "t.seq", "t.seq"),
    ("x_RecordHash", "t.record_hash", "t.record_hash"),
)
NAMES = tuple(name for name, _, _ in COLUMNS)
# What the export's scope, keyset and snapshot read, under the names the other types use.
ROW_KEYS = "t.tenant_id AS tenant_id, t.occurred_at AS occurred_at, t.event_id AS event_id, "
ROW_KEYS += "t.ingested_at AS ingested_at"
# The corrections the wallets applied: every credit; a debit only once its wallet accepted
# it (one its balance could not cover is rejected and changes nothing).
APPLIED = (
    "(t.event_type = 'wallet.refunded' OR (t.event_type = 'wallet.corrected' "
    "AND (t.amount_nanousd > 0 OR toString(t.event_id) IN (SELECT last_decided_event_id "
    "FROM wallet_state WHERE last_decision = 'accepted'))))"
)
CALLS = (
    f"SELECT {ROW_KEYS}, "  # noqa: S608 - fixed text
    + ", ".join(f"{call} AS {name}" for name, call, _ in COLUMNS)
    + " FROM lineage AS t WHERE 1"
)
CREDITS = (
    f"SELECT {ROW_KEYS}, "  # noqa: S608 - fixed text
    + ", ".join(f"{credit} AS {name}" for name, _, credit in COLUMNS)
    + f" FROM control_events AS t WHERE {APPLIED}"
)
# Both kinds of rows, read as one table `t`: each branch is filtered, ordered and cut to a
# page on its own table's sort key (the same in both), then the two pages are merged.
BRANCHES = (CALLS, CREDITS)
FOCUS_COLUMNS = tuple(f"t.{name} AS {name}" for name in NAMES)
# The columns the manifest's tally reads: the time range, and the hash-chain heads.
TIME_COLUMN = "x_OccurredAt"
CHAIN_COLUMNS = ("x_ProducerId", "x_Seq", "x_RecordHash")
STANDARD = f"FOCUS {FOCUS_VERSION}"

# --- the FOCUS metadata (specification/metadata/): the manifest carries it, so the file's
# schema is known without reading the file ---

DATA_GENERATOR = "govledger"
# When these columns were defined. SchemaId is derived from the column definitions, so a
# change of columns is a new schema: give it its own date here (a unit test pins the id).
SCHEMA_CREATED = "2026-12-07T00:00:00Z"
# The custom columns that are not strings (metadata data types).
X_TYPES = {
    "x_OccurredAt": "DATETIME",
    "x_HttpStatus": "INTEGER",
    "x_PromptTokens": "INTEGER",
    "x_CompletionTokens": "INTEGER",
    "x_CachedPromptTokens": "INTEGER",
    "x_ReasoningTokens": "INTEGER",
    "x_CostNanoUsd": "INTEGER",
    "x_Seq": "INTEGER",
}
METADATA_TYPES = {"Decimal": "DECIMAL", "Date/Time": "DATETIME", "String": "STRING", "JSON": "JSON"}
QUANTITIES = ("ConsumedQuantity", "PricingQuantity")


def column_definitions() -> list[dict[str, Any]]:
    """The ColumnDefinition of each column, in the file's order."""
    found: list[dict[str, Any]] = []
    for name in NAMES:
        kind = METADATA_TYPES[DEFINED[name].data_type] if name in DEFINED else X_TYPES.get(name)
        kind = kind or "STRING"
        definition: dict[str, Any] = {"ColumnName": name, "DataType": kind}
        if kind == "DECIMAL":
            definition["NumericPrecision"] = 18
            definition["NumberScale"] = 0 if name in QUANTITIES else 9
        elif kind == "STRING":
            definition["StringEncoding"] = "UTF-8"
        elif kind == "JSON":
            definition["ProviderTagPrefixes"] = [TAG_PREFIX]
        found.append(definition)
    return found


def metadata() -> dict[str, Any]:
    """The FOCUS metadata of the export: its data generator and its schema."""
    definitions = column_definitions()
    described = json.dumps([DATA_GENERATOR, FOCUS_VERSION, definitions], sort_keys=True)
    return {
        "DataGenerator": {"DataGenerator": DATA_GENERATOR},
        "Schema": {
            "SchemaId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"govledger:focus:{described}")),
            "FocusVersion": FOCUS_VERSION,
            "CreationDate": SCHEMA_CREATED,
            "ColumnDefinition": definitions,
        },
    }
