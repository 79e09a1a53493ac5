"""Questions asked of history: does the rebuilt state match the live one, does every wallet
match its journal, and who called what with which key at a given moment."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from replay.rebuild import BarFactory, terminal_bar, wallets_at
from replay.sources import ArrowReader, blobs, literal, texts
from replay.state import Rebuilt
from schemas import codec
from schemas.records import BreakerState, QuotaThresholdCrossed, WalletBalance
from streams.wallets import logic as wallet_rules

# A wallet's projection minus what names the last entry read: with settlements of several
# producers, which one comes last depends on the read order (partition order live,
# (producer, seq) in replay); every amount, count and watermark does not.
ORDER_DEPENDENT_FIELDS = frozenset({"last_event_id"})
LEDGER_FIELDS = tuple(
    f.name for f in dataclasses.fields(wallet_rules.Wallet) if f.name not in ORDER_DEPENDENT_FIELDS
)


def ledger_differences(
    rebuilt: Mapping[str, wallet_rules.Wallet], live: Mapping[str, wallet_rules.Wallet]
) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Per wallet, the ledger fields whose rebuilt and live values differ: (rebuilt, live).
    A wallet missing on one side differs in `balance_nanousd` against None."""
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for wallet_id in sorted(set(rebuilt) | set(live)):
        mine, theirs = rebuilt.get(wallet_id), live.get(wallet_id)
        if mine is None or theirs is None:
            out[wallet_id] = {
                "balance_nanousd": (
                    None if mine is None else mine.balance_nanousd,
                    None if theirs is None else theirs.balance_nanousd,
                )
            }
            continue
        changed = {
            name: (getattr(mine, name), getattr(theirs, name))
            for name in LEDGER_FIELDS
            if getattr(mine, name) != getattr(theirs, name)
        }
        if changed:
            out[wallet_id] = changed
    return out


def _tenant_filter(tenant_id: str | None) -> str:
    return "1" if tenant_id is None else f"tenant_id = {literal(tenant_id)}"


def live_wallets(read: ArrowReader, tenant_id: str | None = None) -> dict[str, wallet_rules.Wallet]:
    """The latest published projection of every wallet (most entries, then revision)."""
    result = read(
        "SELECT raw FROM wallet_state WHERE "  # noqa: S608
        f"{_tenant_filter(tenant_id)} "
        "ORDER BY wallet_id, entry_count DESC, revision DESC LIMIT 1 BY wallet_id"
    )
    found: dict[str, wallet_rules.Wallet] = {}
    if result.num_rows == 0:
        return found
    for raw in blobs(result.column("raw")):
        record = codec.decode_as(raw, WalletBalance)
        found[record.wallet_id] = wallet_rules.latest(found.get(record.wallet_id), record)
    return found


def live_breakers(read: ArrowReader) -> dict[tuple[str, str], BreakerState]:
    """The latest published fleet breaker of every target."""
    result = read(
        "SELECT raw FROM breaker_state ORDER BY provider, model, occurred_at DESC "
        "LIMIT 1 BY provider, model"
    )
    if result.num_rows == 0:
        return {}
    states = (codec.decode_as(raw, BreakerState) for raw in blobs(result.column("raw")))
    return {(s.provider, s.model): s for s in states}


def live_quota_alerts(read: ArrowReader, tenant_id: str | None) -> set[tuple[str, int, int]]:
    """(wallet, period start, threshold) of every `quota.threshold` alert published."""
    result = read(
        "SELECT DISTINCT raw FROM alerts WHERE "  # noqa: S608
        f"event_type = '{QuotaThresholdCrossed.event_type_name}' AND {_tenant_filter(tenant_id)}"
    )
    if result.num_rows == 0:
        return set()
    alerts = (codec.decode_as(raw, QuotaThresholdCrossed) for raw in blobs(result.column("raw")))
    return {(a.wallet_id, a.period_start_at, a.threshold_percent) for a in alerts}


