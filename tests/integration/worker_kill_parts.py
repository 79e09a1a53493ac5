"""The kill test's parts (tests/integration/test_worker_kill.py): the workload it
publishes, the children it starts and kills, and what it reads back from the stack."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import realistic_record
from schemas import authn, codec
from schemas.codec import HashChain
from schemas.ids import now_ms, uuid7
from schemas.kafka import TopicTailer
from schemas.records import (
    LineageRecord,
    QuotaThresholdCrossed,
    WalletBalance,
    WalletBudgetSet,
    WalletFunded,
)
from schemas.topics import ALERTS, DLQ, WALLET_STATE
from streams.quotas.logic import DEFAULT_THRESHOLDS_PERCENT, threshold_reached
from streams.wallets.logic import month_start_ms, team_wallet_id

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
SESSION_TIMEOUT_MS = 3_000
APP_ID = "govledger-kill-test"
TENANTS = ("acme", "globex", "initech")
TEAMS = ("search", "support", "finops", "research", "ads", "infra", "legal")
GATEWAYS = tuple(f"gateway-kill{i}" for i in range(3))
ADMIN = "admin-kill"
THRESHOLDS = DEFAULT_THRESHOLDS_PERCENT  # 50, 80, 100
# Budget of a wallet as a function of its final spend S, each landing exactly on or just
# beside a threshold: which thresholds alert is decided to the nano-dollar.
BUDGET_SHAPES: tuple[tuple[str, Callable[[int], int]], ...] = (
    ("just under 50 %", lambda s: 2 * s + 1),
    ("exactly 50 %", lambda s: 2 * s),
    ("just under 80 %", lambda s: s * 100 // 80 + 1),
    ("at/over 80 %", lambda s: s * 100 // 80),
    ("just under 100 %", lambda s: s + 1),
    ("exactly 100 %", lambda s: s),
    ("far over 100 %", lambda s: max(1, s // 3)),
    ("10 %", lambda s: 10 * s),
)


# --- the workload -------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """What is published, sealed, and what it must add up to."""

    wallets: list[tuple[str, str]]  # (tenant, team)
    control_first: list[tuple[str, bytes]]  # fundings and budgets before any call
    control_midway: list[tuple[str, bytes]]  # top-ups published halfway through the calls
    lineage: list[tuple[str, bytes]]  # (key, value), gateways interleaved
    funded: dict[str, int]
    spent: dict[str, int]
    calls: dict[str, int]
    budgets: dict[str, int]
    budget_shape: dict[str, str]
    period_start_at: int
    resent: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    """Before lineage record i is sent, the earlier ones listed here are sent again."""

    @property
    def entries(self) -> dict[str, int]:
        """Journal entries each wallet must apply: fundings and calls with a cost."""
        fundings = Counter(
            codec.decode_as(v, WalletFunded).wallet_id
            for _, v in self.control_first + self.control_midway
            if codec.decode(v).event_type == WalletFunded.event_type_name
        )
        return {w: fundings[w] + self.calls.get(w, 0) for w in self.funded}

    def expected_alerts(self) -> dict[str, set[int]]:
        return {
            w: {t for t in THRESHOLDS if threshold_reached(self.spent[w], self.budgets[w], t)}
            for w in self.funded
        }


def build_workload(rng: random.Random, events: int, resends: int) -> Workload:
    wallets = [(tenant, team) for tenant in TENANTS for team in TEAMS]
    start = now_ms()
    period = month_start_ms(start)
    # Calls first: the budgets are cut to the spend they add up to.
    chains = {g: HashChain(g) for g in GATEWAYS}
    spent: dict[str, int] = defaultdict(int)
    calls: dict[str, int] = defaultdict(int)
    per_gateway: dict[str, list[tuple[str, bytes]]] = {g: [] for g in GATEWAYS}
    templates: list[LineageRecord] = []
    while len(templates) < 256:
        template = realistic_record(rng, start)
        if template.decision == "allowed" and template.cost_nanousd > 0:
            templates.append(template)
    # Wallets get uneven traffic, as teams do.
    weights = [rng.uniform(0.3, 3.0) for _ in wallets]
    picks = rng.choices(range(len(wallets)), weights=weights, k=events)
    for i, pick in enumerate(picks):
        tenant, team = wallets[pick]
        wallet = team_wallet_id(tenant, team)
        gateway = GATEWAYS[i % len(GATEWAYS)]
        occurred_at = start + 1 + i // 1_000
        template = templates[i % len(templates)]
        record = dataclasses.replace(
            template,
            event_id=uuid7(occurred_at),
            occurred_at=occurred_at,
            tenant_id=tenant,
            team_id=team,
            key_id=f"key_{tenant}_{team}",
            wallet_id=wallet,
            trace_id=rng.randbytes(16).hex(),
            span_id=rng.randbytes(8).hex(),
        )
        _, value = chains[gateway].seal_encoded(record)
        per_gateway[gateway].append((tenant, value))
        spent[wallet] += record.cost_nanousd
        calls[wallet] += 1
    assert month_start_ms(start + 1 + events // 1_000) == period, "run straddles a month"
    # Interleaved in slices, as concurrent gateways send.
    lineage = [
        item
        for at in range(0, events, 500)
        for gateway in GATEWAYS
        for item in per_gateway[gateway][at : at + 500]
    ]

    admin = HashChain(ADMIN)
    funded: dict[str, int] = {}
    budgets: dict[str, int] = {}
    shapes: dict[str, str] = {}
    first: list[tuple[str, bytes]] = []
    midway: list[tuple[str, bytes]] = []
    order = list(range(len(wallets)))
    rng.shuffle(order)
    for n, index in enumerate(order):
        tenant, team = wallets[index]
        wallet = team_wallet_id(tenant, team)
        s = spent[wallet]
        assert s > 0, f"no traffic for {wallet}; use more events"
        shape, budget_of = BUDGET_SHAPES[n % len(BUDGET_SHAPES)]
        budgets[wallet], shapes[wallet] = budget_of(s), shape
        amount = rng.randint(s // 2, 2 * s) + 1
        funded[wallet] = amount
        first.append((tenant, fund(admin, tenant, team, amount, start)))
        first.append((tenant, budget(admin, tenant, team, budgets[wallet], start)))
        if n % 3 == 0:  # a top-up that flows while the worker is being killed
            top_up = rng.randint(1, 10**12)
            funded[wallet] += top_up
            midway.append((tenant, fund(admin, tenant, team, top_up, start + 1)))
    # Resends: each earlier record again, soon after it or long after, between newer
    # records of the same gateway; the last ones after all the calls (key len(lineage)).
    resent: dict[int, list[int]] = defaultdict(list)
    for _ in range(min(resends, events - 1)):
        original = rng.randrange(events - 1)
        resent[rng.choice((original + 1, rng.randrange(original + 1, events + 1)))].append(original)
    return Workload(
        wallets, first, midway, lineage, funded, spent, calls, budgets, shapes, period, resent
    )


def fund(chain: HashChain, tenant: str, team: str, amount: int, at: int) -> bytes:
    record = WalletFunded(
        event_id=uuid7(at),
        event_type=WalletFunded.event_type_name,
        occurred_at=at,
        tenant_id=tenant,
        producer_id="",
        seq=0,
        wallet_id=team_wallet_id(tenant, team),
        team_id=team,
        amount_nanousd=amount,
        memo="kill test",
        funded_by="kill-test",
    )
    return chain.seal_encoded(record)[1]


def budget(chain: HashChain, tenant: str, team: str, amount: int, at: int) -> bytes:
    record = WalletBudgetSet(
        event_id=uuid7(at),
        event_type=WalletBudgetSet.event_type_name,
        occurred_at=at,
        tenant_id=tenant,
        producer_id="",
        seq=0,
        wallet_id=team_wallet_id(tenant, team),
        team_id=team,
        budget_nanousd=amount,
        thresholds_percent=THRESHOLDS,
        set_by="kill-test",
    )
    return chain.seal_encoded(record)[1]


# --- processes ----------------------------------------------------------------------------


def child_env(data_dir: Path, bootstrap: str, **extra: str) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    # One org keyring for every child (each has a data dir of its own), made before any
    # starts; the records this test publishes as gateways and the admin API are signed
    # with it (see auth_headers).
    keyring = authn.resolve_keyring(data_dir.parent, "", create=True)
    authn.install(keyring)
    assert keyring.path is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVLEDGER_")}
    env.update(
        {
            "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap,
            "GOVLEDGER_DATA_DIR": str(data_dir),
            "GOVLEDGER_ROOT_SECRET_FILE": str(keyring.path),
            "GOVLEDGER_TOPIC_PARTITIONS": str(PARTITIONS),
            "GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            # Info: a failure on CI prints the worker's log tail (rebalances, recoveries).
            "GOVLEDGER_LOG_LEVEL": "info",
            **extra,
        }
    )
    return env


class Processes:
    """Every child this test starts; all stopped (terminate, then kill) at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "govledger", name],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.started):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def processes(tmp: Path) -> Iterator[Processes]:
    children = Processes(tmp)
    try:
        yield children
    finally:
        children.stop_all()


