"""What OpenAI refuses in a chat request, refused the same way (gateway/chat_params.py):
a 400 `invalid_request` naming the parameter; and a body's shape bounded anywhere."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway import errors
from gateway.chat import parse_chat_request
from gateway.chat_params import BodyLimits
from gateway.errors import GatewayError

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def parse(**fields: Any) -> Any:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return parse_chat_request(orjson.dumps(body), max_messages=8, limits=BodyLimits(8, 16, 4))


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"temperature": 5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"n": 1.5}, "n"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tools": {}}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"logit_bias": {"abc": 1}}, "logit_bias.abc"),
    ({"logit_bias": {"50256": -101}}, "logit_bias.50256"),
    ({"seed": "1"}, "seed"),
    ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
    ({"n": 5}, "n"),
    ({"future": [[[[[[[[1]]]]]]]]}, "future[0][0][0][0][0][0][0]"),
    ({"future": list(range(17))}, "future"),
]


@pytest.mark.parametrize(("fields", "param"), INVALID)
def test_what_openai_refuses_is_a_400_naming_the_parameter(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayError) as raised:
        parse(**fields)
    assert raised.value.kind is errors.INVALID_REQUEST
    assert raised.value.param == param


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2},
        {"temperature": 2.0, "n": 4, "logprobs": True, "top_logprobs": 20},
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
        {"tools": [{"type": "custom", "custom": {"name": "grammar"}}], "tool_choice": "required"},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "W", "schema": {}}}},
        {"stream": True, "stream_options": {"include_usage": False}},
        {"logit_bias": {"50256": -100}, "stop": ["a", "b", "c", "d"], "seed": -1},
        {"future_param": {"any": ["shape", {"within": "bounds"}]}},
    ],
)
def test_what_openai_accepts_is_accepted_and_kept_in_the_body(fields: dict[str, Any]) -> None:
    chat = parse(**fields)
    assert {k: chat.body[k] for k in fields} == fields


def test_the_usage_chunk_is_asked_for_only_by_include_usage() -> None:
    assert parse(stream=True, stream_options={"include_usage": True}).include_usage is True
    assert parse(stream=True).include_usage is False
    assert parse(n=3).choices == 3


def test_after_the_policy_chain_the_body_holds_only_what_it_left() -> None:
    chat = parse(tools=[WEATHER_TOOL], user="jane@example.com")
    scanned = chat.policy_messages()
    assert chat.after_policy(scanned, scanned) is chat
    redacted = [{"role": "user", "content": "[EMAIL]"}, {**scanned[-1], "user": "[EMAIL]"}]
    after = chat.after_policy(scanned, redacted)
    assert after.messages == [{"role": "user", "content": "[EMAIL]"}]
    assert after.body["messages"] == after.messages
    assert (after.body["user"], after.body["tools"]) == ("[EMAIL]", [WEATHER_TOOL])
    assert "jane@example.com" not in repr(after.upstream_call("m"))