def diff_live(read: ArrowReader, rebuilt: Rebuilt) -> list[str]:
    """Lines naming each difference between the rebuilt state (at now) and the live one:
    wallets (latest `wallet_state`), breakers (latest `breaker_state`), quota thresholds
    alerted in each wallet's current period (`alerts`). Empty when they agree."""
    lines: list[str] = []
    live = live_wallets(read, rebuilt.tenant_id)
    for wallet_id, fields in ledger_differences(rebuilt.wallets, live).items():
        for name, (mine, theirs) in fields.items():
            lines.append(f"wallet {wallet_id}: {name} replay={mine} live={theirs}")
    # Targets are shared by every tenant: one tenant's calls do not make the fleet breaker.
    published = live_breakers(read) if rebuilt.tenant_id is None else {}
    targets = set(published) | set(rebuilt.breakers) if rebuilt.tenant_id is None else set()
    for target in sorted(targets):
        fleet = rebuilt.breakers.get(target)
        mine = (fleet.breaker.state, fleet.breaker.opened_at_ms) if fleet else ("closed", None)
        state = published.get(target)
        theirs = (state.state, state.opened_at) if state is not None else ("closed", None)
        if mine != theirs:
            lines.append(
                f"breaker {target[0]}/{target[1]}: replay={mine[0]}@{mine[1]} "
                f"live={theirs[0]}@{theirs[1]}"
            )
    alerted = live_quota_alerts(read, rebuilt.tenant_id)
    for wallet_id, quota in sorted(rebuilt.quotas.items()):
        period = quota.period_start_at
        theirs = {t for w, p, t in alerted if w == wallet_id and p == period}
        if set(quota.crossed_percent) != theirs:
            lines.append(
                f"quota {wallet_id} period {period}: replay crossed "
                f"{sorted(quota.crossed_percent)} live alerted {sorted(theirs)}"
            )
    return lines


@dataclasses.dataclass(frozen=True, slots=True)
class Reconciled:
    """One wallet's check: the published balance against its journal."""

    wallet_id: str
    live_nanousd: int | None
    expected_nanousd: int | None
    spent_in_lineage_nanousd: int
    problems: tuple[str, ...]


def reconcile(
    read: ArrowReader, at_ms: int, tenant_id: str | None = None, *, bar: BarFactory = terminal_bar
) -> list[Reconciled]:
    """Every wallet's latest published balance against the audit tables: the balance the
    wallets logic folds from the admin log and the settled calls (the expected value:
    funded + allocated in - out + refunds + corrections - settlements), the projection's
    own identity, and its spend against the sum of `cost_nanousd` of its settled calls
    (each (producer, seq) once), summed by ClickHouse independently of any fold."""
    live = live_wallets(read, tenant_id)
    expected, _ = wallets_at(read, at_ms, tenant_id, bar=bar)
    sums = read(
        "SELECT wallet_id, sum(cost) AS spent FROM (SELECT wallet_id, any(cost_nanousd) AS cost "  # noqa: S608
        f"FROM lineage WHERE cost_nanousd > 0 AND wallet_id != '' AND {_tenant_filter(tenant_id)} "
        "GROUP BY wallet_id, producer_id, seq) GROUP BY wallet_id"
    )
    spent_by_wallet: dict[str, int] = {}
    if sums.num_rows:
        spent_by_wallet = dict(
            zip(texts(sums.column("wallet_id")), sums.column("spent").to_pylist(), strict=True)
        )
    out = []
    for wallet_id in sorted(set(live) | set(expected)):
        mine, theirs = expected.get(wallet_id), live.get(wallet_id)
        problems: list[str] = []
        if theirs is None:
            problems.append("no published balance")
        else:
            identity = (
                theirs.funded_nanousd + theirs.allocated_in_nanousd - theirs.allocated_out_nanousd
                - theirs.spent_nanousd + theirs.refunded_nanousd + theirs.corrected_nanousd
            )  # fmt: skip
            if identity != theirs.balance_nanousd:
                problems.append(f"balance {theirs.balance_nanousd} != sum of its parts {identity}")
            if mine is not None:
                for name, (a, b) in (
                    ledger_differences({wallet_id: mine}, {wallet_id: theirs})
                    .get(wallet_id, {})
                    .items()
                ):
                    if name.endswith("_nanousd") or name == "entry_count":
                        problems.append(f"{name}: journal {a} published {b}")
            spent = spent_by_wallet.get(wallet_id, 0)
            if theirs.spent_nanousd != spent:
                problems.append(f"spent {theirs.spent_nanousd} != settled calls {spent}")
        if mine is None:
            problems.append("no journal entries")
        out.append(
            Reconciled(
                wallet_id,
                None if theirs is None else theirs.balance_nanousd,
                None if mine is None else mine.balance_nanousd,
                spent_by_wallet.get(wallet_id, 0),
                tuple(problems),
            )
        )
    return out


