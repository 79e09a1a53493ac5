"""Hostile input to the Messages API (`/v1/messages`, `/v1/messages/count_tokens`): keys
sent twice or two ways, malformed keys, untranslatable or malformed bodies, each refused
in Anthropic's error shape without quoting a secret or the hostile bytes back; and PII
in every text block an upstream reads (system, text, tool_use input, tool_result)
redacted before the provider sees it. The gateway runs in-process on a free port
(tests/security/gateway_fixtures.py); the provider's side keeps what it received."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.component.support import CAPTURE_MODEL
from tests.raw_http import RawResponse
from tests.security.gateway_fixtures import (
    JSON,
    MARK,
    SECRET,
    Served,
    bearer,
    request,
    running_gateway,
    send,
)

EMAIL = "dana.doe@example.com"
PATH = "/v1/messages"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    async with running_gateway(tmp_path, with_pii_pack=True) as served:
        yield served


def _body(**fields: Any) -> bytes:
    payload: dict[str, Any] = {
        "model": CAPTURE_MODEL,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    payload.update(fields)
    return json.dumps(payload).encode()


def api_key(secret: str = SECRET) -> bytes:
    return b"x-api-key: " + secret.encode()


async def _post(served: Served, headers: list[bytes], body: bytes, path: str = PATH) -> RawResponse:
    return await send(served.host, served.port, request("POST", path, [JSON, *headers], body))


def assert_anthropic_error(response: RawResponse, status: int, kind: str) -> dict[str, Any]:
    """Anthropic's shape: {"type": "error", "error": {"type", "message", "code"}}, and
    neither the key nor the planted marker in it."""
    assert response.status == status, response.body
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["type"] == "error", data
    error: dict[str, Any] = data["error"]
    assert error["type"] == kind, error
    assert isinstance(error["message"], str) and error["message"]
    text = response.body.decode("utf-8", "replace")
    assert SECRET not in text and MARK not in text
    return error


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([api_key(), api_key()], id="x-api-key twice"),
        pytest.param([api_key(), bearer(SECRET[:-1] + "x")], id="x-api-key and another bearer"),
        pytest.param([api_key(SECRET + " " + MARK)], id="a space in the key"),
        pytest.param([api_key("gk_" + MARK)], id="an unknown key"),
        pytest.param([], id="no key"),
    ],
)
async def test_keys_sent_wrong_are_refused_as_anthropic_401s(
    gateway: Served, headers: list[bytes]
) -> None:
    response = await _post(gateway, headers, _body())
    assert_anthropic_error(response, 401, "authentication_error")
    assert gateway.upstream.received == []
    [record] = gateway.lineage.lineage()  # answered, so recorded, like any refused call
    assert (record.api, record.decision, record.http_status) == ("messages", "rejected", 401)


async def test_the_same_key_as_x_api_key_and_bearer_is_accepted(gateway: Served) -> None:
    response = await _post(gateway, [api_key(), bearer()], _body())
    assert response.status == 200, response.body
    assert response.json()["type"] == "message"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json " + MARK.encode(), id="not JSON"),
        pytest.param(b"[1, 2]", id="not an object"),
        pytest.param(_body(**{MARK * 20: 1}), id="an unknown field with a long name"),
        pytest.param(_body(max_tokens=-1), id="negative max_tokens"),
        pytest.param(_body(max_tokens=2**70), id="a huge max_tokens"),
        pytest.param(_body(messages=[]), id="no messages"),
        pytest.param(
            _body(messages=[{"role": "user", "content": [{"type": MARK * 20, "text": "x"}]}]),
            id="a block type of the caller's",
        ),
        pytest.param(
            _body(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "[1]"}],
                    }
                ]
            ),
            id="tool input not an object",
        ),
        pytest.param(_body(tools=[{"type": "bash_20250124", "name": "bash"}]), id="a server tool"),
        pytest.param(_body(system=[{"type": "image", "source": {}}]), id="an image as system"),
        pytest.param(_body(stream="yes"), id="stream not a boolean"),
        pytest.param(
            _body(
                messages=[{"role": "user", "content": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}]
            ),
            id="deep nesting",
        ),
    ],
)
async def test_malformed_bodies_are_anthropic_400s_and_reach_no_provider(
    gateway: Served, body: bytes
) -> None:
    response = await _post(gateway, [api_key()], body)
    assert_anthropic_error(response, 400, "invalid_request_error")
    assert gateway.upstream.received == []
    assert gateway.lineage.lineage()[-1].api == "messages"


async def test_count_tokens_refuses_a_bad_key_and_a_bad_body_in_anthropic_s_shape(
    gateway: Served,
) -> None:
    path = PATH + "/count_tokens"
    refused = await _post(gateway, [api_key("gk_" + MARK)], _body(max_tokens=None), path)
    assert_anthropic_error(refused, 401, "authentication_error")
    malformed = await _post(gateway, [api_key()], b"{" + MARK.encode(), path)
    assert_anthropic_error(malformed, 400, "invalid_request_error")


async def test_pii_in_every_text_block_is_redacted_before_the_provider(gateway: Served) -> None:
    body = _body(
        system=[{"type": "text", "text": f"escalate to {EMAIL}"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": f"mail {EMAIL}"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "crm", "input": {"to": EMAIL}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": f"owner {EMAIL}"}
                ],
            },
        ],
    )
    response = await _post(gateway, [api_key()], body)
    assert response.status == 200, response.body
    received = json.dumps(gateway.upstream.received)
    assert EMAIL not in received
    assert received.count("[REDACTED:EMAIL]") == 4
    record = gateway.lineage.lineage()[-1]
    assert record.api == "messages"
    assert EMAIL.encode() not in response.body
