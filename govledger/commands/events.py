"""`govledger events list | tail`: gateway calls from the terminal.

`list` reads the store through the query API (`/v1/events/list`, or `/v1/events` with
`--group-by`). `tail` follows calls as they happen: an org reader (the admin token or an
org-admin key) follows the lineage topic itself, each record authenticated with the org
keyring as every consumer does; a tenant key follows its tenant's rows through the query
API instead, because the broker knows no tenants (the rule `replay --from kafka` keeps).

Who is asking: `GOVLEDGER_API_KEY` when set (a key's secret, kept out of the command line
and so out of `ps`), else the admin token of the data dir."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from govledger.cli_support import ADMIN_TIMEOUT_S, CliError, checked, when
from schemas import event_filters
from schemas.settings import SinkSettings, load

if TYPE_CHECKING:
    import httpx

    from schemas.records import LineageRecord

API_KEY_ENV = "GOVLEDGER_API_KEY"  # schemas.settings: CommonSettings.api_key
GROUPS = ("gateway", "provider", "model", "team", "tenant")
TAIL_POLL_S = 1.0
# A tenant's tail re-reads this much of the recent past each poll (rows reach the store a
# few seconds after the call) and remembers this many event ids so none prints twice.
TAIL_WINDOW = "2m"
TAIL_SEEN_MAX = 20_000
COLUMNS = ("occurred_at", "team", "key", "provider", "model", "status", "tokens", "cost_usd")


def _credential(settings: SinkSettings) -> str:
    if settings.api_key:
        return settings.api_key
    from govledger.admin_token import resolve_admin_token

    try:
        return resolve_admin_token(settings, create=False)
    except FileNotFoundError as exc:
        raise CliError(f"{exc} (or set {API_KEY_ENV} to a key's secret)") from exc


def _get(client: httpx.Client, path: str, params: dict[str, str]) -> Any:
    import httpx

    try:
        return checked(client.get(path, params=params))
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the query API at {client.base_url}: {exc}") from exc


def _filters(args: argparse.Namespace) -> dict[str, str]:
    values = {name: getattr(args, name) or "" for name in event_filters.FILTER_NAMES}
    try:
        event_filters.parse_filters(values)  # the server checks too; fail before a call
    except event_filters.FilterError as exc:
        raise CliError(str(exc)) from exc
    return {name: value for name, value in values.items() if value}


def _usd(nanousd: int) -> str:
    return f"{nanousd / 1e9:.6f}"


def _line(row: dict[str, Any]) -> str:
    status = str(row["http_status"]) + (f" {row['error_code']}" if row["error_code"] else "")
    tokens = int(row["prompt_tokens"]) + int(row["completion_tokens"])
    cells = (
        when(row["occurred_at_ms"]),
        row["team_id"],
        row["key_id"],
        row["provider"],
        row["model"],
        status,
        str(tokens),
        _usd(int(row["cost_nanousd"])),
    )
    return "\t".join(cells)


def _emit(row: dict[str, Any], as_json: bool) -> None:
    sys.stdout.write((orjson.dumps(row).decode() if as_json else _line(row)) + "\n")
    sys.stdout.flush()


def cmd_events(args: argparse.Namespace) -> int:
    """events list | tail."""
    import httpx

    settings = load(SinkSettings)
    credential = _credential(settings)
    filters = _filters(args)
    with httpx.Client(
        base_url=settings.query_url,
        headers={"Authorization": f"Bearer {credential}"},
        timeout=ADMIN_TIMEOUT_S,
    ) as client:
        tenant = {"tenant": args.tenant} if args.tenant else {}
        if args.events_command == "list":
            return _list(client, args, {**filters, **tenant})
        reader_tenant = _get(client, "/v1/me", {}).get("tenant")
        if reader_tenant is None:
            return _tail_topic(args, settings, filters, args.tenant or None)
        return _tail_store(client, args, {**filters, **tenant})


def _list(client: httpx.Client, args: argparse.Namespace, params: dict[str, str]) -> int:
    if args.group_by:
        grouped = {**params, "since": args.since, "group_by": args.group_by}
        data = _get(client, "/v1/events", grouped)
        if args.json:
            sys.stdout.write(orjson.dumps(data).decode() + "\n")
            return 0
        print(f"{args.group_by}\tcalls\terrors\ttokens\tcost_usd")
        for group in data["groups"][: args.limit]:
            print(
                f"{group[args.group_by]}\t{group['calls']}\t{group['errors']}\t"
                f"{group['total_tokens']}\t{_usd(group['cost_nanousd'])}"
            )
        return 0
    listed = {**params, "since": args.since, "limit": str(args.limit)}
    page = _get(client, "/v1/events/list", listed)
    if args.json:
        for row in page["data"]:
            _emit(row, True)
        return 0
    print("\t".join(COLUMNS))
    for row in page["data"]:
        _emit(row, False)
    if page["next"]:
        sys.stderr.write(f"more: --limit above {args.limit} shows further calls\n")
    return 0


def _tail_store(client: httpx.Client, args: argparse.Namespace, params: dict[str, str]) -> int:
    """A tenant key: poll its tenant's newest rows, print each once, oldest first."""
    seen: deque[str] = deque(maxlen=TAIL_SEEN_MAX)
    seen_set: set[str] = set()
    printed = 0
    if not args.json:
        print("\t".join(COLUMNS), flush=True)
    query = {**params, "since": TAIL_WINDOW, "limit": str(event_filters.MAX_LISTED)}

    def remember(event_id: str) -> None:
        if len(seen) == seen.maxlen:
            seen_set.discard(seen[0])
        seen.append(event_id)
        seen_set.add(event_id)

    # Like the topic's tail, start at now: what is already stored counts as seen.
    for row in _get(client, "/v1/events/list", query)["data"]:
        remember(row["event_id"])
    sys.stderr.write("following the tenant's calls through the query API (Ctrl-C stops)\n")
    sys.stderr.flush()
    try:
        while True:
            time.sleep(TAIL_POLL_S)
            rows = _get(client, "/v1/events/list", query)["data"]
            for row in reversed(rows):
                if row["event_id"] in seen_set:
                    continue
                remember(row["event_id"])
                _emit(row, args.json)
                printed += 1
                if args.count and printed >= args.count:
                    return 0
    except KeyboardInterrupt:
        return 0


