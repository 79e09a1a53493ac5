"""A pack's top-level `targeting` as the Policies page assigns it: which teams and gateways
every step of the pack is narrowed to (gateway/policy/targeting.py; docs/governance.md,
"Configurations from CI"). Pure text work: the pack's own text is kept line for line
(comments too) and only its top-level `targeting` block is replaced, then the result is
checked to parse as the same pack with that one key changed, so an unusual layout is
refused rather than rewritten into something else. The admin API lints what is sent."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import yaml

# A team's or a gateway's name as the console accepts it (the admin API lints the rest).
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MAX_TARGETS = 256
TOP_LEVEL_TARGETING = re.compile(r"^targeting\s*:")


class TargetingError(ValueError):
    """The names are not acceptable, or the pack's text cannot be rewritten safely."""


def target_names(text: str, what: str) -> list[str]:
    """Comma- or space-separated names, each checked, without repeats, in their order."""
    names = list(dict.fromkeys(part for part in re.split(r"[,\s]+", text.strip()) if part))
    if len(names) > MAX_TARGETS:
        raise TargetingError(f"at most {MAX_TARGETS} {what}")
    for name in names:
        if not TARGET_NAME.fullmatch(name):
            raise TargetingError(
                f"{what} are letters, digits, '.', '_', ':' or '-' (at most 64): {name[:64]!r}"
            )
    return names


def _parsed(source: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(source)
    except (yaml.YAMLError, RecursionError) as exc:
        raise TargetingError(f"the pack does not parse: {exc}") from None
    if not isinstance(document, dict):
        raise TargetingError("the pack is not a mapping")
    return document


def current_targeting(source: str) -> tuple[list[str], list[str]]:
    """The teams and gateways of the pack's top-level targeting (empty when it has none or
    its text does not parse)."""
    try:
        targeting = _parsed(source).get("targeting")
    except TargetingError:
        return [], []
    if not isinstance(targeting, dict):
        return [], []

    def names(key: str) -> list[str]:
        listed = targeting.get(key)
        return [str(n) for n in listed] if isinstance(listed, list) else []

    return names("teams"), names("gateways")


def with_targeting(source: str, teams: Sequence[str], gateways: Sequence[str]) -> str:
    """The pack with its top-level targeting set to these teams and gateways (none of
    either: no top-level targeting, every step as written). TargetingError when the text
    would not parse back as the same pack with only `targeting` changed."""
    kept: list[str] = []
    skipping = False
    for line in source.splitlines():
        if TOP_LEVEL_TARGETING.match(line):
            skipping = True
            continue
        # The block ends at the next line that starts at column 0 (a key, a comment).
        if skipping and (not line.strip() or line[0] in " \t"):
            continue
        skipping = False
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    block = []
    for key, names in (("teams", teams), ("gateways", gateways)):
        if names:  # JSON strings are YAML flow scalars: no name can break out of the list
            block.append(f"  {key}: [{', '.join(json.dumps(n) for n in names)}]")
    text = "\n".join(kept + (["targeting:", *block] if block else [])) + "\n"
    expected = _parsed(source)
    expected.pop("targeting", None)
    if block:
        expected["targeting"] = {
            key: list(names) for key, names in (("teams", teams), ("gateways", gateways)) if names
        }
    try:
        same = _parsed(text) == expected
    except TargetingError:
        same = False
    if not same:
        raise TargetingError(
            "the pack's text is laid out in a way this page cannot rewrite: "
            "set its top-level targeting in the editor"
        )
    return text