def forged_left_out(read: ArrowReader) -> int:
    """How many records consumers refused as forged or unauthenticated (each counted once
    however many consumers refused it). None of them is in the journal or the lineage a
    reconciliation sums: their fundings and charges are left out. Counted over every
    tenant: the tenant a forged record claims is not to be believed."""
    result = read(
        "SELECT uniqExact(origin_topic, payload) AS n FROM dead_letters "
        "WHERE startsWith(error, 'forged:') OR startsWith(error, 'unauthenticated:')"
    )
    return int(result.column("n")[0].as_py()) if result.num_rows else 0


WHO_COLUMNS = (
    "time",
    "tenant",
    "team",
    "key_id",
    "key_prefix",
    "user",
    "model_requested",
    "model_selected",
    "provider",
    "decision",
    "guardrails",
    "cost_nanousd",
    "wallet_id",
    "event_id",
)


def who(
    read: ArrowReader,
    at_ms: int,
    window_ms: int,
    *,
    model: str | None = None,
    tenant_id: str | None = None,
    limit: int = 1_000,
) -> list[dict[str, Any]]:
    """The calls within `window_ms` of `at_ms` (of a model, requested or selected, and a
    tenant, if given), oldest first, each with its key's prefix from the admin log."""
    where = [
        f"occurred_at >= fromUnixTimestamp64Milli(toInt64({int(at_ms - window_ms)}), 'UTC')",
        f"occurred_at <= fromUnixTimestamp64Milli(toInt64({int(at_ms + window_ms)}), 'UTC')",
        _tenant_filter(tenant_id),
    ]
    if model:
        where.append(f"(model_requested = {literal(model)} OR model_selected = {literal(model)})")
    result = read(
        "SELECT toUnixTimestamp64Milli(occurred_at) AS at, tenant_id, team_id, key_id, "  # noqa: S608
        "ifNull(user_id, '') AS user, model_requested, model_selected, provider, decision, "
        "arrayStringConcat(arrayMap(g -> concat(g.1, ':', g.2), guardrails_triggered), ',') "
        "AS guardrails, cost_nanousd, wallet_id, toString(event_id) AS event_id FROM lineage "
        f"WHERE {' AND '.join(where)} ORDER BY occurred_at, producer_id, seq LIMIT {int(limit)}"
    )
    if result.num_rows == 0:
        return []
    names = ("at", "tenant_id", "team_id", "key_id", "user", "model_requested", "model_selected",
             "provider", "decision", "guardrails", "wallet_id", "event_id")  # fmt: skip
    columns = {name: texts(result.column(name)) if name != "at" else
               result.column(name).to_pylist() for name in names}  # fmt: skip
    costs = result.column("cost_nanousd").to_pylist()
    key_ids = sorted(set(columns["key_id"]))
    prefixes: dict[str, str] = {}
    if key_ids:
        keys = read(
            "SELECT key_id, any(key_prefix) AS key_prefix FROM control_events "  # noqa: S608
            "WHERE event_type = 'key.issued' AND key_id IN ("
            + ", ".join(literal(k) for k in key_ids)
            + ") GROUP BY key_id"
        )
        if keys.num_rows:
            prefixes = dict(
                zip(texts(keys.column("key_id")), texts(keys.column("key_prefix")), strict=True)
            )
    columns["key_prefix"] = [prefixes.get(k, "") for k in columns["key_id"]]
    columns["cost_nanousd"] = costs
    renamed = {"time": "at", "tenant": "tenant_id", "team": "team_id"}
    return [
        {name: columns[renamed.get(name, name)][i] for name in WHO_COLUMNS}
        for i in range(result.num_rows)
    ]
