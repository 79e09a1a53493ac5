"""Scheduled exports on the running stack (Tansu + chDB): a schedule every second, made and
listed with the command line, produces exports whose manifests match the store and whose
files match their manifests, and notifies a route of its tenant of each finished run (a
signed CloudEvent to a receiver in the test, each attempt in `notifications`); and a
schedule whose runs were missed while the sink was stopped runs once when it starts again,
not once per missed slot."""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from streams.notify import logic
from tests.integration.stack import (
    RunningStack,
    govledger,
    running_store,
    stack_environ,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    # The shared stack (tests/conftest.py), whose minimum schedule interval is 1 s.
    return shared_stack


SECRET = "whsec_c2NoZWR1bGVkLWV4cG9ydC1ub3RpY2Vz"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A webhook receiver on loopback: its URL and what it got (headers, body)."""
    got: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def _get(stack: RunningStack, path: str) -> httpx.Response:
    return httpx.get(
        f"{stack.settings.query_url}{path}",
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=30,
    )


def _runs(stack: RunningStack, schedule_id: str) -> list[dict[str, Any]]:
    """The schedule's kept runs, oldest first."""
    shown = _get(stack, f"/v1/exports/schedules/{schedule_id}")
    assert shown.status_code == 200, shown.text
    return list(reversed(shown.json()["runs"]))


def _succeeded(stack: RunningStack, schedule_id: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]]:
        done = [r for r in _runs(stack, schedule_id) if r["status"] == "succeeded"]
        return done if len(done) >= count else []

    found: list[dict[str, Any]] = wait_for(enough, timeout_s=30, every_s=0.2)
    return found


