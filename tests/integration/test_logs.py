"""The real stack's logs (the shared stack runs with GOVLEDGER_LOG_FORMAT=json): every line
the gateway, the sink with its query API and the Faust worker wrote is one JSON object,
theirs and their libraries' (aiokafka, Faust, mode); the access lines are there; and no
line of any part, the broker's included, holds a key secret, the admin token, the prompt
or the personal data sent. The component tier checks the same in-process
(tests/component/test_logs.py); this one proves the processes are configured so."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.stack import RunningStack, wait_for

pytestmark = pytest.mark.integration

OUR_PARTS = ("gateway", "sink", "worker")


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


def chat(stack: RunningStack, secret: str, content: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "sim-small", "messages": [{"role": "user", "content": content}], **body},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def parsed(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(errors="replace").splitlines()
    objects = []
    for number, line in enumerate(lines, 1):
        try:
            objects.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not one JSON object: {line[:300]}")
    return objects


def test_every_part_logs_json_lines_with_access_lines_and_no_secret(stack: RunningStack) -> None:
    run = uuid.uuid4().hex[:12]
    tenant = f"logs-{run}"
    prompt = f"Summarise the acquisition of Kestrel Holdings {run} for the board"
    email = f"ana.lima.{run}@example.org"
    secret = stack.create_key("legal", tenant=tenant)["key"]
    stack.fund("legal", "5", tenant=tenant)
    served = chat(stack, secret, f"{prompt}; cc {email}", user=email)
    assert served.status_code == 200, served.text
    streamed = chat(stack, secret, f"{prompt}; cc {email}", stream=True)
    assert streamed.status_code == 200, streamed.text
    bad_key = secret[:-4] + "zzzz"
    assert chat(stack, bad_key, prompt).status_code == 401
    assert stack.admin("GET", "/v1/admin/keys", params={"tenant": tenant}).status_code == 200
    refused = httpx.get(
        f"{stack.settings.query_url}/v1/events", headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 403
    # Stored, so the sink and the worker have read (and could have logged) the records.
    wait_for(
        lambda: stack.sql(f"SELECT count() FROM lineage WHERE tenant_id = '{tenant}'") == [["2"]]
    )
    assert stack.sql("SELECT 1") == [["1"]]

    log_dir = stack.stack.log_dir
    lines = {part: parsed(log_dir / f"{part}.log") for part in OUR_PARTS}
    for part, objects in lines.items():
        assert objects, f"{part}.log is empty"
        odd = [
            line
            for line in objects
            if not {"timestamp", "level", "logger", "event"} <= set(line)
            or line.get("service") != part
        ]
        assert not odd, f"{part}.log: {odd[:3]}"
    loggers = {part: {str(line["logger"]) for line in objects} for part, objects in lines.items()}
    # Kafka clients' own lines (aiokafka's, under Faust in the worker) come out as ours.
    assert any(name.startswith("aiokafka") for name in loggers["worker"]), loggers["worker"]
    assert any(name.startswith(("faust", "mode")) for name in loggers["worker"]), loggers["worker"]

    calls = [
        line
        for line in lines["gateway"]
        if line["event"] == "gateway call" and line["tenant"] == tenant
    ]
    assert sorted((c["status"], c["stream"]) for c in calls) == [(200, False), (200, True)]
    assert all(c["key_prefix"] == secret[:10] and c["trace_id"] for c in calls)
    requests = [line for line in lines["gateway"] if line["event"] == "http request"]
    assert any(r["route"] == "/v1/admin/keys" and r["status"] == 200 for r in requests)
    queries = [line for line in lines["sink"] if line["event"] == "http request"]
    assert any(q["route"] == "/v1/events" and q["status"] == 403 for q in queries)
    assert any(q["route"] == "/" and q["status"] == 200 and q["tenant"] is None for q in queries)

    secrets = {
        "the key secret": secret,
        "the presented bad key": bad_key,
        "the admin token": stack.token,
        "the prompt": prompt,
        "the e-mail address": email,
    }
    leaks = [
        f"{log.name}: {name}"
        for log in sorted(log_dir.glob("*.log"))
        for name, value in secrets.items()
        if value in log.read_text(errors="replace")
    ]
    assert not leaks, leaks
