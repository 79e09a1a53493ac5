"""`POST /v1/audit/verify` (the query API's chain verification jobs) on the real engine:
chDB in-process, chains stored by the real sink writer and signed with the org keyring,
two tenants sharing a gateway's chain and a third alone. A tenant admin's job covers the
chains carrying its records only, and a gap in a shared chain is named by producer and
seq, never by another tenant's row; naming another tenant is a 403, its job a 404; one
job at a time per scope; bad input is refused before anything runs. The job queue's
limits (409, 429, the time bound, the history) run over a verification that waits on the
test, not on a store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from replay.store_verify import shown, store_verification
from replay.verify import Finding
from schemas import authn
from schemas.codec import HashChain
from schemas.ids import uuid7
from schemas.records import LineageRecord
from schemas.topics import LINEAGE
from sinks.access import AccessDeniedError, Reader
from sinks.query_app import QueryApi
from sinks.store import Store
from sinks.verify_jobs import MAX_QUEUED, VerifyJob, VerifyJobs, VerifyStoppedError
from tests.integration.links_support import KEYRING, batch, message, sink_writer
from tests.unit import builders

A, B, C = "tenant-aaa", "tenant-bbb", "tenant-ccc"
READERS = {
    "org": Reader("key_org", None),
    "ta": Reader("key_ta", A),
    "tc": Reader("key_tc", C),
}
SHARED, ALONE = "gateway-shared", "gateway-alone"


def authenticate(token: str) -> Reader:
    if token in READERS:
        return READERS[token]
    if token == "dev":
        raise AccessDeniedError(403, "forbidden", "developer keys may not read")
    raise AccessDeniedError(401, "invalid_api_key", "unknown key")


async def store_chain(store: Store, producer_id: str, tenants: list[str]) -> list[LineageRecord]:
    chain = HashChain(producer_id)
    records = [chain.seal(builders.call(event_id=uuid7(), tenant_id=t)) for t in tenants]
    messages = [message(r, n, topic=LINEAGE.name) for n, r in enumerate(records)]
    await sink_writer(store).write(batch(*messages, topic=LINEAGE.name))
    return records


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    before = authn.installed()
    authn.install(KEYRING)  # the sink writer verifies what it stores
    store = Store(f"chdb://{tmp_path_factory.mktemp('verify-route') / 'store'}")
    store.migrate()

    async def fill() -> None:
        shared = await store_chain(store, SHARED, [A, B, A, B, A])
        await store_chain(store, ALONE, [C, C, C])
        # B's record at seq 4 of the shared chain is deleted: a gap A's chain shows.
        store.command(f"DELETE FROM lineage WHERE event_id = '{shared[3].event_id}'")

    asyncio.run(fill())
    yield store
    store.close()
    if before is not None:
        authn.install(before)


@pytest.fixture
async def http(store: Store) -> AsyncIterator[TestClient[Any, Any]]:
    # No sink writes to this store, so no gap fills in: a short settle keeps the step.
    jobs = VerifyJobs(store_verification(store, lambda: KEYRING, settle_s=0.01), timeout_s=60)
    api = QueryApi(store, authenticate, dict, max_rows=10_000, audit_verify=jobs)
    async with TestClient(TestServer(api.application())) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def finished(http: TestClient[Any, Any], token: str, job_id: str) -> dict[str, Any]:
    for _ in range(300):
        response = await http.get(f"/v1/audit/verify/{job_id}", headers=auth(token))
        job: dict[str, Any] = await response.json()
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"verification {job_id} did not finish")


async def verified(http: TestClient[Any, Any], token: str, query: str = "") -> dict[str, Any]:
    response = await http.post(f"/v1/audit/verify{query}", headers=auth(token))
    assert response.status == 202, await response.text()
    return await finished(http, token, (await response.json())["id"])


async def test_a_tenant_admins_job_covers_its_chains_and_names_others_gaps_only(
    http: TestClient[Any, Any],
) -> None:
    job = await verified(http, "ta")
    assert job["status"] == "succeeded", job
    assert job["tenant"] == A
    result = job["result"]
    # The shared chain only (checked whole: B's records too), not C's.
    assert (result["producers"], result["records"]) == (1, 4)
    assert result["columns_rows"] == 4
    assert not result["clean"]
    assert result["findings_by_kind"] == {"deleted": 1}
    [gap] = result["findings"]
    assert (gap["kind"], gap["producer_id"], gap["seq"]) == ("deleted", SHARED, 4)
    # Named by producer and seq: no table, event or other tenant's id.
    assert gap["table"] == gap["event_id"] == ""
    assert B not in str(job) and C not in str(job) and ALONE not in str(job)
    assert job["records_checked"] == job["records_total"] == 4


async def test_a_clean_tenant_and_the_org_see_their_own_scope(http: TestClient[Any, Any]) -> None:
    alone = await verified(http, "tc")
    assert alone["result"]["clean"] and alone["result"]["findings"] == []
    assert (alone["result"]["producers"], alone["result"]["records"]) == (1, 3)
    org = await verified(http, "org")
    assert org["tenant"] is None
    assert (org["result"]["producers"], org["result"]["records"]) == (2, 7)
    assert [(f["kind"], f["producer_id"], f["seq"]) for f in org["result"]["findings"]] == [
        ("deleted", SHARED, 4)
    ]
    one = await verified(http, "org", f"?tenant={C}")
    assert one["tenant"] == C and one["result"]["records"] == 3
    # Latest per scope (the org's run of C is C's too); the tenant admin lists C's only.
    latest = await http.get("/v1/audit/verify/latest", headers=auth("tc"))
    assert (await latest.json())["id"] == one["id"]
    listed = await (await http.get("/v1/audit/verify", headers=auth("tc"))).json()
    assert {j["tenant"] for j in listed["verifications"]} == {C}
    every = await (await http.get("/v1/audit/verify", headers=auth("org"))).json()
    assert {j["id"] for j in every["verifications"]} >= {alone["id"], org["id"], one["id"]}


async def test_a_tenant_admin_cannot_verify_or_read_another_tenant(
    http: TestClient[Any, Any],
) -> None:
    org = await verified(http, "org", f"?tenant={C}")
    for method, path in (
        ("POST", f"/v1/audit/verify?tenant={C}"),
        ("GET", f"/v1/audit/verify?tenant={C}"),
        ("GET", f"/v1/audit/verify/latest?tenant={C}"),
    ):
        response = await http.request(method, path, headers=auth("ta"))
        assert response.status == 403, path
        assert (await response.json())["error"]["code"] == "forbidden"
    response = await http.get(f"/v1/audit/verify/{org['id']}", headers=auth("ta"))
    assert response.status == 404
    assert C not in await response.text()


@pytest.mark.parametrize(
    ("token", "path", "body", "status"),
    [
        ("", "/v1/audit/verify", b"", 401),
        ("dev", "/v1/audit/verify", b"", 403),
        ("org", "/v1/audit/verify?tenant=" + "x" * 300, b"", 400),
        ("org", "/v1/audit/verify?tenant=a%00b", b"", 400),
        ("org", "/v1/audit/verify", b'{"tenant": "tenant-ccc"}', 400),
    ],
)
async def test_bad_requests_start_nothing(
    http: TestClient[Any, Any], token: str, path: str, body: bytes, status: int
) -> None:
    response = await http.post(path, data=body, headers=auth(token) if token else {})
    assert response.status == status, await response.text()
    listed = await (await http.get("/v1/audit/verify", headers=auth("org"))).json()
    assert listed["verifications"] == []
    for bad in ("not-an-id", "../exports", str(uuid7())):
        assert (await http.get(f"/v1/audit/verify/{bad}", headers=auth("org"))).status == 404


def test_a_finding_on_no_record_of_the_tenants_keeps_its_place_only() -> None:
    refused = Finding("forged", SHARED, 0, None, f"forged: bad MAC (sent by {B})", "", "x")
    undecodable = Finding("column_mismatch", SHARED, 3, None, f"raw of {B}", "", "lineage")
    gap = Finding("deleted", SHARED, 4, None, "seq 4 missing (seq 5 links to ab…)")
    own = Finding("modified", SHARED, 5, None, "bytes changed", A, "lineage", "ev-1")
    for finding in (refused, undecodable):
        scrubbed = shown(finding, A)
        assert B not in str(scrubbed) and scrubbed["table"] == ""
        assert (scrubbed["kind"], scrubbed["seq"]) == (finding.kind, finding.seq)
        assert shown(finding, None)["detail"] == finding.detail  # the org sees it whole
    assert shown(gap, A)["detail"] == gap.detail  # our own words: seqs and a hash
    assert shown(own, A)["event_id"] == "ev-1" and shown(own, A)["table"] == "lineage"


# --- the queue's limits, over a verification the test holds -----------------------------


class Held:
    """A verification that waits until released (or its job is told to stop)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []

    def __call__(self, job: VerifyJob, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        self.started.append(job.id)
        while not self.release.wait(0.01):
            if job.stop.is_set():
                raise VerifyStoppedError("stopped")
        return {"clean": True}


async def settled(jobs: VerifyJobs, job_id: str) -> VerifyJob:
    for _ in range(300):
        job = jobs.get(job_id, READERS["org"])
        assert job is not None
        if job.status not in ("queued", "running"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError("not finished")


async def test_one_job_per_scope_a_bounded_queue_and_history() -> None:
    held = Held()
    jobs = VerifyJobs(held, timeout_s=60, runs_kept=3)
    api = QueryApi(None, authenticate, dict, max_rows=1, audit_verify=jobs)  # type: ignore[arg-type]
    async with TestClient(TestServer(api.application())) as http:
        first = await (await http.post("/v1/audit/verify", headers=auth("ta"))).json()
        again = await http.post("/v1/audit/verify", headers=auth("ta"))
        assert again.status == 409
        body = await again.json()
        assert body["error"]["code"] == "verify_running" and body["job"]["id"] == first["id"]
        # Other scopes queue behind it, up to the queue's bound.
        other = await http.post(f"/v1/audit/verify?tenant={C}", headers=auth("org"))
        assert other.status == 202
        statuses = [
            (await http.post(f"/v1/audit/verify?tenant=t{n}", headers=auth("org"))).status
            for n in range(MAX_QUEUED)
        ]
        assert statuses.count(429) == 1 and statuses[-1] == 429
        held.release.set()
        for _ in range(300):
            listed = await (await http.get("/v1/audit/verify", headers=auth("org"))).json()
            if all(j["status"] == "succeeded" for j in listed["verifications"]):
                break
            await asyncio.sleep(0.01)
        # Every queued job ran, one at a time; the history keeps the newest `runs_kept`.
        assert len(held.started) == 1 + 1 + MAX_QUEUED - 1
        assert [j["tenant"] for j in listed["verifications"]] == ["t6", "t5", "t4"]


async def test_a_job_past_its_time_fails_and_frees_its_scope() -> None:
    held = Held()
    jobs = VerifyJobs(held, timeout_s=0.2)
    await jobs.start()
    try:
        job = await settled(jobs, jobs.submit(A, "key_ta").id)
        assert job.status == "failed" and "0.2 s" in (job.error or "")
        held.release.set()
        assert (await settled(jobs, jobs.submit(A, "key_ta").id)).status == "succeeded"
    finally:
        await jobs.stop()
