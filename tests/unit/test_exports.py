"""Exports without a store: the page writers (CSV, JSON Lines, Parquet), the SHA-256 and
manifest they produce, memory held to one page, and the job runner and routes over a fake
store that answers keyset pages from memory."""

from __future__ import annotations

import asyncio
import base64
import csv
import dataclasses
import gc
import hashlib
import io
import json
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pyarrow import ipc

from schemas.ids import now_ms, uuid7
from schemas.records import LineageRecord
from sinks.access import AccessDeniedError, Reader
from sinks.exports.job import ExportJob, ExportQueueFullError
from sinks.exports.jobs import ExportJobs
from sinks.exports.manifest import Tally, write_pages
from sinks.exports.queries import EXPORT_TYPES, MAX_PAGE_ROWS, page_sql
from sinks.query_app import QueryApi

T0 = 1_750_000_000_000
BIG_NANOUSD = 9_007_199_254_740_993  # above 2**53: a float would change it
ATTEMPT = pa.struct(
    [
        ("provider", pa.string()),
        ("model", pa.string()),
        ("status", pa.int32()),
        ("latency_ms", pa.float64()),
        ("error_class", pa.string()),
    ]
)
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("occurred_at", pa.timestamp("ms", tz="UTC")),
        ("tenant_id", pa.string()),
        ("producer_id", pa.string()),
        ("seq", pa.uint64()),
        ("record_hash", pa.string()),
        ("cost_nanousd", pa.int64()),
        ("error_code", pa.string()),
        ("stream", pa.bool_()),
        ("attempts", pa.list_(ATTEMPT)),
        ("raw_base64", pa.string()),
    ]
)


def _row(n: int, tenant: str = "acme", producer: str | None = None) -> dict[str, Any]:
    return {
        "event_id": str(uuid7(T0 + n)),
        "occurred_at": T0 + n * 1000,
        "tenant_id": tenant,
        "producer_id": producer or f"gw-{n % 3}",
        "seq": n,
        "record_hash": hashlib.sha256(str(n).encode()).hexdigest(),
        "cost_nanousd": BIG_NANOUSD + n,
        "error_code": None if n % 2 else "upstream_error",
        "stream": n % 2 == 0,
        "attempts": [
            {
                "provider": "sim",
                "model": "sim-small",
                "status": 200,
                "latency_ms": 1.5,
                "error_class": None,
            }
        ],
        "raw_base64": base64.b64encode(b"\x00\xff" + bytes([n % 256])).decode(),
    }


