"""PII redaction covers every text that reaches a provider: `content` (a string or text
parts), `name`, tool-call arguments, tool results, system and developer prompts, and any
field the gateway does not know; ids and binary payloads are left alone. Each case is
checked from the provider's side: the request body the upstream received.

The gateway runs in-process (tests/security/gateway_fixtures.py) under a pack whose
pii-detector redacts; the provider is the real OpenAI-compatible adapter over an httpx
MockTransport that keeps what it received."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.component.support import CAPTURE_MODEL
from tests.security.gateway_fixtures import (
    JSON,
    Served,
    bearer,
    chat_body,
    request,
    running_gateway,
    send,
)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    async with running_gateway(tmp_path, with_pii_pack=True) as served:
        yield served


EMAIL = "dana.doe@example.com"
CARD = "4111 1111 1111 1111"
WHERE_PII_HIDES = [
    pytest.param(
        [{"role": "user", "content": f"mail {EMAIL}"}],
        lambda m: m[0]["content"],
        id="user content string",
    ),
    pytest.param(
        [{"role": "user", "content": [{"type": "text", "text": f"card {CARD}"}]}],
        lambda m: m[0]["content"][0]["text"],
        id="user content text part",
    ),
    pytest.param(
        [{"role": "system", "content": f"escalate to {EMAIL}"}, {"role": "user", "content": "hi"}],
        lambda m: m[0]["content"],
        id="system prompt",
    ),
    pytest.param(
        [
            {"role": "developer", "content": [{"type": "text", "text": EMAIL}]},
            {"role": "user", "content": "hi"},
        ],
        lambda m: m[0]["content"][0]["text"],
        id="developer prompt parts",
    ),
    pytest.param(
        [{"role": "user", "name": EMAIL, "content": "hi"}],
        lambda m: m[0]["name"],
        id="message name",
    ),
    pytest.param(
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "send_mail", "arguments": json.dumps({"to": EMAIL})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "sent"},
        ],
        lambda m: m[1]["tool_calls"][0]["function"]["arguments"],
        id="tool-call arguments",
    ),
    pytest.param(
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": json.dumps({"card": CARD})},
            },
        ],
        lambda m: m[1]["function_call"]["arguments"],
        id="legacy function_call",
    ),
    pytest.param(
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "crm", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": f"owner {EMAIL}"},
        ],
        lambda m: m[2]["content"],
        id="tool result string",
    ),
    pytest.param(
        [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "crm", "arguments": "{}"},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_9",
                "content": [{"type": "text", "text": f"card {CARD}"}],
            },
        ],
        lambda m: m[2]["content"][0]["text"],
        id="tool result parts",
    ),
    pytest.param(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": EMAIL}]},
        ],
        lambda m: m[1]["content"][0]["refusal"],
        id="assistant refusal part",
    ),
    pytest.param(
        [{"role": "user", "content": "hi", "metadata": {"note": EMAIL}}],
        lambda m: m[0]["metadata"]["note"],
        id="a field the gateway does not know",
    ),
]


@pytest.mark.parametrize(("messages", "at"), WHERE_PII_HIDES)
async def test_pii_is_redacted_wherever_it_reaches_the_provider(
    gateway: Served, messages: list[dict[str, Any]], at: Callable[[list[dict[str, Any]]], Any]
) -> None:
    raw = request(
        "POST",
        "/v1/chat/completions",
        [bearer(), JSON],
        chat_body(model=CAPTURE_MODEL, messages=messages),
    )
    response = await send(gateway.host, gateway.port, raw)
    assert response.status == 200, response.body
    (sent,) = gateway.upstream.received
    wire = orjson.dumps(sent).decode()
    assert EMAIL not in wire
    assert CARD not in wire
    assert "[REDACTED:" in at(sent["messages"])
    (record,) = gateway.lineage.lineage()
    assert [(g.name, g.action) for g in record.guardrails_triggered] == [("pii-detector", "redact")]


async def test_redaction_leaves_ids_and_binary_payloads_alone(gateway: Served) -> None:
    image = "data:image/png;base64," + "QUJD" * 64 + "4111111111111111"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_4111111111111111",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_4111111111111111", "content": "none"},
    ]
    raw = request(
        "POST",
        "/v1/chat/completions",
        [bearer(), JSON],
        chat_body(model=CAPTURE_MODEL, messages=messages),
    )
    response = await send(gateway.host, gateway.port, raw)
    assert response.status == 200, response.body
    (sent,) = gateway.upstream.received
    assert sent["messages"] == messages
