"""Anthropic's Messages API ↔ chat completions (gateway.anthropic_shape, anthropic_stream,
anthropic_errors): each field translated both ways, anything untranslatable refused by
name, streamed deltas turned into Anthropic's events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.anthropic_errors import error_object, error_type
from gateway.anthropic_shape import message_body, to_chat_body
from gateway.anthropic_stream import MessagesRelay
from gateway.chat_params import body_limits
from gateway.credentials import presented_secret
from gateway.errors import GatewayError
from gateway.messages_endpoint import parse_messages
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Delta, UpstreamError, Usage
from gateway.providers.sim import SimProvider
from schemas.auth import MalformedCredentialError
from schemas.settings import GatewaySettings, load

TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG = "iVBORw0KGgo="


def test_a_full_request_becomes_the_equivalent_chat_completion() -> None:
    chat = to_chat_body(
        {
            "model": "m",
            "max_tokens": 100,
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather here?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "tu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "tu_1", "content": "21 C"},
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
            "tools": [TOOL],
            "tool_choice": {
                "type": "tool",
                "name": "get_weather",
                "disable_parallel_tool_use": True,
            },
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "metadata": {"user_id": "u-1"},
            "stream": True,
        }
    )
    assert chat == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "tu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tu_1", "content": "21 C"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
        ],
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": TOOL["input_schema"],
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "user": "u-1",
        "stream": True,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice_kinds_map_onto_openai_s(choice: dict[str, Any], expected: str) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    chat = to_chat_body({**body, "tools": [TOOL], "tool_choice": choice})
    assert chat["tool_choice"] == expected


def test_an_image_by_url_and_a_failed_tool_result_are_translated_not_dropped() -> None:
    chat = to_chat_body(
        {
            "model": "m",
            "max_tokens": 1,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "is_error": True,
                            "content": [{"type": "text", "text": "boom"}],
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    ],
                }
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "[tool error] boom"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
        },
    ]


BASE: dict[str, Any] = {
    "model": "m",
    "max_tokens": 1,
    "messages": [{"role": "user", "content": "x"}],
}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"top_k": 5}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"new_field": 1}, "new_field"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image"}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/tiff",
                                    "data": "x",
                                },
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].source.media_type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {}}],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a", "citations": [{"x": 1}]}],
                    }
                ]
            },
            "messages[0].content[0].citations",
        ),
        ({"metadata": {"user_id": "u", "other": 1}}, "metadata"),
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayError) as raised:
        to_chat_body({**BASE, **change})
    assert raised.value.kind.status == 400
    assert raised.value.param == param


def test_a_chat_completion_becomes_a_message_with_tool_use_blocks() -> None:
    reply = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    message = message_body(
        reply=reply, text="", finish_reason="stop", reply_id="msg_e", model="m", usage=Usage(10, 5)
    )
    assert message == {
        "id": "msg_e",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("odd", "end_turn"),
    ],
)
def test_finish_reasons_become_stop_reasons(finish: str, stop: str) -> None:
    message = message_body(
        reply=None, text="hi", finish_reason=finish, reply_id="i", model="m", usage=Usage(1, 1)
    )
    assert (message["stop_reason"], message["content"]) == (stop, [{"type": "text", "text": "hi"}])


def test_tool_arguments_that_are_not_a_json_object_are_a_bad_response() -> None:
    reply = {
        "choices": [
            {
                "message": {
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]
                }
            }
        ]
    }
    with pytest.raises(UpstreamError) as raised:
        message_body(
            reply=reply, text="", finish_reason="stop", reply_id="i", model="m", usage=Usage(0, 0)
        )
    assert raised.value.error_class == "bad_response"


def _events(raw: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in raw:
        head, data = event.decode().strip().split("\n")
        out.append((head.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None) -> Delta:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return Delta("", finish, None, chunk)


def test_streamed_text_and_tool_call_deltas_become_anthropic_events_in_order() -> None:
    relay = MessagesRelay("msg_e", "m", input_tokens=12)
    raw: list[bytes] = []
    for delta in (
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Checking"}),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        _chunk({}, "tool_calls"),
    ):
        raw += relay.events(delta)
    held = _events(raw)
    raw += relay.tail(Usage(12, 7))
    events = _events(raw)
    assert [kind for kind, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert len(held) == 7  # the last block's stop, message_delta and message_stop wait
    assert events[0][1]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Checking"}
    assert events[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert [e[1]["delta"]["partial_json"] for e in events[5:7]] == ['{"a":', "1}"]
    assert events[8][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[8][1]["usage"] == {"input_tokens": 12, "output_tokens": 7}


def test_a_translated_text_stream_and_an_empty_one_still_frame_a_message() -> None:
    relay = MessagesRelay("msg_e", "m", input_tokens=1)
    events = _events(
        relay.events(Delta("hi", None))
        + relay.events(Delta("", "length"))
        + relay.tail(Usage(1, 1))
    )
    assert [k for k, _ in events][-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    empty = _events(MessagesRelay("i", "m", 0).tail(Usage(0, 0)))
    assert [k for k, _ in empty] == ["message_start", "message_delta", "message_stop"]


def test_a_new_tool_call_without_a_name_is_a_bad_response() -> None:
    relay = MessagesRelay("i", "m", 0)
    with pytest.raises(UpstreamError):
        relay.events(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (499, "invalid_request_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_errors_take_anthropic_s_type_for_their_status(status: int, kind: str) -> None:
    assert error_type(status) == kind
    assert error_object(status, "m", "c") == {
        "type": "error",
        "error": {"type": kind, "message": "m", "code": "c"},
    }


def test_a_system_turn_amid_the_messages_stays_a_system_message() -> None:
    chat = to_chat_body(
        {
            **BASE,
            "messages": [
                *BASE["messages"],
                {"role": "system", "content": [{"type": "text", "text": "Now formal."}]},
            ],
        }
    )
    assert chat["messages"][-1] == {"role": "system", "content": "Now formal."}


async def test_a_request_with_tools_is_routed_to_the_anthropic_adapter_too() -> None:
    settings = load(GatewaySettings, environ={})
    limits = body_limits(settings)
    plain = parse_messages(orjson.dumps(BASE), settings, limits)
    with_tools = parse_messages(orjson.dumps({**BASE, "tools": [TOOL]}), settings, limits)
    adapter = AnthropicProvider(
        name="anthropic", api_key="k", base_url="http://a.test", timeout_s=1
    )
    sim = SimProvider(latency_ms=0, error_rate=0, chunk_tokens=1, completion_tokens=1)
    try:
        # The adapter carries tools back to Anthropic's terms (test_provider_anthropic_tools).
        assert (plain.served_by(adapter), with_tools.served_by(adapter)) == (True, True)
        assert with_tools.served_by(sim)
    finally:
        await adapter.close()


@pytest.mark.parametrize(
    ("headers", "presented"),
    [
        ([("x-api-key", "gk_a")], "gk_a"),
        ([("Authorization", "Bearer gk_a")], "gk_a"),
        ([("x-api-key", "gk_a"), ("Authorization", "Bearer gk_a")], "gk_a"),
        ([], ""),
    ],
)
def test_the_key_is_read_from_x_api_key_or_a_bearer_token(
    headers: list[tuple[str, str]], presented: str
) -> None:
    assert presented_secret(CIMultiDictProxy(CIMultiDict(headers)), "/v1/messages") == presented


def test_x_api_key_is_read_on_anthropic_s_routes_only() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict([("x-api-key", "gk_a"), ("Authorization", "Bearer gk_b")])
    )
    assert presented_secret(headers, "/v1/chat/completions") == "gk_b"


@pytest.mark.parametrize(
    "headers",
    [
        [("x-api-key", "gk_a"), ("x-api-key", "gk_a")],
        [("x-api-key", "gk_a"), ("Authorization", "Bearer gk_b")],
        [("x-api-key", " ")],
        [("x-api-key", "gk a")],
    ],
)
def test_an_ambiguous_or_malformed_key_is_refused_not_picked(
    headers: list[tuple[str, str]],
) -> None:
    with pytest.raises(MalformedCredentialError) as raised:
        presented_secret(CIMultiDictProxy(CIMultiDict(headers)), "/v1/messages/count_tokens")
    assert "gk_" not in str(raised.value)
