"""Hostile input to the embeddings, legacy completions and model routes: each refusal is
a clear 4xx in the documented JSON shape with its lineage record (naming the API), never
a call to the upstream; what is forwarded is the body as validated (one value per key),
PII redacted in every text the upstream reads, usage always asked of a stream; sizes
that would cost memory or money (dimensions, best_of, n, inputs) are bounded; the model
route reflects nothing and leaks no model the key may not use.

Servers as in test_gateway_input.py (gateway_fixtures.py); the upstream records what it
received (tests/component/api_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.component.api_upstream import EMBED_MODEL, INSTRUCT_MODEL, ApiUpstream
from tests.component.support import CAPTURE_MODEL
from tests.security.gateway_fixtures import (
    JSON,
    MARK,
    Served,
    assert_json_error,
    bearer,
    request,
    running_gateway,
    send,
)

EMBEDDINGS = "/v1/embeddings"
COMPLETIONS = "/v1/completions"
EMAIL = "jane.doe@example.com"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    async with running_gateway(
        tmp_path,
        with_pii_pack=True,
        upstream=ApiUpstream(),
        upstream_models=f"{CAPTURE_MODEL},{EMBED_MODEL},{INSTRUCT_MODEL}",
        max_body_bytes=65_536,
    ) as served:
        yield served


def upstream_of(served: Served) -> ApiUpstream:
    assert isinstance(served.upstream, ApiUpstream)
    return served.upstream


async def post(served: Served, path: str, body: bytes, headers: list[bytes] | None = None) -> Any:
    hdrs = [bearer(), JSON] if headers is None else headers
    return await send(served.host, served.port, request("POST", path, hdrs, body))


def embed(**fields: Any) -> bytes:
    return json.dumps({"model": EMBED_MODEL, "input": "hello", **fields}).encode()


def complete(**fields: Any) -> bytes:
    return json.dumps({"model": INSTRUCT_MODEL, "prompt": "hello", **fields}).encode()


HOSTILE = [
    (EMBEDDINGS, b"[" + MARK.encode() + b"]", "invalid_json"),
    (EMBEDDINGS, b'["' + MARK.encode() + b'"]', "invalid_request"),
    (EMBEDDINGS, embed(dimensions=2**40), "invalid_request"),
    (EMBEDDINGS, embed(dimensions=True), "invalid_request"),
    (EMBEDDINGS, embed(input=[MARK] * 3_000), "invalid_request"),
    (EMBEDDINGS, embed(input=[[2**70]]), "invalid_request"),
    (EMBEDDINGS, embed(input={"text": MARK}), "invalid_request"),
    (EMBEDDINGS, embed(stream=True), "invalid_request"),
    (EMBEDDINGS, embed(model=MARK * 100), "invalid_request"),
    (
        EMBEDDINGS,
        embed(future=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[MARK]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
        "invalid_request",
    ),
    (COMPLETIONS, complete(best_of=10**6), "invalid_request"),
    (COMPLETIONS, complete(n=10**6), "invalid_request"),
    (COMPLETIONS, complete(max_tokens=2**63), "invalid_request"),
    (COMPLETIONS, complete(best_of=3, stream=True), "invalid_request"),
    (COMPLETIONS, complete(prompt=None), "invalid_request"),
    (COMPLETIONS, complete(suffix={"x": MARK}), "invalid_request"),
    (COMPLETIONS, complete(logit_bias={"not-a-token": 1}), "invalid_request"),
    (COMPLETIONS, complete(logit_bias=[MARK]), "invalid_request"),
    (COMPLETIONS, complete(stop=[MARK] * 5), "invalid_request"),
]


@pytest.mark.parametrize(("path", "body", "code"), HOSTILE)
async def test_hostile_bodies_are_refused_recorded_and_never_forwarded(
    gateway: Served, path: str, body: bytes, code: str
) -> None:
    response = await post(gateway, path, body)
    assert_json_error(response, 400, code)
    assert upstream_of(gateway).received == []
    (record,) = gateway.lineage.lineage()
    assert (record.api, record.decision, record.http_status) == (
        path.removeprefix("/v1/"),
        "rejected",
        400,
    )
    assert record.cost_nanousd == 0 and record.reserved_nanousd == 0


@pytest.mark.parametrize("path", [EMBEDDINGS, COMPLETIONS])
async def test_no_key_or_a_huge_body_is_refused_and_recorded(gateway: Served, path: str) -> None:
    unauthenticated = await post(
        gateway, path, embed() if path == EMBEDDINGS else complete(), [JSON]
    )
    assert_json_error(unauthenticated, 401, "missing_api_key")
    huge = await post(gateway, path, embed(input="x" * 70_000))
    assert huge.status == 413, huge.body
    assert upstream_of(gateway).received == []
    assert [r.api for r in gateway.lineage.lineage()] == [path.removeprefix("/v1/")] * 2


async def test_a_duplicate_key_is_forwarded_once_as_validated_and_redacted(
    gateway: Served,
) -> None:
    body = (
        b'{"model": "' + EMBED_MODEL.encode() + b'", "input": "harmless", '
        b'"input": "write to ' + EMAIL.encode() + b'"}'
    )
    response = await post(gateway, EMBEDDINGS, body)
    assert response.status == 200, response.body
    (raw,) = upstream_of(gateway).raw_bodies
    assert raw.count(b'"input"') == 1
    assert EMAIL.encode() not in raw and b"[REDACTED:EMAIL]" in raw


async def test_personal_data_is_redacted_wherever_the_upstream_reads_text(
    gateway: Served,
) -> None:
    hidden: dict[str, Any] = {"user": EMAIL, "future": {"deep": [EMAIL]}}
    for path, body in (
        (EMBEDDINGS, embed(input=["ok", f"to {EMAIL}"], **hidden)),
        (COMPLETIONS, complete(prompt=[f"from {EMAIL}"], suffix=f"cc {EMAIL}", **hidden)),
    ):
        response = await post(gateway, path, body)
        assert response.status == 200, response.body
    for raw in upstream_of(gateway).raw_bodies:
        assert EMAIL.encode() not in raw
    assert all(
        ("pii-detector", "redact") in [(g.name, g.action) for g in r.guardrails_triggered]
        for r in gateway.lineage.lineage()
    )


async def test_token_ids_cannot_slip_past_the_pii_step(gateway: Served) -> None:
    for path, body in (
        (EMBEDDINGS, embed(input=[[100, 200, 300]])),
        (COMPLETIONS, complete(prompt=[[100, 200, 300]])),
    ):
        error = assert_json_error(await post(gateway, path, body), 400, "invalid_request")
        assert error["param"] == ("input" if path == EMBEDDINGS else "prompt")
    assert upstream_of(gateway).received == []


async def test_the_caller_cannot_switch_off_the_usage_a_stream_is_billed_by(
    gateway: Served,
) -> None:
    body = complete(stream=True, stream_options={"include_usage": False})
    response = await post(gateway, COMPLETIONS, body)
    assert response.status == 200, response.body
    assert upstream_of(gateway).received[0]["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in response.body  # not asked for: not sent
    (record,) = gateway.lineage.lineage()
    assert record.usage_source == "reported" and record.cost_nanousd > 0


@pytest.mark.parametrize(
    "model",
    [MARK, "..%2F..%2Fadmin%2Fkeys", "%00" + MARK, "sim-small%0d%0aX-Evil:%201", "x" * 2_000],
)
async def test_the_model_route_reflects_nothing_and_finds_nothing_hostile(
    gateway: Served, model: str
) -> None:
    response = await send(
        gateway.host, gateway.port, request("GET", f"/v1/models/{model}", [bearer()])
    )
    assert_json_error(response, 404, "model_not_found")
    assert "x-evil" not in response.headers
    assert "x" * 300 not in response.body.decode()
