"""Validating chat-completion requests and the OpenAI response shapes the gateway writes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import errors
from gateway.chat import DONE_EVENT, chunk_event, completion_body, parse_chat_request
from gateway.errors import GatewayError
from gateway.providers.base import Usage


def body(**fields: Any) -> bytes:
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    request.update(fields)
    return json.dumps(request).encode()


def test_a_valid_request_is_parsed() -> None:
    raw = body(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Summarise the ledger."},
        ],
        max_tokens=256,
        temperature=0,
        stream=True,
        user="user-42",
        seed=7,
        top_p=0.9,
        response_format={"type": "json_object"},
    )
    chat = parse_chat_request(raw, max_messages=8)
    assert chat.model == "gpt-4o-mini"
    assert [m["role"] for m in chat.messages] == ["system", "user"]
    assert chat.max_tokens == 256
    assert chat.temperature == 0.0
    assert chat.stream is True
    assert chat.user == "user-42"
    assert chat.extra == {"seed": 7, "top_p": 0.9}


def test_defaults_when_optional_fields_are_absent() -> None:
    chat = parse_chat_request(body(), max_messages=8)
    assert chat.stream is False
    assert chat.max_tokens is None
    assert chat.temperature is None
    assert chat.user is None
    assert chat.extra == {}


def test_max_completion_tokens_is_the_newer_name_of_max_tokens() -> None:
    chat = parse_chat_request(body(max_completion_tokens=64, max_tokens=512), max_messages=8)
    assert chat.max_tokens == 64


def test_exactly_max_messages_is_accepted() -> None:
    messages = [{"role": "user", "content": str(i)} for i in range(3)]
    assert len(parse_chat_request(body(messages=messages), max_messages=3).messages) == 3


def test_invalid_json_is_its_own_error() -> None:
    with pytest.raises(GatewayError) as raised:
        parse_chat_request(b'{"model": "gpt-4o-mini", "messages": [', max_messages=8)
    assert raised.value.kind is errors.INVALID_JSON
    assert raised.value.kind.code == "invalid_json"
    assert raised.value.kind.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="array body"),
        pytest.param(b'"hello"', id="string body"),
        pytest.param(b"null", id="null body"),
        pytest.param(json.dumps({"messages": [{"role": "user"}]}).encode(), id="missing model"),
        pytest.param(body(model=""), id="empty model"),
        pytest.param(body(model=4), id="model not a string"),
        pytest.param(body(messages=[]), id="empty messages"),
        pytest.param(body(messages={"role": "user"}), id="messages not a list"),
        pytest.param(json.dumps({"model": "m"}).encode(), id="missing messages"),
        pytest.param(body(messages=[{"role": "user"}] * 4), id="too many messages"),
        pytest.param(body(messages=[{"role": "robot", "content": "x"}]), id="bad role"),
        pytest.param(body(messages=[{"content": "x"}]), id="missing role"),
        pytest.param(body(messages=["hello"]), id="message not an object"),
        pytest.param(body(max_tokens=0), id="zero max_tokens"),
        pytest.param(body(max_tokens=-5), id="negative max_tokens"),
        pytest.param(body(max_tokens="100"), id="string max_tokens"),
        pytest.param(body(max_tokens=1.5), id="fractional max_tokens"),
        pytest.param(body(max_tokens=True), id="bool max_tokens"),
        pytest.param(body(max_completion_tokens=False), id="bool max_completion_tokens"),
        pytest.param(body(temperature="hot"), id="string temperature"),
        pytest.param(body(temperature=True), id="bool temperature"),
        pytest.param(body(stream="true"), id="string stream"),
        pytest.param(body(stream=1), id="int stream"),
    ],
)
def test_invalid_requests_are_refused_with_invalid_request(raw: bytes) -> None:
    with pytest.raises(GatewayError) as raised:
        parse_chat_request(raw, max_messages=3)
    assert raised.value.kind is errors.INVALID_REQUEST
    assert raised.value.kind.code == "invalid_request"
    assert raised.value.kind.status == 400
    assert raised.value.message


def test_error_body_is_openai_shaped() -> None:
    parsed = json.loads(errors.error_body(errors.INVALID_REQUEST, "'model' is required"))
    assert parsed == {
        "error": {
            "message": "'model' is required",
            "type": "invalid_request_error",
            "code": "invalid_request",
            "param": None,
        }
    }


def sse_payload(event: bytes) -> dict[str, Any]:
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    payload: dict[str, Any] = json.loads(event[len(b"data: ") : -2])
    return payload


def test_content_chunk_is_a_chat_completion_chunk() -> None:
    chunk = sse_payload(chunk_event("chatcmpl-1", "gpt-4o-mini", content="Hel", role="assistant"))
    assert chunk["id"] == "chatcmpl-1"
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["model"] == "gpt-4o-mini"
    assert isinstance(chunk["created"], int)
    assert chunk["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "Hel"},
            "finish_reason": None,
            "logprobs": None,
        }
    ]
    assert "usage" not in chunk


def test_finish_chunk_has_an_empty_delta_and_the_reason() -> None:
    chunk = sse_payload(chunk_event("chatcmpl-1", "gpt-4o-mini", finish_reason="length"))
    assert chunk["choices"][0]["delta"] == {}
    assert chunk["choices"][0]["finish_reason"] == "length"


def test_usage_chunk_has_no_choices_and_a_total() -> None:
    chunk = sse_payload(chunk_event("chatcmpl-1", "gpt-4o-mini", usage=Usage(120, 35)))
    assert chunk["choices"] == []
    assert chunk["usage"] == {"prompt_tokens": 120, "completion_tokens": 35, "total_tokens": 155}


def test_done_event_ends_the_stream() -> None:
    assert DONE_EVENT == b"data: [DONE]\n\n"


def test_completion_body_is_a_chat_completion() -> None:
    parsed = json.loads(
        completion_body("chatcmpl-2", "gpt-4o-mini", "The ledger balances.", "stop", Usage(9, 4))
    )
    assert parsed["id"] == "chatcmpl-2"
    assert parsed["object"] == "chat.completion"
    assert parsed["model"] == "gpt-4o-mini"
    assert isinstance(parsed["created"], int)
    assert parsed["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The ledger balances."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert parsed["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
