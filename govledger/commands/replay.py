"""`govledger replay` and `govledger audit reconcile | who`: state at a moment and questions
of history, folded with `streams/*/logic` by `replay/`. The store is read through the
sink's query API (the running stack owns the embedded engine), or directly with `--dsn`
when no stack runs. Exit code 1 when a difference or mismatch is found, 2 when the store
cannot be read."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas.ids import now_ms
from schemas.money import format_usd
from schemas.settings import StreamSettings, load

if TYPE_CHECKING:  # imported by the commands that run: pyarrow, clickhouse-connect
    from replay.sources import ArrowReader
    from replay.state import Rebuilt
    from streams.breakers import logic as breaker_rules

DEFAULT_WHO_WINDOW_S = 60.0


class StoreUnreachableError(Exception):
    """The store could not be read (query API down, bad token, no such chDB)."""


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _reader(args: argparse.Namespace, settings: StreamSettings) -> tuple[ArrowReader, int]:
    """How to read the store, and the rows one answer may hold."""
    from replay.sources import http_reader, store_reader

    if args.dsn:
        from sinks.store import Store

        return store_reader(Store(args.dsn)), 500_000
    from govledger.admin_token import resolve_admin_token

    try:
        token = resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise StoreUnreachableError(str(exc)) from exc
    from schemas.settings import SinkSettings

    rows = load(SinkSettings).query_max_rows
    return http_reader(settings.query_url, token), rows


def _require_org_reader(settings: StreamSettings) -> None:
    """The topics hold every tenant's records and the broker knows no tenants, so reading
    them is for the stack's operator: the admin token or an org-admin key, as the query
    API tells (`/v1/me`). A tenant key reads its tenant through the store instead."""
    import httpx

    from govledger.admin_token import resolve_admin_token

    try:
        token = resolve_admin_token(settings, create=False)
        response = httpx.get(
            f"{settings.query_url}/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    except (FileNotFoundError, httpx.HTTPError) as exc:
        raise StoreUnreachableError(f"cannot tell who is asking: {exc}") from exc
    if response.status_code != 200:
        raise StoreUnreachableError(f"query API answered {response.status_code}: {response.text}")
    if response.json().get("tenant") is not None:
        raise StoreUnreachableError(
            "--from kafka needs the admin token or an org-admin key (the topics hold every "
            "tenant); a tenant key replays from the store (--from clickhouse)"
        )


def _moment(text: str) -> int:
    from replay.sources import parse_moment

    try:
        return parse_moment(text, now_ms())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _guarded(run: Callable[[], int]) -> int:
    from aiokafka.errors import KafkaError
    from clickhouse_connect.driver.exceptions import ClickHouseError

    unreadable = (StoreUnreachableError, ConnectionError, RuntimeError, ClickHouseError, KafkaError)
    try:
        return run()
    except unreadable as exc:
        sys.stderr.write(f"govledger: {exc}\n")
        return 2


def _breaker_config(settings: StreamSettings) -> breaker_rules.BreakerConfig:
    from streams.breakers.agent import config_of

    return config_of(settings)


def print_state(rebuilt: Rebuilt, out: Any) -> None:
    """The rebuilt state as tab-separated sections."""
    from streams.escalations import logic as escalation_rules

    out.write(f"# state at {_when(rebuilt.at_ms)} ({rebuilt.at_ms}); {rebuilt.events} records\n")
    out.write("# wallets\nwallet_id\tbalance_usd\tfunded_usd\tspent_usd\tentries\n")
    for wallet_id, w in sorted(rebuilt.wallets.items()):
        out.write(
            f"{wallet_id}\t{format_usd(w.balance_nanousd)}\t{format_usd(w.funded_nanousd)}\t"
            f"{format_usd(w.spent_nanousd)}\t{w.entry_count}\n"
        )
    out.write("# quotas\nwallet_id\tbudget_usd\tperiod_start\tspent_usd\tcrossed_percent\n")
    for wallet_id, q in sorted(rebuilt.quotas.items()):
        crossed = ",".join(str(t) for t in sorted(q.crossed_percent)) or "-"
        out.write(
            f"{wallet_id}\t{format_usd(q.budget_nanousd)}\t{_when(q.period_start_at)}\t"
            f"{format_usd(q.last_spent_nanousd)}\t{crossed}\n"
        )
    out.write("# breakers\ntarget\tstate\topened_at\tfailures_in_window\n")
    for (provider, model), fleet in sorted(rebuilt.breakers.items()):
        b = fleet.breaker
        out.write(f"{provider}/{model}\t{b.state}\t{_when(b.opened_at_ms)}\t{len(b.failures_ms)}\n")
    out.write("# escalations (unresolved)\nescalation_id\ttenant\tqueue\tpriority\tstatus\t"
              "deadline\n")  # fmt: skip
    for e in escalation_rules.open_escalations(rebuilt.escalations, tenant_id=rebuilt.tenant_id):
        out.write(
            f"{e.escalation_id}\t{e.tenant_id}\t{e.queue}\t{e.priority}\t{e.status}\t"
            f"{_when(e.deadline_at)}\n"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild wallets, quotas, breakers and escalations at --at; --diff-live compares the
    state rebuilt at now with the live one."""
    settings = load(StreamSettings)
    at_ms = args.at if args.at is not None else now_ms()
    if args.diff_live and args.at is not None:
        sys.stderr.write("govledger: --diff-live compares the state at now; leave out --at\n")
        return 2

    def run() -> int:
        from replay.audit import diff_live
        from replay.rebuild import rebuild_from_kafka, rebuild_from_store
        from streams.escalations import logic as escalation_rules

        breaker_config = _breaker_config(settings)
        escalation_config = escalation_rules.config_of(settings)
        if args.source == "kafka":
            from schemas.settings import RuntimeSettings

            _require_org_reader(settings)
            # Records read from the broker count only once authenticated (schemas.authn).
            from schemas import authn

            authn.install(
                authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=False)
            )
            port = load(RuntimeSettings).broker_port
            bootstrap = settings.kafka_bootstrap or f"127.0.0.1:{port}"
            rebuilt = rebuild_from_kafka(
                bootstrap, at_ms, args.tenant, breaker_config=breaker_config,
                escalation_config=escalation_config, partitions=settings.topic_partitions,
            )  # fmt: skip
        else:
            read, rows = _reader(args, settings)
            rebuilt = rebuild_from_store(
                read, at_ms, args.tenant, breaker_config=breaker_config,
                escalation_config=escalation_config, partitions=settings.topic_partitions,
                page_rows=rows,
            )  # fmt: skip
        if not args.diff_live:
            print_state(rebuilt, sys.stdout)
            return 0
        read, _ = _reader(args, settings)
        lines = diff_live(read, rebuilt)
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.write(
            f"{len(lines)} differences between replay and live state\n"
            if lines
            else f"no difference: {len(rebuilt.wallets)} wallets, {len(rebuilt.breakers)} "
            f"breakers, {len(rebuilt.quotas)} quotas\n"
        )
        return 1 if lines else 0

    return _guarded(run)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Every wallet's published balance against its journal; 1 on any mismatch."""
    settings = load(StreamSettings)

    def run() -> int:
        from replay.audit import forged_left_out, reconcile

        read, _ = _reader(args, settings)
        checked = reconcile(read, now_ms(), args.tenant)
        bad = [c for c in checked if c.problems]
        sys.stdout.write("wallet_id\tpublished_usd\tjournal_usd\tsettled_calls_usd\tstatus\n")
        for c in checked:
            published = "-" if c.live_nanousd is None else format_usd(c.live_nanousd)
            journal = "-" if c.expected_nanousd is None else format_usd(c.expected_nanousd)
            status = "ok" if not c.problems else "MISMATCH: " + "; ".join(c.problems)
            sys.stdout.write(
                f"{c.wallet_id}\t{published}\t{journal}\t"
                f"{format_usd(c.spent_in_lineage_nanousd)}\t{status}\n"
            )
        forged = forged_left_out(read)
        if forged:
            sys.stdout.write(
                f"{forged} forged records (refused by the consumers, dead-lettered) are left "
                "out: no funding or charge of theirs is in any figure; `govledger audit "
                "verify` names them\n"
            )
        sys.stdout.write(
            f"{len(bad)} of {len(checked)} wallets do not reconcile\n"
            if bad
            else f"all {len(checked)} wallets reconcile\n"
        )
        return 1 if bad else 0

    return _guarded(run)