def _page(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _pages(count: int, size: int) -> list[pa.Table]:
    return [_page([_row(p * size + i) for i in range(size)]) for p in range(count)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- writers ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_format_holds_every_row_and_its_sha256_is_the_files(tmp_path: Path, fmt: str) -> None:
    pages = _pages(3, 5)
    path = tmp_path / f"out.{fmt}"
    summary, tally = write_pages(iter(pages), fmt, path, "occurred_at")
    assert summary.sha256 == _sha256(path)
    assert summary.bytes == path.stat().st_size
    assert tally.rows == 15
    expected = pa.concat_tables(pages).to_pylist()
    if fmt == "parquet":
        back = pq.read_table(path)
        assert back.num_rows == 15
        assert pq.ParquetFile(path).num_row_groups == 3  # one per page
        assert back.to_pylist() == expected
        assert back.schema.field("cost_nanousd").type == pa.int64()
    elif fmt == "jsonl":
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(lines) == 15
        assert lines[4]["cost_nanousd"] == BIG_NANOUSD + 4  # an integer, exact
        assert lines[4]["occurred_at"] == "2025-06-15T15:06:44.000Z"
        assert lines[4]["attempts"][0]["provider"] == "sim"
        assert lines[3]["error_code"] is None
        assert [line["event_id"] for line in lines] == [r["event_id"] for r in expected]
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 15
        assert list(rows[0]) == SCHEMA.names
        assert rows[4]["cost_nanousd"] == str(BIG_NANOUSD + 4)
        assert rows[4]["occurred_at"] == "2025-06-15T15:06:44.000Z"
        assert json.loads(rows[4]["attempts"])[0]["latency_ms"] == 1.5
        assert rows[4]["stream"] == "true"
        assert base64.b64decode(rows[4]["raw_base64"]) == b"\x00\xff\x04"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_empty_export_still_has_its_columns(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"empty.{fmt}"
    summary, tally = write_pages(iter([_page([])]), fmt, path, "occurred_at")
    assert tally.rows == 0 and tally.first_ms is None and tally.chain_heads() == []
    assert summary.sha256 == _sha256(path)
    if fmt == "parquet":
        assert pq.read_table(path).schema.names == SCHEMA.names
    else:
        assert path.read_text().splitlines() == [",".join(f'"{n}"' for n in SCHEMA.names)]


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def pages() -> Iterator[pa.Table]:
        yield _page([_row(1)])
        raise RuntimeError("store went away")

    path = tmp_path / "broken.csv"
    with pytest.raises(RuntimeError, match="store went away"):
        write_pages(pages(), "csv", path, "occurred_at")
    assert not path.exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_writer_holds_one_page_at_a_time(tmp_path: Path, fmt: str) -> None:
    """The page source checks, each time it is asked for the next page, that every page
    but the one just handed out is gone (no reference kept by the writer, the tally or
    pyarrow) and that Arrow's memory has not grown with the pages written."""
    pages_count, size = 40, 500
    handed: list[weakref.ref[pa.Table]] = []
    peak_over_baseline = 0
    gc.collect()
    baseline = pa.total_allocated_bytes()
    page_bytes = 0

    def source() -> Iterator[pa.Table]:
        nonlocal peak_over_baseline, page_bytes
        for p in range(pages_count):
            alive = [ref for ref in handed[:-1] if ref() is not None]
            assert alive == [], f"{len(alive)} earlier pages still referenced at page {p}"
            peak_over_baseline = max(peak_over_baseline, pa.total_allocated_bytes() - baseline)
            page = _page([_row(p * size + i) for i in range(size)])
            page_bytes = max(page_bytes, page.nbytes)
            handed.append(weakref.ref(page))
            yield page
            del page

    path = tmp_path / f"big.{fmt}"
    summary, tally = write_pages(source(), fmt, path, "occurred_at")
    assert len(handed) == pages_count
    assert tally.rows == pages_count * size
    # Holding every page would be 40 pages; the writer's own buffers are about one.
    assert peak_over_baseline < 4 * page_bytes, (peak_over_baseline, page_bytes)
    assert summary.sha256 == _sha256(path)


# --- the manifest's tally -----------------------------------------------------------------


def test_chain_heads_are_the_highest_seq_of_each_producer_across_pages() -> None:
    tally = Tally("occurred_at")
    first = [_row(5, producer="gw-a"), _row(2, producer="gw-b"), _row(9, producer="gw-a")]
    second = [_row(7, producer="gw-a"), _row(11, producer="gw-b"), _row(1, producer="gw-c")]
    tally.add(_page(first))
    tally.add(_page([]))
    tally.add(_page(second))
    assert tally.rows == 6
    assert (tally.first_ms, tally.last_ms) == (T0 + 1000, T0 + 11_000)
    by = {h["producer_id"]: h for h in tally.chain_heads()}
    assert [h["producer_id"] for h in tally.chain_heads()] == ["gw-a", "gw-b", "gw-c"]
    assert by["gw-a"] == {
        "producer_id": "gw-a",
        "first_seq": 5,
        "last_seq": 9,
        "record_hash": _row(9)["record_hash"],
        "rows": 3,
    }
    assert (by["gw-b"]["first_seq"], by["gw-b"]["last_seq"], by["gw-b"]["rows"]) == (2, 11, 2)
    assert by["gw-b"]["record_hash"] == _row(11)["record_hash"]


def test_page_queries_are_keyset_pages_of_bounded_size() -> None:
    spec = EXPORT_TYPES["events"]
    first = page_sql(spec, 100, after=False)
    later = page_sql(spec, 100, after=True)
    assert "{k0:String}" not in first
    assert "(t.tenant_id, t.occurred_at, t.event_id) > ({k0:String}, " in later
    assert later.endswith("LIMIT 100")
    with pytest.raises(AssertionError):
        page_sql(spec, MAX_PAGE_ROWS + 1, after=False)
    assert EXPORT_TYPES["wallets"].keys[2].column == "entry_count"


def test_an_events_export_has_a_column_for_every_field_of_the_record() -> None:
    """The API a call came in by and each token kind priced at its own rate (lineage v2,
    v3) included: a reader of the export sees what the store holds."""
    exported = set(EXPORT_TYPES["events"].column_names)
    assert [f.name for f in dataclasses.fields(LineageRecord) if f.name not in exported] == []


# --- the job runner over a fake store -----------------------------------------------------


class FakeStore:
    """Answers the export's queries from rows in memory, as the store would: the window
    and tenant from the parameters, the keyset after `k0…`, at most LIMIT rows."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = sorted(rows, key=lambda r: (r["tenant_id"], r["occurred_at"], r["event_id"]))
        self.pages: list[int] = []
        self.hold: asyncio.Event | None = None

    async def run(self, function: Any, *args: Any) -> Any:
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0)
        return function(*args)

    def tables(self) -> tuple[str, frozenset[str], frozenset[str]]:
        return "default", frozenset({"lineage"}), frozenset({"lineage"})

    def _scope(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            r
            for r in self.rows
            if (p["all"] or r["tenant_id"] == p["tenant"])
            and p["since_ms"] <= r["occurred_at"] < p["until_ms"]
        ]

    def query_rows(self, sql: str, p: dict[str, Any], settings: dict[str, Any]) -> list[Any]:
        assert sql.startswith("SELECT count()")
        return [(len(self._scope(p)), now_ms())]

    def read_only(self, sql: str, fmt: str, settings: dict[str, Any], p: dict[str, Any]) -> bytes:
        assert fmt == "ArrowStream"
        limit = int(re.findall(r"LIMIT (\d+)$", sql)[0])
        rows = self._scope(p)
        if "k0" in p:
            after = (p["k0"], p["k1"], p["k2"])
            rows = [r for r in rows if (r["tenant_id"], r["occurred_at"], r["event_id"]) > after]
        page = _page(rows[:limit])
        self.pages.append(page.num_rows)
        sink = io.BytesIO()
        with ipc.new_stream(sink, page.schema) as writer:
            writer.write_table(page)
        return sink.getvalue()


def _rows() -> list[dict[str, Any]]:
    return [_row(n, tenant="acme" if n % 4 else "globex") for n in range(1, 101)]


async def _finished(jobs: ExportJobs, job: ExportJob) -> ExportJob:
    for _ in range(2_000):
        if job.status in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.005)
    raise AssertionError(f"export still {job.status}")


async def _exported_acme(store: FakeStore, tmp_path: Path) -> tuple[ExportJobs, ExportJob]:
    """Tenant acme's export through jobs paging 7 rows at a time, run to its end."""
    jobs = ExportJobs(store, tmp_path, page_rows=7)  # type: ignore[arg-type]
    await jobs.start()
    try:
        return jobs, await _finished(jobs, _submit(jobs, "acme"))
    finally:
        await jobs.stop()


def _submit(jobs: ExportJobs, tenant: str | None, fmt: str = "jsonl") -> ExportJob:
    until = T0 + 1_000_000
    return jobs.submit(
        type_name="events", fmt=fmt, since="30d", since_ms=T0, until_ms=until,
        tenant=tenant, description="audit Q2", created_by="ops",
    )  # fmt: skip


async def test_a_job_stopped_while_saving_its_success_stays_succeeded(tmp_path: Path) -> None:
    # The sink stopping right after a job succeeded (its job.json still being written)
    # must not turn the finished export into a failed one, in memory or on disk.
    jobs = ExportJobs(FakeStore(_rows()), tmp_path, page_rows=50)  # type: ignore[arg-type]
    await jobs.start()
    try:
        job = _submit(jobs, "acme")
        for _ in range(200_000):
            if job.status in ("succeeded", "failed"):
                break
            await asyncio.sleep(0)
    finally:
        await jobs.stop()
    assert job.status == "succeeded", job.error
    state = orjson.loads((tmp_path / job.id / "job.json").read_bytes())
    assert state["status"] == "succeeded"
    reloaded = ExportJobs(FakeStore(_rows()), tmp_path)  # type: ignore[arg-type]
    await reloaded.start()
    try:
        assert reloaded.get(job.id, Reader("org", None)) == job
    finally:
        await reloaded.stop()


async def test_a_job_pages_through_the_store_and_writes_file_manifest_and_state(
    tmp_path: Path,
) -> None:
    store = FakeStore(_rows())
    jobs, job = await _exported_acme(store, tmp_path)
    assert job.status == "succeeded", job.error
    acme = [r for r in store.rows if r["tenant_id"] == "acme"]
    assert job.rows_total == job.rows_done == len(acme) == 75
    assert max(store.pages) <= 7 and len(store.pages) == 75 // 7 + 1
    lines = [json.loads(line) for line in jobs.file_path(job).read_text().splitlines()]
    assert [line["event_id"] for line in lines] == [r["event_id"] for r in acme]
    manifest = orjson.loads(jobs.manifest_path(job).read_bytes())
    assert manifest == job.manifest
    assert manifest["rows"] == 75 and manifest["tenant"] == "acme"
    assert manifest["file"]["sha256"] == _sha256(jobs.file_path(job))
    assert manifest["time_range"] == {
        "first_ms": acme[0]["occurred_at"],
        "last_ms": acme[-1]["occurred_at"],
    }
    heads = {h["producer_id"]: h for h in manifest["chain_heads"]}
    for producer in {r["producer_id"] for r in acme}:
        mine = [r for r in acme if r["producer_id"] == producer]
        top = max(mine, key=lambda r: r["seq"])
        assert heads[producer]["last_seq"] == top["seq"]
        assert heads[producer]["record_hash"] == top["record_hash"]
        assert heads[producer]["rows"] == len(mine)
    state = orjson.loads((tmp_path / job.id / "job.json").read_bytes())
    assert state["status"] == "succeeded" and state["rows_done"] == 75


async def test_a_record_stored_twice_is_exported_once_within_and_across_pages(
    tmp_path: Path,
) -> None:
    # The page query has no `LIMIT 1 BY` (it made each page read every row after the
    # key): copies come side by side in a page, or across a page's end, and each is
    # written once.
    rows = _rows()
    acme = [r for r in rows if r["tenant_id"] == "acme"]
    store = FakeStore(rows + [dict(r) for r in acme[2:4] + acme[6:7] + [acme[6]]])
    jobs, job = await _exported_acme(store, tmp_path)
    assert job.status == "succeeded", job.error
    lines = [json.loads(line) for line in jobs.file_path(job).read_text().splitlines()]
    assert [line["event_id"] for line in lines] == [r["event_id"] for r in acme]
    assert job.rows_done == job.manifest["rows"] == 75  # type: ignore[index]
    assert store.pages[0] == 7 and len(store.pages) > 75 // 7 + 1  # copies filled pages


async def test_jobs_survive_a_restart_and_a_running_one_fails(tmp_path: Path) -> None:
    store = FakeStore(_rows())
    jobs = ExportJobs(store, tmp_path, page_rows=10, max_running=1)  # type: ignore[arg-type]
    await jobs.start()
    done = await _finished(jobs, _submit(jobs, None, "parquet"))
    store.hold = asyncio.Event()  # the next job sticks in its first store call
    stuck = _submit(jobs, "acme")
    waiting = _submit(jobs, "acme")
    for _ in range(200):
        if stuck.status == "running":
            break
        await asyncio.sleep(0.005)
    await jobs.stop()
    assert stuck.status == "failed" and stuck.error == "sink stopped"
    assert waiting.status == "queued"
    # As if killed: the stuck job's file says running.
    record = orjson.loads((tmp_path / stuck.id / "job.json").read_bytes())
    (tmp_path / stuck.id / "job.json").write_bytes(orjson.dumps({**record, "status": "running"}))
    (tmp_path / stuck.id / "export.jsonl.partial").write_bytes(b"half")

    again = ExportJobs(FakeStore(_rows()), tmp_path, page_rows=10)  # type: ignore[arg-type]
    await again.start()
    try:
        org = Reader("org", None)
        reloaded = again.get(done.id, org)
        assert reloaded is not None and reloaded.status == "succeeded"
        assert reloaded.manifest == done.manifest
        failed = again.get(stuck.id, org)
        assert failed is not None and failed.status == "failed"
        assert failed.error == "sink restarted"
        assert not (tmp_path / stuck.id / "export.jsonl.partial").exists()
        rerun = again.get(waiting.id, org)
        assert rerun is not None
        assert (await _finished(again, rerun)).status == "succeeded", rerun.error
    finally:
        await again.stop()


async def test_tenants_see_only_their_jobs_and_queues_and_memory_are_bounded(
    tmp_path: Path,
) -> None:
    jobs = ExportJobs(FakeStore([]), tmp_path, max_queued=3, max_kept=6)  # type: ignore[arg-type]
    # Not started: nothing takes jobs off the queue.
    acme, globex, every = _submit(jobs, "acme"), _submit(jobs, "globex"), _submit(jobs, None)
    with pytest.raises(ExportQueueFullError):
        _submit(jobs, "acme")
    a, org = Reader("a-admin", "acme"), Reader("org", None)
    assert [j.id for j in jobs.visible(a)] == [acme.id]
    assert jobs.get(globex.id, a) is None and jobs.get(every.id, a) is None
    assert {j.id for j in jobs.visible(org)} == {acme.id, globex.id, every.id}

    await jobs.start()
    try:
        for job in (acme, globex, every):
            await _finished(jobs, job)
        for _ in range(4):
            await _finished(jobs, _submit(jobs, "acme"))
    finally:
        await jobs.stop()
    kept = jobs.visible(org)
    assert len(kept) == 6 and acme.id not in {j.id for j in kept}
    assert not (tmp_path / acme.id).exists()


# --- the routes ---------------------------------------------------------------------------

READERS = {
    "org": Reader("org", None),
    "acme-admin": Reader("acme-admin", "acme"),
    "globex-admin": Reader("globex-admin", "globex"),
}


def _authenticate(presented: str) -> Reader:
    if presented not in READERS:
        raise AccessDeniedError(401, "invalid_api_key", "admin key required")
    return READERS[presented]


async def test_routes_validate_scope_and_stream_the_file(tmp_path: Path) -> None:
    api = QueryApi(
        FakeStore(_rows()),  # type: ignore[arg-type]
        _authenticate,
        dict,
        1000,
        exports_dir=tmp_path,
    )
    async with TestClient(TestServer(api.application())) as client:

        async def post(key: str, body: Any) -> Any:
            response = await client.post(
                "/v1/exports", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            return response.status, await response.json()

        async def get(key: str, path: str) -> Any:
            return await client.get(path, headers={"Authorization": f"Bearer {key}"})

        ok = {"type": "events", "format": "csv", "since": "3650d", "description": "Q2"}
        for body, status, code in [
            ({**ok, "type": "calls"}, 400, "invalid_export_type"),
            ({**ok, "format": "xlsx"}, 400, "invalid_export_format"),
            ({**ok, "since": "forever"}, 400, "invalid_since"),
            ({**ok, "since": 90}, 400, "invalid_since"),
            ({**ok, "description": "x" * 501}, 400, "invalid_description"),
            ({**ok, "tenant": ""}, 400, "invalid_tenant"),
            ({**ok, "color": "red"}, 400, "unknown_field"),
            ([ok], 400, "invalid_json"),
            ({**ok, "tenant": "globex"}, 403, "forbidden"),
        ]:
            got_status, got = await post("acme-admin", body)
            assert (got_status, got["error"]["code"]) == (status, code), body
        assert (await post("nobody", ok))[0] == 401

        status, job = await post("acme-admin", ok)
        assert status == 202 and job["tenant"] == "acme" and job["status"] == "queued"
        status, theirs = await post("org", {**ok, "tenant": "globex"})
        assert status == 202 and theirs["tenant"] == "globex"
        for _ in range(400):
            current = await (await get("acme-admin", f"/v1/exports/{job['id']}")).json()
            if current["status"] == "succeeded":
                break
            await asyncio.sleep(0.01)
        assert current["manifest"]["rows"] == 75

        download = await get("acme-admin", current["download_url"])
        assert download.status == 200
        assert download.headers["Content-Type"].startswith("text/csv")
        body = await download.read()
        assert hashlib.sha256(body).hexdigest() == current["manifest"]["file"]["sha256"]
        assert download.headers["X-Govledger-Sha256"] == current["manifest"]["file"]["sha256"]
        manifest = await get("acme-admin", current["manifest_url"])
        assert (await manifest.json())["file"]["sha256"] == current["manifest"]["file"]["sha256"]

        listed = await (await get("acme-admin", "/v1/exports")).json()
        assert [j["id"] for j in listed["exports"]] == [job["id"]]
        for path in ("", "/download", "/manifest"):
            hidden = await get("acme-admin", f"/v1/exports/{theirs['id']}{path}")
            assert hidden.status == 404, path
            assert (await hidden.json())["error"]["code"] == "export_not_found"
        assert (await get("org", f"/v1/exports/{theirs['id']}")).status == 200
        assert (await get("org", "/v1/exports/../../etc/passwd")).status == 404
