"""`audit verify` on a running stack, where the sink stores each topic as it reads it: a
processor's checkpoint (topic checkpoints) stored a moment before the alert it vouches
for (topic alerts) is no tampering once the alert is stored, while a record that never
comes is still reported. A real SinkWriter and chDB in-process; the settle wait is where
the late batch is written (replay/settle.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from replay.settle import settle_gaps
from replay.verify import Report, verify_store
from schemas.codec import HashChain
from schemas.publisher import checkpoint_of
from schemas.topics import CHECKPOINTS
from sinks.store import Store
from tests.integration.links_support import (
    alert,
    batch,
    message,
    migrated_store,
    query,
    sink_writer,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    yield from migrated_store(tmp_path_factory.mktemp("chdb"))


async def verify_while_storing(store: Store, late: list[object]) -> tuple[Report, list[float]]:
    """verify_store with the settle step; while it waits the sink stores `late`."""
    loop = asyncio.get_running_loop()
    writer = sink_writer(store)
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if late:
            stored = writer.write(batch(*late))
            asyncio.run_coroutine_threadsafe(stored, loop).result(timeout=30)

    def verify() -> Report:
        return verify_store(
            query(store), settle=lambda first, walk: settle_gaps(first, walk, wait, 0.01)
        )

    return await asyncio.to_thread(verify), waits


async def test_a_checkpoint_stored_before_its_alert_is_no_finding_once_the_alert_is(
    store: Store,
) -> None:
    chain = HashChain("streams-quotas-inflight-a")
    sealed = chain.seal(alert("0b8e6d3c-7777-4c33-8a44-000000000001"))
    checkpoint = chain.seal(checkpoint_of(chain, "interval"))
    writer = sink_writer(store)
    await writer.write(
        batch(message(checkpoint, 0, topic=CHECKPOINTS.name), topic=CHECKPOINTS.name)
    )

    report, waits = await verify_while_storing(store, [message(sealed, 0)])
    assert report.findings == [], [f.line() for f in report.findings]
    assert report.in_flight == 1 and waits == [0.01]
    assert (report.records, report.checkpoints) == (1, 1)  # as the first walk saw them

    # Verified again with the alert stored: no gap, no wait.
    report, waits = await verify_while_storing(store, [])
    assert (report.findings, report.in_flight, waits) == ([], 0, [])


async def test_an_alert_that_never_comes_is_still_truncated(store: Store) -> None:
    chain = HashChain("streams-quotas-inflight-b")
    chain.seal(alert("0b8e6d3c-7777-4c33-8a44-000000000002"))  # sealed, never stored
    checkpoint = chain.seal(checkpoint_of(chain, "interval"))
    writer = sink_writer(store)
    await writer.write(
        batch(message(checkpoint, 1, topic=CHECKPOINTS.name), topic=CHECKPOINTS.name)
    )

    report, waits = await verify_while_storing(store, [])
    assert [(f.kind, f.producer_id, f.seq) for f in report.findings] == [
        ("truncated", "streams-quotas-inflight-b", 1)
    ]
    assert report.in_flight == 0 and waits == [0.01]