def cmd_who(args: argparse.Namespace) -> int:
    """Who called what with which key around --at, and the wallets' balances then."""
    settings = load(StreamSettings)

    def run() -> int:
        from replay.audit import WHO_COLUMNS, who
        from replay.rebuild import wallets_at

        read, rows = _reader(args, settings)
        window_ms = round(args.window * 1000)
        calls = who(read, args.at, window_ms, model=args.model, tenant_id=args.tenant)
        sys.stdout.write("\t".join(WHO_COLUMNS) + "\n")
        for call in calls:
            values = [_when(call["time"]) if c == "time" else str(call[c]) for c in WHO_COLUMNS]
            sys.stdout.write("\t".join(values) + "\n")
        sys.stdout.write(f"# {len(calls)} calls within {args.window:g} s of {_when(args.at)}\n")
        wallet_ids = sorted({c["wallet_id"] for c in calls if c["wallet_id"]})
        if wallet_ids:
            tenants = {c["tenant"] for c in calls}
            tenant = next(iter(tenants)) if len(tenants) == 1 else None
            state, _ = wallets_at(read, args.at, tenant, page_rows=rows)
            sys.stdout.write(f"# wallet balances at {_when(args.at)}\nwallet_id\tbalance_usd\n")
            for wallet_id in wallet_ids:
                wallet = state.get(wallet_id)
                balance = format_usd(wallet.balance_nanousd) if wallet is not None else "-"
                sys.stdout.write(f"{wallet_id}\t{balance}\n")
        return 0

    return _guarded(run)


