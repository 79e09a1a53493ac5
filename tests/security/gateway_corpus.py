"""The growing corpus of hostile requests for the gateway and the query API: raw HTTP the
parser must refuse, malformed credentials, wrong field types and bad traceparents. Each
entry is a pytest.param with an id saying what the attack is."""

from __future__ import annotations

import pytest

from tests.security.gateway_fixtures import MARK, request

# --- What aiohttp's HTTP parser must refuse, before any app code ---------------------------

MANY_HEADERS = [f"X-Filler-{i}: {MARK}".encode() for i in range(150)]
PARSER_CORPUS = [
    pytest.param(
        request("GET", "/ping", MANY_HEADERS), 431, "request_headers_too_large", id="150 headers"
    ),
    pytest.param(
        request("GET", "/ping", [b"X-Big: " + MARK.encode() * 3_000]),
        431,
        "request_headers_too_large",
        id="one 27 KB header",
    ),
    pytest.param(
        request("GET", "/ping", [MARK.encode() * 3_000 + b": x"]),
        431,
        "request_headers_too_large",
        id="27 KB header name",
    ),
    pytest.param(
        request("GET", "/ping?q=" + MARK * 8_000),
        414,
        "request_uri_too_long",
        id="72 KB request line",
    ),
    pytest.param(b"GARBAGE\r\n\r\n", 400, "malformed_request", id="not a request line"),
    pytest.param(
        b"GET /ping HTTP/9.9\r\nHost: x\r\n\r\n",
        400,
        "malformed_request",
        id="unknown HTTP version",
    ),
    pytest.param(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK.encode() + b"\r\n\r\n",
        400,
        "malformed_request",
        id="TLS hello on the plain port",
    ),
    pytest.param(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "malformed_request", id="HTTP/2 preface"
    ),
    pytest.param(
        request("GET", "/ping", [b"Bad Header: " + MARK.encode()]),
        400,
        "malformed_request",
        id="space in a header name",
    ),
    pytest.param(
        request("GET", "/ping", [b"X-Nul: a\x00" + MARK.encode()]),
        400,
        "malformed_request",
        id="NUL in a header value",
    ),
    pytest.param(
        request("GET", "/ping", [b"X-Folded: a", b" " + MARK.encode()]),
        400,
        "malformed_request",
        id="obsolete line folding",
    ),
    pytest.param(
        b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        400,
        "malformed_request",
        id="Content-Length not a number",
    ),
    pytest.param(
        b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "malformed_request",
        id="two Content-Lengths (smuggling)",
    ),
    pytest.param(
        b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "malformed_request",
        id="Content-Length with chunked (smuggling)",
    ),
    pytest.param(
        b"GET /ping HTTP/1.1\r\nHost: x\nX-Bare: lf\r\n\r\n",
        400,
        "malformed_request",
        id="bare LF line ending",
    ),
]


# --- Malformed credentials: 401, JSON, recorded, never echoed or logged --------------------

BAD_CREDENTIALS = [
    pytest.param(b"Authorization: Bearer gk_\xff\xfe" + MARK.encode(), id="non-UTF-8 bytes"),
    pytest.param(("Authorization: Bearer gk_é" + MARK).encode(), id="non-ASCII UTF-8"),
    pytest.param(b"Authorization: Bearer gk_a\t" + MARK.encode(), id="tab inside the token"),
    pytest.param(b"Authorization: Bearer gk_a " + MARK.encode(), id="space inside the token"),
    pytest.param(b"Authorization: Bearer " + MARK.encode() * 100, id="900 characters"),
    pytest.param(b"Authorization: Bearer ", id="empty Bearer token"),
    pytest.param(b"Authorization: Bearer", id="scheme only"),
    pytest.param(b"Authorization: Token " + MARK.encode(), id="wrong scheme"),
    pytest.param(b"Authorization: Basic \xff\xfe" + MARK.encode(), id="Basic with raw bytes"),
    pytest.param(b"Authorization: " + MARK.encode(), id="no scheme"),
]


# --- Wrong types: 400 naming the field, recorded, nothing sent upstream --------------------