def listed_row(record: LineageRecord) -> dict[str, Any]:
    """A lineage record in the shape `/v1/events/list` answers, so both tails print alike."""
    return {
        "event_id": record.event_id,
        "occurred_at_ms": record.occurred_at,
        "tenant_id": record.tenant_id,
        "team_id": record.team_id,
        "key_id": record.key_id,
        "gateway": record.producer_id,
        "api": record.api,
        "provider": record.provider,
        "model": record.model_selected or record.model_requested,
        "decision": record.decision,
        "http_status": record.http_status,
        "error_code": record.error_code,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost_nanousd": record.cost_nanousd,
        "latency_ms": record.latency_ms,
        "selection_reason": record.selection_reason,
        "guardrails": [g.name for g in record.guardrails_triggered],
        "trace_id": record.trace_id,
    }


def _tail_topic(
    args: argparse.Namespace, settings: SinkSettings, filters: dict[str, str], tenant: str | None
) -> int:
    """An org reader: follow the lineage topic from its end, authenticated records only."""
    from schemas import authn
    from schemas.settings import RuntimeSettings

    keyring = authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=False)
    authn.install(keyring)
    bootstrap = settings.kafka_bootstrap or f"127.0.0.1:{load(RuntimeSettings).broker_port}"
    wanted = event_filters.parse_filters(filters)
    if not args.json:
        print("\t".join(COLUMNS), flush=True)

    def keep(record: LineageRecord) -> bool:
        return (tenant is None or record.tenant_id == tenant) and wanted.matches(record)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_follow(bootstrap, keep, lambda row: _emit(row, args.json), args.count))
    return 0


async def _follow(
    bootstrap: str,
    keep: Callable[[LineageRecord], bool],
    emit: Callable[[dict[str, Any]], None],
    count: int,
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas import authn, codec
    from schemas.aiokafka_guard import skip_batches_with_undecodable_headers
    from schemas.kafka_security import client_options
    from schemas.records import LineageRecord
    from schemas.topics import LINEAGE

    skip_batches_with_undecodable_headers()  # one hostile record must not stop the tail
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        client_id="govledger-events-tail",
        **client_options(),
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(LINEAGE.name, p)
            for p in sorted(consumer.partitions_for_topic(LINEAGE.name) or ())
        ]
        if not partitions:
            raise CliError(f"the broker at {bootstrap} has no topic {LINEAGE.name}")
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end now: a call after this line prints
            await consumer.position(partition)
        sys.stderr.write(f"following {LINEAGE.name} on {bootstrap} (Ctrl-C stops)\n")
        sys.stderr.flush()
        printed = 0
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1_000)
            for messages in batches.values():
                for message in messages:
                    try:
                        event = authn.decode_message(message)
                    except codec.DecodeError:
                        continue  # forged or foreign: every consumer skips it
                    if not isinstance(event, LineageRecord) or not keep(event):
                        continue
                    emit(listed_row(event))
                    printed += 1
                    if count and printed >= count:
                        return
    finally:
        await consumer.stop()


def add_parser(commands: Any) -> None:
    """`govledger events`."""
    events = commands.add_parser("events", help="list and follow gateway calls")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    listing = events_commands.add_parser("list", help="calls over a window, newest first")
    listing.add_argument("--since", default="1h", help="window: 45s, 30m, 12h, 30d")
    listing.add_argument("--limit", type=int, default=event_filters.DEFAULT_LISTED)
    listing.add_argument("--group-by", choices=GROUPS, help="totals per group instead")
    tail = events_commands.add_parser("tail", help="follow calls as they happen")
    tail.add_argument(
        "--count", type=int, default=0, help="stop after this many calls (0: until Ctrl-C)"
    )
    for command in (listing, tail):
        command.add_argument("--json", action="store_true", help="one JSON object per line")
        command.add_argument("--tenant", help="an org reader's tenant to show")
        for name in event_filters.FILTER_NAMES:
            command.add_argument(f"--{name}", help=f"only calls with this {name}")
    events.set_defaults(func=cmd_events)
