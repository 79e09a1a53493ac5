"""Reading a policy document, which is hostile input: bounded YAML to a node tree that
keeps line numbers, and the small readers the pack parser checks each value with.

Before any node is built the document's events are read once (PyYAML's parser is a state
machine, not recursive) and refused, with the line, when it is over `MAX_PACK_BYTES`,
nested deeper than `MAX_PACK_DEPTH`, holds an anchor or alias (a pack needs neither, and
aliases are how a few lines expand into billions of nodes), or carries a tag other than
the core schema's. Mapping keys must be plain strings. Values are only ever built by
PyYAML's SafeConstructor, one scalar at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_PACK_BYTES = 64 * 1024
# A pack is a handful of levels deep (pack > policies > chain > step > policy > list).
MAX_PACK_DEPTH = 12
_CORE = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(
    _CORE + name for name in ("str", "int", "float", "bool", "null", "seq", "map")
)
STRING_TAG = _CORE + "str"


@dataclasses.dataclass(frozen=True, slots=True)
class LintError:
    """One problem of a pack, at a 1-based line."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class Errors:
    """The problems found so far, each at its node's line."""

    def __init__(self) -> None:
        self.items: list[LintError] = []

    def add(self, node: Node, message: str) -> None:
        self.items.append(LintError(node.start_mark.line + 1, message))


def _event_problem(text: str) -> LintError | None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            return LintError(line, "anchors (&) and aliases (*) are not allowed in a pack")
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!" and tag not in ALLOWED_TAGS:
            return LintError(line, f"tag {tag!r} is not allowed in a pack")
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_PACK_DEPTH:
                return LintError(line, f"the pack is nested too deeply (limit {MAX_PACK_DEPTH})")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return None


def compose(text: str) -> tuple[Node | None, LintError | None]:
    """The document's root node, or the one problem that stops it being read (None, None:
    an empty document)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PACK_BYTES:
        return None, LintError(1, f"pack is over {MAX_PACK_BYTES} bytes")
    try:
        problem = _event_problem(text)
        if problem is not None:
            return None, problem
        return yaml.compose(text, Loader=yaml.SafeLoader), None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        return None, LintError(line, f"not valid YAML: {exc.problem}")
    except yaml.YAMLError as exc:  # a reader error (a control character) has no mark
        return None, LintError(1, f"not valid YAML: {exc}")
    except RecursionError:  # kept as a last wall: the depth check comes first
        return None, LintError(1, "the pack is nested too deeply")


# What a scalar with a tag the safe loader does not know reads as: a value of no accepted
# type, so every check refuses it with its line.
UNREADABLE = object()


def value(node: Node) -> Any:
    """A scalar's value as the safe loader builds it."""
    try:
        return SafeConstructor().construct_object(node, deep=True)
    except yaml.YAMLError:
        return UNREADABLE


def key_of(node: Node) -> str | None:
    """A mapping key: only a plain string is one (`1`, `true`, `null`, `<<`, a list are
    not)."""
    return node.value if isinstance(node, ScalarNode) and node.tag == STRING_TAG else None


def mapping(node: Node, where: str, known: tuple[str, ...], errors: Errors) -> dict[str, Node]:
    """A mapping's fields by key; each unknown, repeated or non-string key is an error."""
    if not isinstance(node, MappingNode):
        errors.add(node, f"{where} must be a mapping")
        return {}
    fields: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key = key_of(key_node)
        if key is None:
            errors.add(key_node, f"keys in {where} must be strings")
        elif key not in known:
            errors.add(key_node, f"unknown key {key!r} in {where} (known: {', '.join(known)})")
        elif key in fields:
            errors.add(key_node, f"{key!r} appears twice in {where}")
        else:
            fields[key] = value_node
    return fields


def scalar(node: Node, where: str, kind: type, errors: Errors) -> Any:
    """A scalar of one type (an int is accepted for a float; a bool is never a number)."""
    found = value(node) if isinstance(node, ScalarNode) else None
    ok = isinstance(found, kind) and not (kind is not bool and isinstance(found, bool))
    if kind is float and isinstance(found, int) and not isinstance(found, bool):
        found, ok = float(found), True
    if not ok:
        errors.add(node, f"{where} must be a {kind.__name__}")
        return None
    return found


def strings(node: Node, where: str, errors: Errors, limit: int) -> tuple[str, ...]:
    """A list of at most `limit` strings."""
    if not isinstance(node, SequenceNode):
        errors.add(node, f"{where} must be a list")
        return ()
    if len(node.value) > limit:
        errors.add(node, f"{where} has {len(node.value)} items; limit {limit}")
        return ()
    items: list[str] = []
    for item in node.value:
        found = scalar(item, f"each item of {where}", str, errors)
        if found is not None:
            items.append(found)
    return tuple(items)


def choice(node: Node, where: str, choices: tuple[str, ...], errors: Errors) -> str | None:
    """One of `choices`."""
    found = scalar(node, where, str, errors)
    if found is not None and found not in choices:
        errors.add(node, f"{where} must be one of {', '.join(choices)}, not {found!r}")
        return None
    return None if found is None else str(found)