def test_a_schedule_every_second_produces_exports_with_valid_manifests(
    stack: RunningStack,
    tmp_path: Path,
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    tenant = f"xs-{secrets.token_hex(3)}"
    stack.fund("alpha", "5", tenant=tenant)
    key = stack.create_key("alpha", tenant=tenant)["key"]
    wait_for(lambda: stack.balance_nanousd("alpha", tenant=tenant) > 0)
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    for _ in range(2):
        sdk.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "hi"}])
    where = f"tenant_id = '{tenant}'"
    wait_for(lambda: stack.sql(f"SELECT count() FROM lineage WHERE {where}") == [["2"]])
    hook_url, got = receiver
    routed = govledger(
        stack.env, "notify", "add", "--on", "export.completed", "--webhook", hook_url,
        "--secret", SECRET, "--tenant", tenant,
    )  # fmt: skip
    assert routed.returncode == 0, routed.stderr
    route_id = routed.stdout.split()[1].rstrip(":")

    made = govledger(
        stack.env, "export", "schedule", "--every", "1s", "--type", "events",
        "--format", "jsonl", "--since", "1d", "--tenant", tenant,
        "--description", "every second",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    schedule_id = made.stdout.split("\t")[0]
    assert "every 1s" in made.stdout

    try:
        runs = _succeeded(stack, schedule_id, 2)
        for run in runs[:2]:
            job = _get(stack, f"/v1/exports/{run['job_id']}").json()
            manifest = job["manifest"]
            assert manifest["tenant"] == tenant and manifest["description"] == "every second"
            assert run["rows"] == manifest["rows"] == 2
            assert run["manifest_sha256"] == manifest["file"]["sha256"]
            assert {h["producer_id"] for h in manifest["chain_heads"]} == {
                line[0] for line in stack.sql(f"SELECT producer_id FROM lineage WHERE {where}")
            }
            content = _get(stack, job["download_url"]).content
            assert hashlib.sha256(content).hexdigest() == manifest["file"]["sha256"]
            assert {json.loads(line)["tenant_id"] for line in content.splitlines()} == {tenant}
        # The download path users take: the file checked against its manifest.
        fetched = govledger(
            stack.env, "export", "download", runs[0]["job_id"],
            "--output", str(tmp_path / "run.jsonl"),
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert "verified" in fetched.stdout

        listed = govledger(stack.env, "export", "schedules")
        assert listed.returncode == 0, listed.stderr
        (line,) = [row for row in listed.stdout.splitlines() if row.startswith(schedule_id)]
        assert "every 1s" in line and "every second" in line
        assert any(status in line for status in ("succeeded", "queued", "running", "skipped"))
        history = govledger(stack.env, "export", "schedules", schedule_id)
        assert history.returncode == 0, history.stderr
        assert runs[0]["job_id"] in history.stdout and runs[0]["manifest_sha256"] in history.stdout
        _notified(stack, tenant, schedule_id, got)
    finally:
        removed = govledger(stack.env, "export", "unschedule", schedule_id)
        govledger(stack.env, "notify", "remove", route_id)
    assert removed.returncode == 0, removed.stderr
    gone = _get(stack, f"/v1/exports/schedules/{schedule_id}")
    assert gone.status_code == 404


def _notified(
    stack: RunningStack, tenant: str, schedule_id: str, got: list[tuple[dict[str, str], bytes]]
) -> None:
    """The sink told the tenant's route of finished runs: signed CloudEvents, one per run,
    each with the run's outcome as the schedule lists it, each delivery in `notifications`."""
    wait_for(lambda: got, timeout_s=15, every_s=0.1)
    runs = {r["slot_ms"]: r for r in _runs(stack, schedule_id)}
    events = []
    for headers, body in list(got):
        assert logic.verify(SECRET, headers, body, int(time.time()))
        event = json.loads(body)
        data = event["data"]
        assert event["type"] == "dev.govledger.export.completed"
        assert event["id"] == headers["webhook-id"]
        assert event["id"] == logic.export_run_event_id(schedule_id, data["slot_ms"])
        assert (data["schedule_id"], data["tenant"]) == (schedule_id, tenant)
        run = runs.get(data["slot_ms"])
        if run is not None:  # (an older run may have left the kept history)
            assert (data["status"], data["export_id"]) == (run["status"], run["job_id"])
            assert data["manifest_sha256"] == run["manifest_sha256"]
        events.append(event["id"])
    assert len(events) == len(set(events))  # once per run
    where = f"tenant_id = '{tenant}' AND status = 'delivered'"
    wait_for(
        lambda: (
            {
                row[0]
                for row in stack.sql(f"SELECT source_event_id FROM notifications WHERE {where}")
            }
            >= set(events)
        ),
        timeout_s=15,
        every_s=0.2,
    )


def test_a_run_missed_while_the_sink_was_stopped_runs_once_at_start(tmp_path: Path) -> None:
    env = stack_environ(tmp_path / "data", GOVLEDGER_EXPORT_SCHEDULE_MIN_INTERVAL_S="1")
    with running_store(env) as store:
        made = httpx.post(
            f"{store.settings.query_url}/v1/exports/schedules",
            headers={"Authorization": f"Bearer {store.token}"},
            json={"every": "1s", "type": "events", "format": "csv", "since": "1d"},
            timeout=30,
        )
        assert made.status_code == 201, made.text
        schedule_id = made.json()["id"]
        # The sink stopped as `govledger down` stops it, then started again as `up` and the
        # supervisor starts it (the broker stays up: the schedules are the sink's alone).
        sink = store.stack.child("sink").process
        store.stack.kill("sink", signal.SIGTERM)
        assert sink.wait(timeout=30) == 0
        stopped_ms = int(time.time() * 1000)
        time.sleep(1.0)  # with the start to come, two one-second slots pass unrun at least
        store.stack._launch(("sink",))

        def since_restart() -> list[dict[str, Any]]:
            return [r for r in _runs(store, schedule_id) if r["submitted_at_ms"] > stopped_ms]

        first = wait_for(since_restart, timeout_s=20, every_s=0.1)[0]
        started_ms = first["submitted_at_ms"]
        # One run at start stands for every slot missed while down...
        assert first["slot_ms"] < stopped_ms + 1_000 and first["missed"] >= 1, first
        # ...and what comes next is for slots after the start, not other missed ones.
        shown = _get(store, f"/v1/exports/schedules/{schedule_id}").json()
        assert shown["next_run_ms"] > started_ms
        later = [r for r in shown["runs"] if r["submitted_at_ms"] > started_ms]
        assert all(r["slot_ms"] > started_ms and r["missed"] == 0 for r in later), later

        def first_done() -> dict[str, Any] | None:
            return next(
                (
                    r
                    for r in _runs(store, schedule_id)
                    if r["slot_ms"] == first["slot_ms"] and r["status"] == "succeeded"
                ),
                None,
            )

        done = wait_for(first_done, timeout_s=20, every_s=0.1)
        job = _get(store, f"/v1/exports/{done['job_id']}").json()
        content = _get(store, job["download_url"]).content
        assert hashlib.sha256(content).hexdigest() == done["manifest_sha256"]
        assert job["manifest"]["rows"] == done["rows"] == 0  # nothing was called here
