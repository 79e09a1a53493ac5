"""The caller's side of a reply (gateway/replies.py): a provider's whole reply or chunks
relayed with the gateway's id and model, the usage chunk only when asked for, the ends
of choices held until the call is recorded, and text answers written in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.providers.base import Completion, Delta, UpstreamError, Usage
from gateway.providers.sim_shapes import sample
from gateway.replies import ChunkRelay, link_headers, reply_body, upstream_failure

REPLY_ID = "chatcmpl-0190c0de-0000-7000-8000-000000000001"


def chunk(choices: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "id": "up-1",
        "object": "chat.completion.chunk",
        "model": "up-model",
        "choices": choices,
        **fields,
    }


def events(sent: list[bytes]) -> list[Any]:
    return [
        "[DONE]" if e == b"data: [DONE]\n\n" else orjson.loads(e.removeprefix(b"data: "))
        for e in sent
    ]


def relayed(include_usage: bool) -> tuple[list[Any], list[Any]]:
    """(events sent while streaming, events of the tail) of an OpenAI-shaped stream."""
    relay = ChunkRelay(REPLY_ID, "asked", include_usage)
    role = chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}], usage=None)
    text = chunk([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], usage=None)
    end = chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=None)
    usage = chunk([], usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
    sent = []
    for piece, finish, reported in (
        (role, None, None),
        (text, None, None),
        (end, "stop", None),
        (usage, None, Usage(3, 1)),
    ):
        sent += relay.events(Delta("", finish, reported, piece))
    return events(sent), events(relay.tail(Usage(3, 1)))


def test_chunks_keep_every_field_but_id_and_model() -> None:
    streaming, _ = relayed(include_usage=False)
    assert [e["id"] for e in streaming] == [REPLY_ID, REPLY_ID]
    assert [e["model"] for e in streaming] == ["asked", "asked"]
    assert streaming[1]["choices"] == [
        {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}
    ]


def test_without_include_usage_no_chunk_has_empty_choices_nor_a_usage_key() -> None:
    streaming, tail = relayed(include_usage=False)
    chunks = [e for e in streaming + tail if e != "[DONE]"]
    assert all(e["choices"] for e in chunks)
    assert all("usage" not in e for e in chunks)
    assert tail[-1] == "[DONE]"


def test_with_include_usage_the_upstream_usage_chunk_comes_last() -> None:
    _, tail = relayed(include_usage=True)
    assert tail[-2]["choices"] == []
    assert tail[-2]["usage"]["prompt_tokens"] == 3
    assert tail[-2]["id"] == REPLY_ID


def test_the_end_of_a_choice_is_held_for_the_tail() -> None:
    streaming, tail = relayed(include_usage=False)
    assert all(c["finish_reason"] is None for e in streaming for c in e["choices"])
    assert tail[0]["choices"][0]["finish_reason"] == "stop"


def test_a_text_answer_is_written_in_openai_shape_with_usage_only_when_asked() -> None:
    for include_usage in (False, True):
        relay = ChunkRelay(REPLY_ID, "claude", include_usage)
        sent = events(relay.events(Delta("Hello")) + relay.events(Delta("", "length", Usage(5, 1))))
        tail = events(relay.tail(Usage(5, 1)))
        assert sent[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert sent[1]["choices"][0]["delta"] == {"content": "Hello"}
        assert tail[0]["choices"][0]["finish_reason"] == "length"
        usage_chunks = [e for e in tail if e != "[DONE]" and e["choices"] == []]
        assert len(usage_chunks) == int(include_usage)
        assert tail[-1] == "[DONE]"


def test_a_reply_is_whole_with_the_gateways_id_and_model_and_usage_when_missing() -> None:
    reply = {"id": "up", "model": "up-model", "choices": [{"index": 0, "x": 1}], "new": [1]}
    body = orjson.loads(
        reply_body(Completion("", "stop", None, reply), REPLY_ID, "asked", Usage(2, 3))
    )
    assert body == {
        **reply,
        "id": REPLY_ID,
        "model": "asked",
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }


def test_link_headers_name_the_event_and_the_span() -> None:
    headers = link_headers("ev-1", "a" * 32, "b" * 16)
    assert headers == {
        "X-Govledger-Event-Id": "ev-1",
        "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
    }


def test_an_upstream_refusal_names_its_parameter_and_other_failures_are_502() -> None:
    invalid = {"message": "bad value", "param": "reasoning_effort"}
    refused = upstream_failure(UpstreamError(400, "http_4xx", "x", invalid=invalid))
    assert (refused.kind.status, refused.param) == (400, "reasoning_effort")
    failed = upstream_failure(UpstreamError(503, "http_5xx", "down"))
    assert (failed.kind.status, failed.param) == (502, None)


def test_the_sim_samples_values_that_fit_a_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "kind": {"enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "child": {"$ref": "#/$defs/Child"},
            "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "$defs": {"Child": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    value = sample(schema, ["ledger", "audit"])
    assert value == {
        "name": "audit",
        "count": len("audit"),
        "kind": "a",
        "tags": ["ledger"],
        "child": {"ok": False},
        "maybe": len("ledger") + 0.5,
    }
    loop = {"$ref": "#"}
    assert sample(loop, ["x"]) is None  # a self-reference ends at the depth bound
