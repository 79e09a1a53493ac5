"""A record the sink drops as a duplicate by event_id keeps its chain whole (issue 13):
a processor killed and restarted derives alerts it had already published again, under
the same ids, in its new chain. The store holds each alert once, the copies are kept as
chain links, and `audit verify` finds nothing — whether the copy is dropped by the
writer's window of recent ids or, after a sink restart, by looking the id up in the
store; a redelivered batch adds no second link. A real SinkWriter and chDB in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from replay.forged import forged_findings
from replay.stored import stored_rows
from replay.verify import Finding, verify_rows, verify_store
from schemas import authn
from schemas.codec import HashChain
from schemas.ids import now_ms
from schemas.topics import RESENT_HEADER
from sinks.retention import delete_expired
from sinks.store import Store
from sinks.tables import ALL_TABLES
from tests.integration.links_support import (
    KEYRING,
    batch,
    message,
    migrated_store,
    query,
    restarted_chains,
    sink_writer,
)
from tests.unit.builders import quota_crossed

pytestmark = pytest.mark.integration

IDS = [f"0b8e6d3c-1111-4c33-8a44-00000000000{n}" for n in range(1, 5)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    yield from migrated_store(tmp_path_factory.mktemp("chdb"))


def audit(store: Store) -> tuple[list[str], int, str]:
    """Findings (hash chains and forgeries) as lines, links counted, and the summary."""
    report = verify_store(query(store))
    findings = report.findings + forged_findings(query(store), authn.Verifier(KEYRING))
    return [f.line() for f in findings], report.links, report.summary()


def stored(store: Store) -> tuple[int, int, int]:
    """Alert rows, distinct alert ids, link rows."""
    (rows, ids), links = (
        store.query_rows("SELECT count(), uniqExact(event_id) FROM alerts")[0],
        store.query_rows("SELECT count() FROM chain_links")[0][0],
    )
    return int(rows), int(ids), int(links)


async def test_alerts_derived_again_after_a_restart_are_stored_once_and_verify(
    store: Store,
) -> None:
    first, again = restarted_chains(IDS[:2], repeated=1, run="window")
    writer = sink_writer(store)
    offsets = iter(range(100))
    # The old chain's two alerts, then the new chain's copy of the first and a new alert,
    # on one partition: the copy is dropped by the window of recent ids.
    await writer.write(batch(*(message(r, next(offsets)) for r in first)))
    await writer.write(batch(*(message(r, next(offsets)) for r in again)))
    assert stored(store) == (3, 3, 1)
    assert writer.stats.links_kept == 1
    findings, links, summary = audit(store)
    assert findings == [] and links == 1, findings
    assert "1 duplicates kept as chain links, 0 findings" in summary

    # The same batch redelivered to a restarted sink (empty window; the partition is
    # re-assigned, so its first records are looked up in the store): nothing new.
    restarted = sink_writer(store)
    restarted.reassigned([next(iter(batch()))])
    await restarted.write(batch(*(message(r, offset) for offset, r in enumerate(again, 2))))
    assert stored(store) == (3, 3, 1)
    assert audit(store)[:2] == ([], 1)


async def test_a_copy_found_in_the_store_past_every_window_is_kept_as_a_link(
    store: Store,
) -> None:
    ids = [i.replace("1111", "2222") for i in IDS]
    first, again = restarted_chains(ids, repeated=3, run="resent")
    before = stored(store)
    await sink_writer(store).write(batch(*(message(r, n) for n, r in enumerate(first, 200))))
    # Sent again long after (an outbox resend): the window has forgotten the ids, the
    # store is asked.
    resent = [message(r, n) for n, r in enumerate(again, 300)]
    for m in resent:
        m.set_headers([*(m.headers() or []), (RESENT_HEADER, b"1")])
    writer = sink_writer(store)
    await writer.write(batch(*resent))
    rows, ids_stored, links = stored(store)
    assert (rows - before[0], ids_stored - before[1], links - before[2]) == (5, 5, 3)
    assert writer.stats.links_kept == 3
    findings, links_counted, _ = audit(store)
    assert findings == [] and links_counted == links, findings


def test_without_the_links_the_restarted_chains_show_deletions(store: Store) -> None:
    # What the links prevent (the check is not vacuous): the same store walked without
    # them reports each restarted chain's re-derived seqs as deleted.
    report = verify_rows(stored_rows(query(store), tables=ALL_TABLES))
    assert [line.split(" at=")[0] for line in map(Finding.line, report.findings)] == [
        "deleted   producer=streams-quotas-resent-b seq=1",
        "deleted   producer=streams-quotas-window-b seq=1",
    ]


async def test_retention_cuts_a_link_with_the_record_it_copies(store: Store) -> None:
    # One processor chain across two tenants, killed and restarted: tenant "cut" has a
    # one-day retention, tenant "kept" none. Its alert goes, and so does the link of its
    # copy; the chains stay verifiable and what was cut is accounted to retention.
    ids = [i.replace("1111", "5555") for i in IDS[:3]]
    before, after = HashChain("streams-quotas-retained-a"), HashChain("streams-quotas-retained-b")
    tenants = ["cut", "kept"]
    first = [
        before.seal(quota_crossed(event_id=i, tenant_id=t))
        for i, t in zip(ids, tenants, strict=False)
    ]
    again = [
        after.seal(quota_crossed(event_id=i, tenant_id=t))
        for i, t in zip(ids, tenants, strict=False)
    ]
    again.append(after.seal(quota_crossed(event_id=ids[2], tenant_id="kept")))
    writer = sink_writer(store)
    await writer.write(batch(*(message(r, n) for n, r in enumerate([*first, *again], 400))))
    assert writer.stats.links_kept == 2
    deleted = delete_expired(store, {"cut": 1}, now_ms())
    assert (deleted["alerts"], deleted["chain_links"]) == (1, 1)
    left = store.query_rows(
        "SELECT producer_id, seq FROM chain_links WHERE producer_id = 'streams-quotas-retained-b'"
    )
    assert left == [("streams-quotas-retained-b", 2)]
    report = verify_store(query(store))
    assert report.findings == [] and report.expired == 2, report.findings