WRONG_TYPES = [
    pytest.param(
        {"messages": [{"role": "user", "content": 42}]},
        "messages[0].content",
        id="content a number",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": {"text": "hi"}}]},
        "messages[0].content",
        id="content an object",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [42]}]},
        "messages[0].content[0]",
        id="content part a number",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
        id="text part without text",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
        id="text part with a number",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "hack", "x": "y"}]}]},
        "messages[0].content[0].type",
        id="unknown part type",
    ),
    pytest.param(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "http://x"}]}
            ]
        },
        "messages[0].content[0].image_url",
        id="image_url not an object",
    ),
    pytest.param({"messages": [{"content": "hi"}]}, "messages[0].role", id="no role"),
    pytest.param(
        {"messages": [{"role": 7, "content": "hi"}]}, "messages[0].role", id="role a number"
    ),
    pytest.param(
        {"messages": [{"role": "user"}]}, "messages[0].content", id="user message without content"
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi", "name": 5}]},
        "messages[0].name",
        id="name a number",
    ),
    pytest.param(
        {"messages": [{"role": "assistant", "content": None, "tool_calls": {}}]},
        "messages[0].tool_calls",
        id="tool_calls an object",
    ),
    pytest.param(
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": {"a": 1}},
                        }
                    ],
                }
            ]
        },
        "messages[0].tool_calls[0].function.arguments",
        id="arguments an object",
    ),
    pytest.param(
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c1"}]}]},
        "messages[0].tool_calls[0].function",
        id="tool call without function",
    ),
    pytest.param(
        {"messages": [{"role": "tool", "content": "42"}]},
        "messages[0].tool_call_id",
        id="tool result without tool_call_id",
    ),
    pytest.param(
        {
            "messages": [
                {"role": "user", "content": "hi", "x": [[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}
            ]
        },
        "messages[0]",
        id="nesting 20 deep",
    ),
    pytest.param(
        {"messages": {"role": "user", "content": "hi"}}, "messages", id="messages an object"
    ),
    pytest.param({"messages": "hi"}, "messages", id="messages a string"),
    pytest.param({"user": MARK * 60_000}, "user", id="a 540 KB user"),
    pytest.param({"user": 12}, "user", id="user a number"),
    pytest.param({"user": ["a"]}, "user", id="user a list"),
    pytest.param({"model": MARK * 60_000}, "model", id="a 540 KB model"),
    pytest.param({"model": ["sim-small"]}, "model", id="model a list"),
    pytest.param({"max_tokens": -1}, "max_tokens", id="max_tokens negative"),
    pytest.param({"max_tokens": "100"}, "max_tokens", id="max_tokens a string"),
    pytest.param({"max_tokens": 2**40}, "max_tokens", id="max_tokens 2^40"),
    pytest.param(
        {"max_completion_tokens": 10, "max_tokens": "x"},
        "max_tokens",
        id="max_tokens bad beside a good max_completion_tokens",
    ),
    pytest.param({"stream": "true"}, "stream", id="stream a string"),
    pytest.param({"stream": 1}, "stream", id="stream a number"),
    pytest.param({"temperature": "hot"}, "temperature", id="temperature a string"),
    pytest.param({"top_p": [1]}, "top_p", id="top_p a list"),
    pytest.param({"stop": 3}, "stop", id="stop a number"),
    pytest.param({"stop": ["a", 3]}, "stop", id="stop with a number"),
    pytest.param({"n": "2"}, "n", id="n a string"),
    pytest.param({"seed": 1.5}, "seed", id="seed a fraction"),
]


BAD_TRACEPARENTS = [
    pytest.param(b"not-a-traceparent", id="not W3C"),
    pytest.param(b"00-" + b"g" * 32 + b"-" + b"0" * 15 + b"1-01", id="not hex"),
    pytest.param(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", id="upper case"),
    pytest.param(b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", id="all-zero trace id"),
    pytest.param(b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01", id="zero span"),
    pytest.param(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id="version ff"),
    pytest.param(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736\xff\xfe-00f067aa0ba902b7-01", id="non-UTF-8 bytes"
    ),
    pytest.param(
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + MARK.encode(),
        id="trailing field",
    ),
]