@contextlib.contextmanager
def printing_log_tail_on_failure(log: Path, lines: int = 150) -> Iterator[None]:
    """On a failure, print the end of `log`: CI keeps the output, not the temp dir."""
    try:
        yield
    except BaseException:
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            print(f"[kill-test] the last {len(tail)} lines of {log}:", flush=True)
            print("\n".join(tail), flush=True)
        raise


# --- reading what the stack publishes -------------------------------------------------------


class Follower:
    """Follows wallet-state, alerts and the DLQ as a gateway or an auditor would."""

    def __init__(self, bootstrap: str) -> None:
        self.latest: dict[str, WalletBalance] = {}
        # wallet -> entry_count -> balances published with that count (must all agree)
        self.by_count: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.balances_read = 0
        self.alerts: Counter[tuple[str, int, int]] = Counter()
        self.alert_ids: set[str] = set()
        self.dead_letters: list[Any] = []
        self._tailer = TopicTailer(bootstrap, [WALLET_STATE.name, ALERTS.name, DLQ.name], self.on)

    def on(self, message: Any) -> None:
        if message.topic == DLQ.name:
            self.dead_letters.append(codec.decode(message.value))
            return
        record = codec.decode(message.value)
        if isinstance(record, WalletBalance):
            self.balances_read += 1
            self.by_count[record.wallet_id][record.entry_count].add(record.balance_nanousd)
            known = self.latest.get(record.wallet_id)
            if known is None or record.entry_count >= known.entry_count:
                self.latest[record.wallet_id] = record
        elif isinstance(record, QuotaThresholdCrossed):
            key = (record.wallet_id, record.period_start_at, record.threshold_percent)
            self.alerts[key] += 1
            self.alert_ids.add(record.event_id)

    def applied(self, wallet: str) -> int:
        known = self.latest.get(wallet)
        return known.entry_count if known is not None else 0

    async def start(self) -> None:
        await self._tailer.start()

    async def stop(self) -> None:
        await self._tailer.stop()


