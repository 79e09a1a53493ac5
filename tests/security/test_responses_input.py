"""Hostile input to `POST /v1/responses`: each refusal is a clear 4xx in the documented
JSON shape with its lineage record (api "responses"), never a call to the upstream, and
quotes nothing of the caller's; what is forwarded is the body as validated (one value per
key), personal data redacted in every text the upstream reads (instructions, input items,
function outputs, tool descriptions, metadata, unknown fields); sizes that would cost
money (max_output_tokens) are bounded.

Servers as in test_gateway_input.py (gateway_fixtures.py); the upstream records what it
received (tests/component/responses_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.component.responses_upstream import RESPONSES_MODEL, ResponsesUpstream
from tests.raw_http import RawResponse
from tests.security.gateway_fixtures import (
    JSON,
    MARK,
    SECRET,
    Served,
    assert_json_error,
    bearer,
    request,
    running_gateway,
    send,
)

RESPONSES = "/v1/responses"
EMAIL = "jane.doe@example.com"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    async with running_gateway(
        tmp_path,
        with_pii_pack=True,
        upstream=ResponsesUpstream(),
        upstream_models=RESPONSES_MODEL,
        max_body_bytes=65_536,
    ) as served:
        yield served


def upstream_of(served: Served) -> ResponsesUpstream:
    assert isinstance(served.upstream, ResponsesUpstream)
    return served.upstream


async def post(served: Served, body: bytes, headers: list[bytes] | None = None) -> RawResponse:
    hdrs = [bearer(), JSON] if headers is None else headers
    return await send(served.host, served.port, request("POST", RESPONSES, hdrs, body))


def respond(**fields: Any) -> bytes:
    return json.dumps({"model": RESPONSES_MODEL, "input": "hello", **fields}).encode()


DEEP: Any = MARK
for _ in range(40):
    DEEP = [DEEP]

HOSTILE = [
    (b"[" + MARK.encode() + b"]", "invalid_json"),
    (b'["' + MARK.encode() + b'"]', "invalid_request"),
    (respond(model=MARK * 100), "invalid_request"),
    (respond(model=None), "invalid_request"),
    (respond(input={"text": MARK}), "invalid_request"),
    (respond(input=[MARK]), "invalid_request"),
    (respond(input=None), "invalid_request"),
    (respond(instructions={"x": MARK}), "invalid_request"),
    (respond(max_output_tokens=2**63), "invalid_request"),
    (respond(max_output_tokens=True), "invalid_request"),
    (respond(temperature="hot"), "invalid_request"),
    (respond(tools=MARK), "invalid_request"),
    (respond(tools=[MARK]), "invalid_request"),
    (respond(tools=[{"type": "function", "name": MARK * 10}]), "invalid_request"),
    (respond(tools=[{"type": "function", "name": "f", "parameters": MARK}]), "invalid_request"),
    (respond(tool_choice={"type": "function"}), "invalid_request"),
    (respond(tool_choice=MARK), "invalid_request"),
    (respond(text={"format": {"type": "json_schema", "name": MARK * 10}}), "invalid_request"),
    (respond(text=MARK), "invalid_request"),
    (respond(stream_options={"include_obfuscation": False}), "invalid_request"),
    (respond(metadata=[MARK]), "invalid_request"),
    (respond(future=DEEP), "invalid_request"),
]


@pytest.mark.parametrize(("body", "code"), HOSTILE)
async def test_hostile_bodies_are_refused_recorded_and_never_forwarded(
    gateway: Served, body: bytes, code: str
) -> None:
    assert_json_error(await post(gateway, body), 400, code)
    assert upstream_of(gateway).received == []
    (record,) = gateway.lineage.lineage()
    assert (record.api, record.decision, record.http_status) == ("responses", "rejected", 400)
    assert record.cost_nanousd == 0 and record.reserved_nanousd == 0


async def test_no_key_or_a_huge_body_is_refused_and_recorded(gateway: Served) -> None:
    assert_json_error(await post(gateway, respond(), [JSON]), 401, "missing_api_key")
    huge = await post(gateway, respond(input="x" * 70_000))
    assert huge.status == 413, huge.body
    assert upstream_of(gateway).received == []
    assert [r.api for r in gateway.lineage.lineage()] == ["responses"] * 2


async def test_a_duplicate_key_is_forwarded_once_as_validated_and_redacted(
    gateway: Served,
) -> None:
    body = (
        b'{"model": "' + RESPONSES_MODEL.encode() + b'", "input": "harmless", '
        b'"input": "write to ' + EMAIL.encode() + b'"}'
    )
    response = await post(gateway, body)
    assert response.status == 200, response.body
    (raw,) = upstream_of(gateway).raw_bodies
    assert raw.count(b'"input"') == 1
    assert EMAIL.encode() not in raw and b"[REDACTED:EMAIL]" in raw


async def test_personal_data_is_redacted_wherever_the_upstream_reads_text(
    gateway: Served,
) -> None:
    body = respond(
        instructions=f"Write to {EMAIL}",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": f"me: {EMAIL}"}]},
            {"type": "function_call_output", "call_id": "c1", "output": f"owner {EMAIL}"},
        ],
        tools=[{"type": "function", "name": "f", "description": f"mails {EMAIL}"}],
        metadata={"note": EMAIL},
        user=EMAIL,
        future={"deep": [EMAIL]},
    )
    for stream in (False, True):
        payload = json.loads(body)
        response = await post(gateway, json.dumps({**payload, "stream": stream}).encode())
        assert response.status == 200, response.body
    for raw in upstream_of(gateway).raw_bodies:
        assert EMAIL.encode() not in raw
    assert all(
        ("pii-detector", "redact") in [(g.name, g.action) for g in r.guardrails_triggered]
        for r in gateway.lineage.lineage()
    )


async def test_a_stream_ends_with_its_terminal_event_and_is_billed_by_it(gateway: Served) -> None:
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:  # raw_exchange reads no chunked body
        response = await http.post(
            gateway.url + RESPONSES, content=respond(stream=True), headers=headers
        )
    assert response.status_code == 200, response.content
    events = [e for e in response.content.split(b"\n\n") if e.strip()]
    assert events[-1].startswith(b"event: response.completed\n")
    assert b"[DONE]" not in response.content
    assert "stream_options" not in upstream_of(gateway).received[0]
    (record,) = gateway.lineage.lineage()
    assert record.usage_source == "reported" and record.cost_nanousd > 0