def cmd_reprice(args: argparse.Namespace) -> int:
    """Every recorded call re-priced at the price in force at its time against its
    recorded cost; 1 on any mismatch."""
    settings = load(StreamSettings)

    def run() -> int:
        from replay.prices import reprice_store

        read, rows = _reader(args, settings)
        report = reprice_store(read, args.tenant, page_rows=rows)
        sys.stdout.write("event_id\tprovider\tmodel\ttime\trecorded_usd\trepriced_usd\n")
        for m in report.mismatches:
            sys.stdout.write(
                f"{m.event_id}\t{m.provider}\t{m.model}\t{_when(m.occurred_at)}\t"
                f"{format_usd(m.recorded_nanousd)}\t{format_usd(m.repriced_nanousd)}\n"
            )
        sys.stdout.write(
            f"{report.mismatched} of {report.checked} priced calls differ from their price; "
            f"{report.unpriced} calls of models with no published or list price not judged\n"
        )
        return 1 if report.mismatched else 0

    return _guarded(run)


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="only this tenant")
    parser.add_argument(
        "--dsn", help="read this store directly (e.g. chdb:///path) instead of the query API"
    )


def add_parser(commands: Any) -> None:
    """`govledger replay`."""
    replay = commands.add_parser(
        "replay", help="rebuild wallets, quotas, breakers and escalations at a moment"
    )
    replay.add_argument(
        "--at", type=_moment, help="ISO 8601 (UTC unless a zone is given), epoch ms or now"
    )
    replay.add_argument(
        "--from", dest="source", choices=["clickhouse", "kafka"], default="clickhouse",
        help="history from the store (all of it) or the topics (what they retain)",
    )  # fmt: skip
    replay.add_argument(
        "--diff-live", action="store_true",
        help="compare the state rebuilt at now with the live state; exit 1 if they differ",
    )  # fmt: skip
    _store_options(replay)
    replay.set_defaults(func=cmd_replay)


def add_audit_commands(audit_commands: Any) -> None:
    """`govledger audit reconcile` and `govledger audit who`."""
    check = audit_commands.add_parser(
        "reconcile", help="check every wallet's balance against its journal; exit 1 if not"
    )
    _store_options(check)
    check.set_defaults(func=cmd_reconcile)
    asked = audit_commands.add_parser(
        "who", help="who called which model with which key around a moment"
    )
    asked.add_argument("--at", type=_moment, required=True, help="ISO 8601, epoch ms or now")
    asked.add_argument("--model", help="only calls that requested or were served this model")
    asked.add_argument(
        "--window", type=float, default=DEFAULT_WHO_WINDOW_S, help="seconds either side of --at"
    )
    _store_options(asked)
    asked.set_defaults(func=cmd_who)
    repriced = audit_commands.add_parser(
        "reprice",
        help="re-price every call at the price in force at its time; exit 1 if any differs",
    )
    _store_options(repriced)
    repriced.set_defaults(func=cmd_reprice)