async def wait_until(
    check: Callable[[], Awaitable[Any]], what: str, timeout_s: float, every_s: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s; last: {last!r}")


class Sql:
    def __init__(self, url: str, token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    async def __call__(self, query: str) -> list[list[str]]:
        response = await self._client.post("/", content=query.encode())
        assert response.status_code == 200, response.text
        return [line.split("\t") for line in response.text.splitlines()]

    async def close(self) -> None:
        await self._client.aclose()


async def group_lag(bootstrap: str, group: str, topics: set[str]) -> dict[str, int]:
    """Records of `topics` the consumer group has not committed, per partition with any
    (read with a consumer of the group that never joins it: the admin client's OffsetFetch
    does not decode against Tansu)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in sorted(topics)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        assert {tp.topic for tp in partitions} == topics, f"topics not found: {topics}"
        ends = await consumer.end_offsets(partitions)
        lag = {}
        for tp, end in ends.items():
            committed = await consumer.committed(tp) or 0
            if committed < end:
                lag[f"{tp.topic}[{tp.partition}]"] = end - committed
        return lag
    finally:
        await consumer.stop()


async def quotas_table(bootstrap: str, wallets: set[str]) -> dict[str, str]:
    """The last value of each wallet's entry in the quotas table's changelog (diagnosis)."""
    found: dict[str, str] = {}

    def keep(message: Any) -> None:
        key = message.key.decode() if message.key else ""
        if key in wallets:
            found[key] = message.value.decode() if message.value else "<deleted>"

    tailer = TopicTailer(bootstrap, [f"{APP_ID}-quotas-changelog"], keep)
    try:
        await tailer.start()
        await asyncio.wait_for(tailer.caught_up.wait(), 30)
    except (RuntimeError, TimeoutError) as exc:
        found["<error>"] = repr(exc)
    finally:
        await tailer.stop()
    return found


@functools.cache
def _credential(producer_id: str) -> authn.Credential:
    keyring = authn.installed()
    assert keyring is not None, "child_env installs the stack's keyring"
    return keyring.credential(authn.role_of(producer_id), producer_id)


def auth_headers(value: bytes) -> list[tuple[str, bytes]]:
    """The headers its producer (a gateway or the admin API) would send a record with."""
    return _credential(authn.producer_id_of(value)).headers(value)
