"""The sink never exits on data, against the real broker and the real chDB store with a
fault injected: a record the store refuses is dead-lettered alone with the store's
reason; an unwell store (refused connection, full disk) is waited out with no offset
committed meanwhile, then every record is stored once; and a real full disk under chDB
(a tmpfs the test mounts, when it may) stops inserts, not the sink, which resumes by
itself when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from govledger.services import _stats
from schemas import authn, codec
from schemas.ids import new_producer_id, now_ms
from schemas.settings import SinkSettings, load
from schemas.topics import LINEAGE
from sinks.access import Reader
from sinks.query_app import QueryApi
from sinks.store import Store
from sinks.store_faults import RECORD_ERRORS
from sinks.writer import SinkWriter
from tests.integration.sink_support import WritingSink, embedded_broker, sink_writers
from tests.integration.stack import running_stack, stack_environ, wait_for
from tests.integration.test_sink import KEYRING, committed, counts, produce
from tests.unit import builders

pytestmark = pytest.mark.integration

# The tmpfs under chDB: room for the migrated store and these tests' rows, small enough
# that the test fills what is left in a moment.
DISK_MB = 16


@pytest.fixture(scope="module", autouse=True)
def keyring() -> None:
    authn.install(KEYRING)


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with embedded_broker(tmp_path_factory.mktemp("tansu")) as address:
        yield address


@dataclass(frozen=True)
class Disk:
    """Where the store lives; `mounted` when it is a tmpfs of its own (a disk to fill)."""

    path: Path
    mounted: bool


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Disk]:
    path = tmp_path_factory.mktemp("sink-disk")
    with tmpfs(path, DISK_MB) as mounted:
        yield Disk(path, mounted)


@pytest.fixture(scope="module")
def store(disk: Disk) -> Iterator[Store]:
    store = Store(f"chdb://{disk.path / 'store'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
async def writer_factory(bootstrap: str, store: Store) -> AsyncIterator[WritingSink]:
    settings = load(
        SinkSettings,
        environ={},
        kafka_bootstrap=bootstrap,
        sink_flush_ms=100,
        sink_batch_rows=50,  # a few batches per test: the consumer pauses while one waits
        # Short: Tansu numbers a group's first generation 0, so aiokafka never sends that
        # member's LeaveGroup, and the next test's writer waits for its session to expire.
        kafka_session_timeout_ms=2000,
        sink_store_retry_base_ms=20,
        sink_store_retry_max_ms=200,
    )
    async with sink_writers(settings, store) as make:
        yield make


@contextlib.asynccontextmanager
async def running(writer: SinkWriter) -> AsyncIterator[asyncio.Task[None]]:
    """The writer's loop as the sink runs it (`sink_main`), stopped at the end."""
    task = asyncio.create_task(writer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        result = check()
        if await result if asyncio.iscoroutine(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def calls(tenant: str, count: int, **first: Any) -> list[tuple[str, bytes]]:
    """`count` lineage records of one producer for one tenant (one partition, in order);
    the fields in `first` go to the first of them."""
    chain = codec.HashChain(new_producer_id("gateway"))
    values = []
    for i in range(count):
        fields: dict[str, Any] = {"tenant_id": tenant, "occurred_at": now_ms(), "cost_nanousd": i}
        record = builders.call(**(fields | first if i == 0 else fields))
        values.append((tenant, codec.encode(chain.seal(record))))
    return values


def committed_total(offsets: dict[int, int | None]) -> int:
    return sum(offset or 0 for offset in offsets.values())


async def committed_past(bootstrap: str, offsets: dict[int, int | None], records: int) -> bool:
    """Whether the sink committed `records` more lineage offsets than `offsets`."""
    return committed_total(await committed(bootstrap)) == committed_total(offsets) + records


async def ingestion_figures(store: Store, writer: SinkWriter) -> dict[str, Any]:
    """GET /v1/ingestion of the sink's query API, with this writer's figures behind it."""
    api = QueryApi(store, lambda _: Reader("test", None), lambda: _stats(writer), 10)
    async with TestClient(TestServer(api.application())) as client:
        response = await client.get("/v1/ingestion", headers={"Authorization": "Bearer t"})
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def test_the_record_error_allow_list_names_the_engines_codes(store: Store) -> None:
    # The allow-list is the one place a store error dead-letters a record: its codes must
    # mean, in this engine, what the list says they mean.
    codes = sorted(RECORD_ERRORS)
    rows = store.query_rows("SELECT arrayMap(c -> errorCodeToName(c), %(codes)s)", {"codes": codes})
    assert dict(zip(codes, rows[0][0], strict=True)) == RECORD_ERRORS


async def test_a_record_the_store_refuses_is_dead_lettered_and_its_batch_mates_stored(
    bootstrap: str, store: Store, writer_factory: WritingSink
) -> None:
    # A registered gateway's record with an id the UUID column cannot parse: Python reads
    # it, the store refuses it. It sits in the middle of its batch.
    good = calls("refused", 41)
    bad_tenant, bad = calls("refused", 1, event_id="not-a-uuid")[0]
    values = [*good[:20], (bad_tenant, bad), *good[20:]]
    before = await committed(bootstrap)
    await produce(bootstrap, values)
    writer = await writer_factory()

    async with running(writer) as task:
        await eventually(lambda: counts(store, "refused")[0] >= 41, "the good records stored")
        await eventually(
            lambda: store.query_rows(
                "SELECT count() FROM dead_letters WHERE hex(payload) = %(hex)s",
                {"hex": bad.hex().upper()},
            )[0][0],
            "the refused record in the dead-letter table",
        )
        # Past the refused record too: it is in the dead-letter topic, acknowledged.
        await eventually(lambda: committed_past(bootstrap, before, 42), "offsets committed")
        assert not task.done()

    assert counts(store, "refused") == (41, 41, sum(range(41)))
    rows = store.query_rows(
        "SELECT origin_topic, consumer, error FROM dead_letters WHERE hex(payload) = %(hex)s",
        {"hex": bad.hex().upper()},
    )
    assert len(rows) == 1
    topic, consumer, error = rows[0]
    assert (topic, consumer) == (LINEAGE.name, "sink")
    assert error.startswith("store refused the record: Code: ")
    assert "not-a-uuid" in error
    assert writer.stats.dead_lettered == 1
    assert writer.stats.store.retries == 0  # a refused record is not an outage


async def test_rows_a_refused_insert_wrote_before_its_view_failed_are_not_written_twice(
    bootstrap: str, store: Store, writer_factory: WritingSink
) -> None:
    # ClickHouse writes the table's block before it pushes it to the table's views: when
    # a view refuses a value, the insert fails with a data code, yet its rows are stored.
    store.command(
        "CREATE TABLE refusing_view_rows (event_id UUID, team UUID) "
        "ENGINE = MergeTree ORDER BY event_id"
    )
    store.command(
        "CREATE MATERIALIZED VIEW refusing_view TO refusing_view_rows AS SELECT event_id, "
        "toUUID(if(team_id = 'boom', 'x', '00000000-0000-0000-0000-000000000000')) AS team "
        "FROM lineage WHERE tenant_id = 'view-refused'"
    )
    try:
        before = await committed(bootstrap)
        await produce(bootstrap, calls("view-refused", 10, team_id="boom"))
        writer = await writer_factory()
        async with running(writer):
            await eventually(lambda: committed_past(bootstrap, before, 10), "offsets committed")
    finally:
        store.command("DROP VIEW refusing_view")
        store.command("DROP TABLE refusing_view_rows")
    assert counts(store, "view-refused") == (10, 10, sum(range(10)))
    assert writer.stats.dead_lettered == 0  # each row is stored: nothing to dead-letter


@pytest.mark.parametrize(
    ("fault", "disk_full"),
    [
        (OperationalError("Error HTTPConnectionPool: [Errno 111] Connection refused"), False),
        (
            DatabaseError(
                "Code: 243. DB::Exception: Cannot reserve 1.00 MiB on disk `default`, "
                f"not enough space. [errno {errno.ENOSPC}] (NOT_ENOUGH_SPACE)",
                code=243,
            ),
            True,
        ),
    ],
    ids=["connection-refused", "disk-full"],
)
async def test_an_unwell_store_is_waited_out_and_then_every_record_stored_once(
    bootstrap: str,
    store: Store,
    writer_factory: WritingSink,
    monkeypatch: pytest.MonkeyPatch,
    fault: Exception,
    disk_full: bool,
) -> None:
    tenant = f"outage-{disk_full}"
    down = True
    real_run = store.run

    async def unwell_run(function: Any, *args: Any) -> Any:
        # Every call of the writer's fails while the store is down: inserts and look-ups.
        if down:
            raise fault
        return await real_run(function, *args)

    monkeypatch.setattr(store, "run", unwell_run)
    before = await committed(bootstrap)
    await produce(bootstrap, calls(tenant, 120))
    writer = await writer_factory()

    async with running(writer) as task:
        consumer = writer._consumer
        await eventually(
            lambda: consumer.assignment() and consumer.paused() == consumer.assignment(),
            "the consumer paused behind a full batch",
        )
        await eventually(lambda: writer.stats.store.retries >= 5, "five tries of the store")
        # Up, saying why, holding its offsets, nothing stored.
        assert not task.done()
        figures = await ingestion_figures(store, writer)
        assert figures["store"]["state"] == "retrying"
        assert figures["store"]["error"] == str(fault)
        assert figures["store"]["disk_full"] is disk_full
        assert await committed(bootstrap) == before
        assert counts(store, tenant)[0] == 0

        down = False
        await eventually(lambda: counts(store, tenant)[0] >= 120, "every record stored")
        await eventually(lambda: committed_past(bootstrap, before, 120), "offsets committed")
        assert consumer.paused() == set()
        assert writer.stats.store.state()["state"] == "ok"

    assert counts(store, tenant) == (120, 120, sum(range(120)))
    assert writer.stats.dead_lettered == 0  # no good record dead-lettered for an outage


def fill(path: Path) -> None:
    """Write zeros to `path` until its file system has no byte left."""
    with path.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            with pytest.raises(OSError, match="No space left on device"):  # noqa: PT012
                while True:
                    out.write(bytes(size))


async def test_a_full_disk_stops_inserts_not_the_sink_and_it_resumes_when_space_returns(
    disk: Disk, bootstrap: str, store: Store, writer_factory: WritingSink
) -> None:
    if not disk.mounted:
        pytest.skip("mounting a tmpfs needs root; the injected disk-full case runs instead")
    writer = await writer_factory()
    before = await committed(bootstrap)
    filler = disk.path / "filler"
    fill(filler)
    try:
        await produce(bootstrap, calls("disk-full", 60))
        async with running(writer) as task:
            await eventually(lambda: writer.stats.store.disk_full, "the sink sees a full disk")
            assert not task.done()
            assert writer.stats.store.state()["state"] == "retrying"
            assert await committed(bootstrap) == before
            assert counts(store, "disk-full")[0] == 0

            filler.unlink()  # space returns; nobody touches the sink
            await eventually(lambda: counts(store, "disk-full")[0] >= 60, "every record stored")
            await eventually(lambda: committed_past(bootstrap, before, 60), "offsets committed")
            assert writer.stats.store.state()["state"] == "ok"
    finally:
        filler.unlink(missing_ok=True)
    assert counts(store, "disk-full") == (60, 60, sum(range(60)))
    assert writer.stats.dead_lettered == 0


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of its own at `path` when this process may mount one (root), else False."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = (
            os.geteuid() == 0
            and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    except FileNotFoundError:  # no mount command on this machine
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            # Lazy: detached at once, freed when chDB's last file on it is closed.
            subprocess.run(["umount", "-l", str(path)], check=True)


def test_calls_answered_while_the_stores_disk_is_full_are_stored_when_space_returns(
    tmp_path: Path,
) -> None:
    # The whole stack as `govledger up` runs it, its chDB on a disk of its own: the
    # calls answered while that disk is full reach the store once it has room again, and
    # the sink process neither exits nor restarts meanwhile.
    disk = tmp_path / "store-disk"
    with tmpfs(disk, DISK_MB) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root; the in-process disk-full cases run")
        env = stack_environ(tmp_path / "data", GOVLEDGER_CLICKHOUSE_DSN=f"chdb://{disk}/chdb")
        with running_stack(env) as stack:
            key = stack.create_key("disk")
            stack.fund("disk", "5")
            sink = next(c.process for c in stack.stack.children if c.name == "sink")
            filler = disk / "filler"
            fill(filler)
            try:
                sdk = openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0)
                for _ in range(5):
                    reply = sdk.chat.completions.create(
                        model="sim-small", messages=[{"role": "user", "content": "Hello."}]
                    )
                    assert reply.choices[0].message.content

                def store_state() -> dict[str, Any]:
                    response = httpx.get(
                        f"{stack.settings.query_url}/v1/ingestion",
                        headers={"Authorization": f"Bearer {stack.token}"},
                        timeout=10,
                    )
                    assert response.status_code == 200, response.text
                    return dict(response.json()["store"])

                wait_for(lambda: store_state()["disk_full"])
                assert store_state()["state"] == "retrying"
                assert sink.poll() is None
            finally:
                filler.unlink(missing_ok=True)
            rows = "SELECT count(), uniqExact(event_id) FROM lineage WHERE team_id = 'disk'"
            wait_for(lambda: stack.sql(rows) == [["5", "5"]], timeout_s=30)
            assert store_state()["state"] == "ok"
            assert sink.poll() is None
            assert all(c.process.poll() is None for c in stack.stack.children)
