"""The sim provider's answers on OpenAI's Responses API (`/v1/responses`), decided from the
caller's body alone (same body, same answer), in the shapes of OpenAI's API reference: a
`response` whose output is a message of text (JSON fitting `text.format` when it asks for
JSON) or a `function_call` item when tools are given (the tool `tool_choice` names; the
first with `required`; with `auto` the first unless the last input item is a function's
output, so a round trip ends in an answer), and the same answer as the stream of
events the SDK reads (response.created … response.completed). Pure."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway.providers.sim_shapes import sample
from gateway.tokens import estimate_text_tokens

Words = Callable[[str, int | None], list[str]]


def _function_to_call(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tools = body.get("tools")
    functions = (
        [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]
        if isinstance(tools, list)
        else []
    )
    if not functions:
        return None
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        return next((t for t in functions if t.get("name") == choice.get("name")), None)
    if choice == "required":
        return functions[0]
    given = body.get("input")
    last = given[-1] if isinstance(given, list) and given else None
    answered = isinstance(last, dict) and last.get("type") == "function_call_output"
    return functions[0] if choice == "auto" and not answered else None


def _text(body: Mapping[str, Any], words: list[str]) -> str:
    text = body.get("text")
    text_format = text.get("format") if isinstance(text, dict) else None
    kind = text_format.get("type") if isinstance(text_format, dict) else None
    if kind == "json_schema":
        assert isinstance(text_format, dict)
        return orjson.dumps(sample(text_format.get("schema"), words)).decode()
    if kind == "json_object":
        return orjson.dumps({"answer": " ".join(words)}).decode()
    return " ".join(words)


def _answer(body: Mapping[str, Any], words: Words) -> tuple[dict[str, Any], str, int, bool]:
    """(the output item, its text, output tokens, whether max_output_tokens cut it)."""
    seen = repr((body.get("instructions"), body.get("input")))
    digest = hashlib.sha256(seen.encode()).hexdigest()[:24]
    cap = body.get("max_output_tokens")
    said = words(seen, cap if isinstance(cap, int) else None)
    capped = isinstance(cap, int) and len(said) >= cap
    function = _function_to_call(body)
    if function is not None:
        arguments = orjson.dumps(
            sample(function.get("parameters") or {"type": "object"}, said)
        ).decode()
        item = {
            "type": "function_call",
            "id": f"fc_sim_{digest}",
            "call_id": f"call_sim_{digest}",
            "name": function.get("name"),
            "arguments": arguments,
            "status": "completed",
        }
        return item, arguments, estimate_text_tokens(arguments), False
    text = _text(body, said)
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item = {
        "type": "message",
        "id": f"msg_sim_{digest}",
        "status": "incomplete" if capped else "completed",
        "role": "assistant",
        "content": [part],
    }
    return item, text, len(said), capped


def _response(
    body: Mapping[str, Any], model: str, output: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    digest = hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()[:24]
    text = body.get("text")
    return {
        "id": f"resp_sim_{digest}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "instructions": body.get("instructions"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": body.get("previous_response_id"),
        "metadata": body.get("metadata") or {},
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "usage": None,
    }


def _usage(body: Mapping[str, Any], output_tokens: int) -> dict[str, Any]:
    read = orjson.dumps([body.get("instructions"), body.get("input")]).decode()
    input_tokens = estimate_text_tokens(read)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_reply(body: Mapping[str, Any], model: str, words: Words) -> dict[str, Any]:
    """The whole `response`, with usage."""
    item, _, tokens, capped = _answer(body, words)
    reply = _response(body, model, [item], "incomplete" if capped else "completed")
    reply["usage"] = _usage(body, tokens)
    return reply


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def response_events(
    body: Mapping[str, Any], model: str, words: Words, chunk_chars: int
) -> list[dict[str, Any]]:
    """The same answer as the Responses API streams it: created, in_progress, the output
    item added, its text (or arguments) in deltas of `chunk_chars` characters, done
    events, and response.completed (or .incomplete) with usage."""
    item, text, tokens, capped = _answer(body, words)
    status = "incomplete" if capped else "completed"
    started = _response(body, model, [], "in_progress")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "function_call":
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "arguments": "", "status": "in_progress"},
            }
        )
        events.extend(
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in _pieces(text, chunk_chars)
        )
        events.append(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": text,
            }
        )
    else:
        part = item["content"][0]
        empty = {**part, "text": ""}
        at = {**where, "content_index": 0}
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "content": [], "status": "in_progress"},
            }
        )
        events.append({"type": "response.content_part.added", **at, "part": empty})
        events.extend(
            {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
            for piece in _pieces(text, chunk_chars)
        )
        events.append({"type": "response.output_text.done", **at, "text": text, "logprobs": []})
        events.append({"type": "response.content_part.done", **at, "part": part})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    finished = {**_response(body, model, [item], status), "usage": _usage(body, tokens)}
    events.append({"type": f"response.{status}", "response": finished})
    return [{**event, "sequence_number": index} for index, event in enumerate(events)]
