"""The pure parts of the HTTP edge: reading a presented credential, classifying what
aiohttp's parser refused, the JSON error shape, and which texts of a message the policy
chain reads."""

from __future__ import annotations

import json

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader, LineTooLong

from gateway.chat import MAX_MESSAGE_DEPTH, parse_chat_request, parse_traceparent
from gateway.errors import ALL_KINDS, GatewayError
from gateway.policy.chain import CallFacts, evaluate, texts
from gateway.policy.pack import parse_pack
from schemas import http_errors
from schemas.auth import MAX_SECRET_CHARS, MalformedCredentialError, bearer_token, check_secret


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, ""),
        ("", ""),
        ("Basic Zm9vOmJhcg==", ""),
        ("Token abc", ""),
        ("Bearer gk_abc", "gk_abc"),
        ("bearer gk_abc", "gk_abc"),
        ("BEARER  gk_abc ", "gk_abc"),
        ("Bearer " + "a" * MAX_SECRET_CHARS, "a" * MAX_SECRET_CHARS),
    ],
)
def test_a_bearer_token_is_read_or_left_to_another_scheme(header: str | None, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer gk_\udcff\udcfe",  # how aiohttp hands over bytes that are not UTF-8
        "Bearer gk_é",
        "Bearer gk_\x00",
        "Bearer gk_\x1b[31m",
        "Bearer gk_\x7f",
        "Bearer gk_a\tb",
        "Bearer gk_a b",
        "Bearer " + "a" * (MAX_SECRET_CHARS + 1),
    ],
)
def test_a_malformed_bearer_token_is_refused_without_quoting_it(header: str) -> None:
    with pytest.raises(MalformedCredentialError) as raised:
        bearer_token(header)
    assert header[7:] not in str(raised.value) or not header[7:].strip()


def test_every_visible_ascii_character_may_be_in_a_secret() -> None:
    visible = "".join(chr(c) for c in range(0x21, 0x7F))
    assert check_secret(visible) == visible


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (BadHttpMessage("Too many headers received"), 400, "request_headers_too_large"),
        (LineTooLong(b"x" * 100, 8190), 400, "request_headers_too_large"),
        (LineTooLong(b"/path", 65537), 400, "request_uri_too_long"),
        (InvalidHeader(b"Bad Header"), 400, "malformed_request"),
        (BadStatusLine("GARBAGE"), 400, "malformed_request"),
        (None, 500, "internal_error"),
        (None, 504, "timeout"),
        (RuntimeError("bug"), 500, "internal_error"),
    ],
)
def test_parser_errors_are_classified_by_what_went_wrong(
    exc: Exception, status: int, code: str
) -> None:
    assert http_errors.parser_error_kind(exc, status, max_line_size=65537).code == code


def test_parser_limits_keep_the_request_line_and_a_header_apart() -> None:
    args = http_errors.handler_args(max_header_bytes=8192, max_headers=10, max_url_bytes=8192)
    assert args["max_line_size"] != args["max_field_size"]
    assert args["max_headers"] == 10


def test_every_error_code_is_unique_and_4xx_types_are_not_server_errors() -> None:
    codes = [kind.code for kind in ALL_KINDS]
    assert len(codes) == len(set(codes))
    for kind in ALL_KINDS:
        assert (kind.type == "server_error") == (kind.status >= 500 and kind.status != 502), kind


def test_the_error_body_is_openai_shaped_with_the_param() -> None:
    body = json.loads(http_errors.error_body("bad", "invalid_request", status=400, param="user"))
    assert body == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "code": "invalid_request",
            "param": "user",
        }
    }
    assert json.loads(http_errors.error_body("no", "x", status=401))["error"]["type"] == (
        "authentication_error"
    )


MESSAGE = {
    "role": "assistant",
    "name": "bot-name",
    "content": [{"type": "text", "text": "part text"}, {"type": "refusal", "refusal": "nope"}],
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "args text"}'},
        }
    ],
    "extra_field": {"note": "unknown text"},
}


def test_the_chain_reads_every_text_but_ids_and_enums() -> None:
    assert texts(MESSAGE) == [
        "bot-name",
        "part text",
        "nope",
        "lookup",
        '{"q": "args text"}',
        "unknown text",
    ]


def test_a_data_url_is_a_binary_payload_and_an_http_url_is_text() -> None:
    message = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
            {"type": "image_url", "image_url": {"url": "https://x.example/?to=a@b.example"}},
        ],
    }
    assert texts(message) == ["https://x.example/?to=a@b.example"]


def test_a_content_filter_also_reads_tool_call_arguments() -> None:
    pack = parse_pack(
        "name: p\npolicies:\n  chain:\n    - name: content-filter\n"
        "      policy: {deny: [forbidden], action: block}\n"
    )
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "forbidden"}}
        ],
    }
    facts = CallFacts("search", "developer", None, [message], 0, 0)
    verdict = evaluate(pack, facts)
    assert verdict.refusal is not None
    assert verdict.refusal.reason == "content_blocked"


def test_a_message_nested_past_the_limit_is_refused_and_one_at_it_passes() -> None:
    def nested(depth: int) -> dict[str, object]:
        value: object = "leaf"
        for _ in range(depth - 1):
            value = [value]
        return {"role": "user", "content": "hi", "x": value}

    ok = {"model": "m", "messages": [nested(MAX_MESSAGE_DEPTH)]}
    assert parse_chat_request(json.dumps(ok).encode(), max_messages=4).messages
    deep = {"model": "m", "messages": [nested(MAX_MESSAGE_DEPTH + 1)]}
    with pytest.raises(GatewayError) as raised:
        parse_chat_request(json.dumps(deep).encode(), max_messages=4)
    assert raised.value.param == "messages[0]"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (None, None),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        ),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
        ("", None),
    ],
)
def test_traceparent_is_read_only_in_w3c_form(
    header: str | None, parsed: tuple[str, str] | None
) -> None:
    assert parse_traceparent(header) == parsed
