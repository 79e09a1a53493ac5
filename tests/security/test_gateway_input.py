"""Hostile input at the HTTP edge: every malformed request gets a clear 4xx in the
documented JSON shape, a malformed credential is a 401 recorded in lineage (never the
secret), and wrong field types are 400s naming the field (corpus: gateway_corpus.py).

Servers run in-process on 127.0.0.1 (tests/security/gateway_fixtures.py): the real
aiohttp parser, routes, middlewares and gateway pipeline; lineage in a list; the provider
an httpx MockTransport behind the real OpenAI-compatible adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from schemas import codec
from tests.component.support import ADMIN_TOKEN, CAPTURE_MODEL
from tests.raw_http import RawResponse
from tests.security.gateway_corpus import (
    BAD_CREDENTIALS,
    BAD_TRACEPARENTS,
    PARSER_CORPUS,
    WRONG_TYPES,
)
from tests.security.gateway_fixtures import (
    JSON,
    MARK,
    SECRET,
    Served,
    assert_json_error,
    bearer,
    chat_body,
    request,
    running_gateway,
    running_query_api,
    send,
)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Served]:
    async with running_gateway(tmp_path, with_pii_pack=True) as served:
        yield served


@pytest.fixture
async def query(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    async with running_query_api(tmp_path / "sink") as address:
        yield address


@pytest.fixture(params=["gateway", "query"])
async def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, int, str]]:
    if request.param == "gateway":
        async with running_gateway(tmp_path) as served:
            yield served.host, served.port, "gateway"
    else:
        async with running_query_api(tmp_path) as (host, port):
            yield host, port, "query"


# --- What aiohttp's HTTP parser refuses, before any app code: both servers ----------------


@pytest.mark.parametrize(("raw", "status", "code"), PARSER_CORPUS)
async def test_the_parser_refuses_malformed_http_as_json(
    server: tuple[str, int, str], raw: bytes, status: int, code: str
) -> None:
    host, port, _ = server
    with structlog.testing.capture_logs() as logs:
        response = await send(host, port, raw)
    assert_json_error(response, status, code)
    assert MARK not in repr(logs)


# --- Routing and body errors, answered by aiohttp before our handlers: both servers -------


async def test_an_unknown_route_is_a_json_404(server: tuple[str, int, str]) -> None:
    host, port, _ = server
    assert_json_error(await send(host, port, request("GET", "/nowhere")), 404, "not_found")


async def test_a_long_unknown_path_is_a_404_that_does_not_echo_it_whole(
    server: tuple[str, int, str],
) -> None:
    host, port, _ = server
    response = await send(host, port, request("GET", "/" + "p" * 60_000))
    error = assert_json_error(response, 404, "not_found")
    assert len(response.body) < 1_000
    assert error["message"].startswith("no route GET /ppp")


async def test_a_wrong_method_is_a_json_405_with_allow(server: tuple[str, int, str]) -> None:
    host, port, name = server
    path = "/v1/models" if name == "gateway" else "/v1/me"
    response = await send(host, port, request("DELETE", path))
    error = assert_json_error(response, 405, "method_not_allowed")
    assert "DELETE" in error["message"]
    assert response.headers["allow"]


async def test_get_on_the_chat_route_is_a_json_405(gateway: Served) -> None:
    response = await send(gateway.host, gateway.port, request("GET", "/v1/chat/completions"))
    assert_json_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_a_wrong_method_on_the_admin_api_is_a_json_405(gateway: Served) -> None:
    raw = request(
        "GET", "/v1/admin/wallets/fund", [b"Authorization: Bearer " + ADMIN_TOKEN.encode()]
    )
    assert_json_error(await send(gateway.host, gateway.port, raw), 405, "method_not_allowed")


async def test_a_body_over_the_limit_is_a_json_413_recorded_in_lineage(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, max_body_bytes=1_000) as gateway:
        body = chat_body(messages=[{"role": "user", "content": "x" * 2_000}])
        raw = request("POST", "/v1/chat/completions", [bearer(), JSON], body)
        assert_json_error(await send(gateway.host, gateway.port, raw), 413, "request_too_large")
        assert [r.http_status for r in gateway.lineage.lineage()] == [413]


async def test_a_chunked_body_over_the_limit_is_a_json_413(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, max_body_bytes=1_000) as gateway:
        chunk = b"x" * 4_000
        raw = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + bearer()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}".encode()
            + b"\r\n"
            + chunk
            + b"\r\n0\r\n\r\n"
        )
        assert_json_error(await send(gateway.host, gateway.port, raw), 413, "request_too_large")


async def test_a_query_body_over_the_limit_is_a_json_413(query: tuple[str, int]) -> None:
    host, port = query
    raw = request("POST", "/", [b"Authorization: Bearer " + ADMIN_TOKEN.encode()], b"x" * 300_000)
    assert_json_error(await send(host, port, raw), 413, "request_too_large")


async def test_a_broken_chunked_body_is_a_json_400(gateway: Served) -> None:
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + bearer()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        + MARK.encode()
        + b"\r\n\r\n"
    )
    assert_json_error(await send(gateway.host, gateway.port, raw), 400, "malformed_request")


async def test_headers_over_the_total_limit_are_a_json_431_recorded_in_lineage(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path, max_header_bytes=4_096) as gateway:
        headers = [f"X-Part-{i}: {'y' * 900}".encode() for i in range(6)]
        raw = request("POST", "/v1/chat/completions", [bearer(), JSON, *headers], chat_body())
        response = await send(gateway.host, gateway.port, raw)
        assert_json_error(response, 431, "request_headers_too_large")
        (record,) = gateway.lineage.lineage()
        assert (record.http_status, record.tenant_id) == (431, "acme")
        admin = [b"Authorization: Bearer " + ADMIN_TOKEN.encode(), *headers]
        response = await send(gateway.host, gateway.port, request("GET", "/v1/admin/keys", admin))
        assert_json_error(response, 431, "request_headers_too_large")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"model": "sim-small", ', id="cut short"),
        pytest.param(
            b'{"model": "sim-small", "messages": [{"role": "user", "content": "\xff"}]}',
            id="not UTF-8",
        ),
        pytest.param(b'{"model": "sim-small", "user": "\\ud800"}', id="lone surrogate escape"),
        pytest.param(b'{"model": "sim-small", "max_tokens": 1e999}', id="infinity"),
        pytest.param(b"[" * 5_000 + b"]" * 5_000, id="nested 5000 deep"),
        pytest.param(b"", id="empty body"),
    ],
)
async def test_a_body_that_is_not_json_is_a_json_400_recorded_in_lineage(
    gateway: Served, body: bytes
) -> None:
    raw = request("POST", "/v1/chat/completions", [bearer(), JSON], body)
    assert_json_error(await send(gateway.host, gateway.port, raw), 400, "invalid_json")
    (record,) = gateway.lineage.lineage()
    assert (record.http_status, record.error_code, record.decision) == (
        400,
        "invalid_json",
        "rejected",
    )


AUTH_CODES = {"malformed_api_key", "missing_api_key", "invalid_api_key"}


def assert_401(response: RawResponse) -> None:
    assert response.status == 401, response.body
    error = assert_json_error(response, 401, response.json()["error"]["code"])
    assert error["code"] in AUTH_CODES
    assert error["type"] == "authentication_error"


@pytest.mark.parametrize("header", BAD_CREDENTIALS)
async def test_a_malformed_key_on_the_chat_route_is_a_recorded_401(
    gateway: Served, header: bytes
) -> None:
    raw = request("POST", "/v1/chat/completions", [header, JSON], chat_body())
    with structlog.testing.capture_logs() as logs:
        response = await send(gateway.host, gateway.port, raw)
    assert_401(response)
    (record,) = gateway.lineage.lineage()
    assert record.http_status == 401
    assert record.error_code == response.json()["error"]["code"]
    assert record.decision == "rejected"
    assert MARK.encode() not in codec.encode(record)
    assert MARK not in repr(logs)
    assert gateway.upstream.received == []


@pytest.mark.parametrize("header", BAD_CREDENTIALS)
@pytest.mark.parametrize("path", ["/v1/models", "/v1/admin/keys", "/v1/tokens"])
async def test_a_malformed_key_elsewhere_on_the_gateway_is_a_401(
    gateway: Served, header: bytes, path: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await send(gateway.host, gateway.port, request("GET", path, [header]))
    assert_401(response)
    assert MARK not in repr(logs)


@pytest.mark.parametrize(
    "header",
    [
        *BAD_CREDENTIALS,
        pytest.param(b"X-ClickHouse-Key: gk_\xff" + MARK.encode(), id="ClickHouse key header"),
        pytest.param(b"Authorization: Basic Z2s6\xc3\xa9", id="Basic, base64 of non-ASCII"),
        pytest.param(b"Authorization: Basic !!!" + MARK.encode(), id="Basic, not base64"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/me", "/?query=SELECT%201"])
async def test_a_malformed_key_on_the_query_api_is_a_401(
    query: tuple[str, int], header: bytes, path: str
) -> None:
    host, port = query
    with structlog.testing.capture_logs() as logs:
        response = await send(host, port, request("GET", path, [header]))
    assert_401(response)
    assert MARK not in repr(logs)


@pytest.mark.parametrize("control", [b"\x01", b"\x1b", b"\x7f", b"\r"])
async def test_a_control_character_in_a_key_is_refused_before_any_key_is_read(
    server: tuple[str, int, str], control: bytes
) -> None:
    """HTTP forbids control characters in header values (RFC 9110 5.5): the parser refuses
    the request as malformed, before any route or key is looked at."""
    host, port, _ = server
    header = b"Authorization: Bearer gk_" + control + MARK.encode()
    with structlog.testing.capture_logs() as logs:
        response = await send(host, port, request("GET", "/v1/models", [header]))
    assert_json_error(response, 400, "malformed_request")
    assert MARK not in repr(logs)


async def test_a_password_in_the_url_that_is_malformed_is_a_401(query: tuple[str, int]) -> None:
    host, port = query
    response = await send(host, port, request("GET", "/v1/me?password=%FF%01" + MARK))
    assert_401(response)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/admin/keys"])
async def test_two_authorization_headers_are_a_401_on_the_gateway(
    gateway: Served, path: str
) -> None:
    """A proxy in front may check one and the gateway read the other: refuse both."""
    headers = [bearer(), b"Authorization: Bearer " + ADMIN_TOKEN.encode(), JSON]
    method = "POST" if path.endswith("completions") else "GET"
    body = chat_body() if method == "POST" else b""
    response = await send(gateway.host, gateway.port, request(method, path, headers, body))
    assert_json_error(response, 401, "malformed_api_key")
    statuses = [record.http_status for record in gateway.lineage.lineage()]
    assert statuses == ([401] if method == "POST" else [])


async def test_two_authorization_headers_are_a_401_on_the_query_api(query: tuple[str, int]) -> None:
    host, port = query
    token = b"Authorization: Bearer " + ADMIN_TOKEN.encode()
    response = await send(host, port, request("GET", "/v1/me", [token, token]))
    assert_json_error(response, 401, "malformed_api_key")


async def test_two_traceparent_headers_are_a_400(gateway: Served) -> None:
    one = b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    raw = request("POST", "/v1/chat/completions", [bearer(), JSON, one, one], chat_body())
    error = assert_json_error(await send(gateway.host, gateway.port, raw), 400, "invalid_request")
    assert error["param"] == "traceparent"


def test_the_corpus_size_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    sizes = {
        "raw HTTP": len(PARSER_CORPUS),
        "credentials": len(BAD_CREDENTIALS),
        "wrong types": len(WRONG_TYPES),
        "traceparents": len(BAD_TRACEPARENTS),
    }
    with capsys.disabled():
        print("\ngateway input corpus: " + ", ".join(f"{n} {k}" for k, n in sizes.items()))
    assert min(sizes.values()) >= 8


async def test_the_bearer_scheme_is_case_insensitive(gateway: Served) -> None:
    header = b"Authorization: bearer " + SECRET.encode()
    response = await send(gateway.host, gateway.port, request("GET", "/v1/models", [header]))
    assert response.status == 200, response.body


@pytest.mark.parametrize(("fields", "param"), WRONG_TYPES)
async def test_a_wrong_type_is_a_400_naming_the_field(
    gateway: Served, fields: dict[str, Any], param: str
) -> None:
    raw = request("POST", "/v1/chat/completions", [bearer(), JSON], chat_body(**fields))
    response = await send(gateway.host, gateway.port, raw)
    error = assert_json_error(response, 400, "invalid_request")
    assert error["param"] == param
    assert f"'{param}'" in error["message"]
    (record,) = gateway.lineage.lineage()
    assert (record.http_status, record.error_code) == (400, "invalid_request")
    assert record.tenant_id == "acme"
    assert len(codec.encode(record)) < 4_096
    assert gateway.upstream.received == []


@pytest.mark.parametrize("value", BAD_TRACEPARENTS)
async def test_a_traceparent_that_is_not_w3c_hex_is_a_400(gateway: Served, value: bytes) -> None:
    raw = request(
        "POST", "/v1/chat/completions", [bearer(), JSON, b"traceparent: " + value], chat_body()
    )
    error = assert_json_error(await send(gateway.host, gateway.port, raw), 400, "invalid_request")
    assert error["param"] == "traceparent"
    (record,) = gateway.lineage.lineage()
    assert record.http_status == 400
    assert len(record.trace_id) == 32
    assert MARK.encode() not in codec.encode(record)


async def test_a_valid_traceparent_is_honoured(gateway: Served) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    header = f"traceparent: 00-{trace_id}-{span_id}-01".encode()
    raw = request("POST", "/v1/chat/completions", [bearer(), JSON, header], chat_body())
    response = await send(gateway.host, gateway.port, raw)
    assert response.status == 200, response.body
    (record,) = gateway.lineage.lineage()
    assert (record.trace_id, record.parent_span_id) == (trace_id, span_id)


async def test_a_well_typed_request_with_every_checked_field_passes(gateway: Served) -> None:
    body = chat_body(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No markdown."}]},
            {
                "role": "user",
                "name": "dana",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        ],
        user="user-42",
        max_tokens=16,
        max_completion_tokens=16,
        temperature=0.2,
        top_p=1,
        stop=["\n"],
        n=1,
        seed=7,
        stream=False,
        response_format={"type": "text"},
    )
    raw = request(
        "POST",
        "/v1/chat/completions",
        [bearer(), JSON],
        body.replace(b'"sim-small"', f'"{CAPTURE_MODEL}"'.encode()),
    )
    response = await send(gateway.host, gateway.port, raw)
    assert response.status == 200, response.body
    (sent,) = gateway.upstream.received
    assert sent["messages"] == orjson.loads(body)["messages"]
