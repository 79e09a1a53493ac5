"""What the sim provider answers besides text, decided from the caller's body alone (so
the same body gets the same answer): which tool it calls, with arguments that fit the
tool's JSON schema, and structured output that fits `response_format`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

# How deep the sim follows a schema (and its $refs); deeper parts get null.
MAX_SCHEMA_DEPTH = 8


def tool_to_call(body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> Any:
    """The tool object the sim calls, or None: the one `tool_choice` names, the first
    tool when it is "required", and with "auto" (the default) the first tool unless the
    last message is a tool's result, so a round trip ends in an answer."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
    functions = [t for t in tools if isinstance(t.get("function"), dict)]
    if not functions:
        return None
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t for t in functions if t["function"].get("name") == wanted), None)
    if choice == "required":
        return functions[0]
    last_role = messages[-1].get("role") if messages else None
    if choice == "auto" and last_role != "tool":
        return functions[0]
    return None


def sample(schema: Any, words: Sequence[str], root: Any = None, depth: int = 0) -> Any:
    """A JSON value that fits `schema` (the parts of JSON Schema structured outputs use),
    its strings drawn from `words`."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return None
    word = words[depth % len(words)] if words else "sim"
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target: Any = root
        for part in reference[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return sample(target, words, root, depth + 1)
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return sample(options[0], words, root, depth + 1)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or isinstance(schema.get("properties"), dict):
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {
            str(name): sample(child, words, root, depth + 1) for name, child in properties.items()
        }
    if kind == "array":
        return [sample(schema.get("items"), words, root, depth + 1)]
    if kind == "integer":
        return len(word)
    if kind == "number":
        return len(word) + 0.5
    if kind == "boolean":
        return len(word) % 2 == 0
    if kind == "string":
        return word
    return None


def structured_content(body: Mapping[str, Any], words: Sequence[str]) -> str | None:
    """The JSON text that answers a `response_format` asking for JSON, else None."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return orjson.dumps({"answer": " ".join(words)}).decode()
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return orjson.dumps(sample(schema, words)).decode()
    return None


def tool_call(tool: Mapping[str, Any], words: Sequence[str], index: int) -> dict[str, Any]:
    """A `tool_calls` entry calling the tool with arguments that fit its parameters."""
    function = tool["function"]
    arguments = sample(function.get("parameters") or {"type": "object"}, words)
    return {
        "id": f"call_sim_{index}_{'_'.join(words[:2])}",
        "type": "function",
        "function": {"name": function.get("name"), "arguments": orjson.dumps(arguments).decode()},
    }


def logprobs(tokens: Sequence[str], top: int) -> dict[str, Any]:
    """A choice's `logprobs` for its tokens: fixed values, `top` alternatives each."""
    entries = []
    for index, token in enumerate(tokens):
        logprob = -0.25 * (index % 4)
        alternatives = [
            {"token": token, "logprob": logprob - rank, "bytes": list(token.encode())}
            for rank in range(top)
        ]
        entries.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": alternatives,
            }
        )
    return {"content": entries, "refusal": None}
