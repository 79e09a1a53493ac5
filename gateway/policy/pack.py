"""Policy packs: the YAML platform teams write, parsed into frozen dataclasses.

A pack names a chain of steps. Each step has a `name`, an optional `targeting`
(`{scope: org}` or `{scope: team, teams: [...]}`) and a `policy:` section of parameters.
Steps run in one fixed order (`STEP_ORDER`) so a pack reads the way it runs; a pack that
lists them otherwise is refused with the line to fix. Every error carries its line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.policy.content_filter import ContentFilter, compile_content_filter
from gateway.policy.detectors import PII_KINDS
from schemas.money import usd_to_nanousd
from schemas.records import ROLES, Role

STEP_ORDER = (
    "rbac",
    "pii-detector",
    "content-filter",
    "human-oversight",
    "cost-limit",
    "audit-logger",
)
PRIORITIES = ("P1", "P2", "P3", "P4")
MAX_PACK_BYTES = 64 * 1024
MAX_TEAMS = 256
MAX_HOLD_S = 300.0
MAX_RETENTION_DAYS = 3_650
PACK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

PiiAction = Literal["redact", "block"]
OversightMode = Literal["hold", "refuse"]


@dataclasses.dataclass(frozen=True, slots=True)
class LintError:
    """One problem of a pack, at a 1-based line."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class PackError(ValueError):
    """A pack that does not parse or validate; `errors` lists every problem found."""

    def __init__(self, errors: list[LintError]) -> None:
        assert errors, "a PackError has at least one error"
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclasses.dataclass(frozen=True, slots=True)
class Targeting:
    """Whom a step applies to: the whole tenant (org) or listed teams."""

    scope: Literal["org", "team"] = "org"
    teams: frozenset[str] = frozenset()

    def applies(self, team_id: str) -> bool:
        """Whether calls of this team run the step."""
        return self.scope == "org" or team_id in self.teams


@dataclasses.dataclass(frozen=True, slots=True)
class RbacPolicy:
    """require_auth: every call names its end user (`user`); minimum_role of the key."""

    require_auth: bool = True
    minimum_role: Role = "viewer"


@dataclasses.dataclass(frozen=True, slots=True)
class PiiPolicy:
    """Which kinds of personal data to look for and what to do on a find."""

    detect: frozenset[str] = PII_KINDS
    action: PiiAction = "redact"


@dataclasses.dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Deny words and patterns; a match blocks the call, or flags it for human review."""

    action: Literal["block", "flag"] = "block"
    deny: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    content_filter: ContentFilter = dataclasses.field(
        default_factory=lambda: compile_content_filter((), ())
    )


@dataclasses.dataclass(frozen=True, slots=True)
class OversightPolicy:
    """When a human must review a call, and whether the call waits (hold) or is refused."""

    require_review: bool = True
    # Steps whose triggering asks for review; empty means every call is reviewed.
    triggers: frozenset[str] = frozenset()
    mode: OversightMode = "refuse"
    hold_timeout_s: float = 30.0
    priority: str = "P3"
    category: str = "general"


@dataclasses.dataclass(frozen=True, slots=True)
class CostLimitPolicy:
    """A team's spend limit per UTC month."""

    monthly_limit_nanousd: int


@dataclasses.dataclass(frozen=True, slots=True)
class AuditPolicy:
    """How long the tenant's audit rows are kept and whether text is stored."""

    retention_days: int = 365
    log_all_access: bool = False
    store_content: bool = False


StepPolicy = (
    RbacPolicy | PiiPolicy | ContentPolicy | OversightPolicy | CostLimitPolicy | AuditPolicy
)


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step of the chain."""

    name: str
    targeting: Targeting
    policy: StepPolicy


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyPack:
    """A validated pack."""

    name: str
    description: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step | None:
        """The step of that name, if the pack has it."""
        return next((s for s in self.steps if s.name == name), None)


# --- reading the YAML node tree (it keeps line numbers) -------------------------------


class _Errors:
    def __init__(self) -> None:
        self.items: list[LintError] = []

    def add(self, node: Node, message: str) -> None:
        self.items.append(LintError(node.start_mark.line + 1, message))


# What a scalar with a tag the safe loader does not know (`!!python/object:…`, a local
# tag) reads as: a value of no accepted type, so every check refuses it with its line.
UNREADABLE = object()


def _value(node: Node) -> Any:
    try:
        return SafeConstructor().construct_object(node, deep=True)
    except yaml.YAMLError:
        return UNREADABLE


def _mapping(node: Node, where: str, known: tuple[str, ...], errors: _Errors) -> dict[str, Node]:
    if not isinstance(node, MappingNode):
        errors.add(node, f"{where} must be a mapping")
        return {}
    fields: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, ScalarNode) else None
        if key not in known:
            errors.add(key_node, f"unknown key {key!r} in {where} (known: {', '.join(known)})")
        elif key in fields:
            errors.add(key_node, f"{key!r} appears twice in {where}")
        else:
            fields[key] = value_node
    return fields


def _scalar(node: Node, where: str, kind: type, errors: _Errors) -> Any:
    value = _value(node) if isinstance(node, ScalarNode) else None
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        errors.add(node, f"{where} must be a {kind.__name__}")
        return None
    return value


def _strings(node: Node, where: str, errors: _Errors, limit: int) -> tuple[str, ...]:
    if not isinstance(node, SequenceNode):
        errors.add(node, f"{where} must be a list")
        return ()
    if len(node.value) > limit:
        errors.add(node, f"{where} has {len(node.value)} items; limit {limit}")
        return ()
    items: list[str] = []
    for item in node.value:
        value = _scalar(item, f"each item of {where}", str, errors)
        if value is not None:
            items.append(value)
    return tuple(items)


def _choice(node: Node, where: str, choices: tuple[str, ...], errors: _Errors) -> str | None:
    value = _scalar(node, where, str, errors)
    if value is not None and value not in choices:
        errors.add(node, f"{where} must be one of {', '.join(choices)}, not {value!r}")
        return None
    return None if value is None else str(value)


# --- one parser per step --------------------------------------------------------------


def _rbac(fields: dict[str, Node], anchor: Node, errors: _Errors) -> RbacPolicy:
    policy = RbacPolicy()
    if "require_auth" in fields:
        value = _scalar(fields["require_auth"], "require_auth", bool, errors)
        policy = dataclasses.replace(policy, require_auth=bool(value))
    if "minimum_role" in fields:
        role = _choice(fields["minimum_role"], "minimum_role", ROLES, errors)
        if role is not None:
            policy = dataclasses.replace(policy, minimum_role=role)  # type: ignore[arg-type]
    return policy


def _pii(fields: dict[str, Node], anchor: Node, errors: _Errors) -> PiiPolicy:
    policy = PiiPolicy()
    if "detect" in fields:
        kinds = _strings(fields["detect"], "detect", errors, len(PII_KINDS))
        unknown = sorted(set(kinds) - PII_KINDS)
        if unknown:
            errors.add(
                fields["detect"],
                f"unknown kinds {', '.join(unknown)} (known: {', '.join(sorted(PII_KINDS))})",
            )
        elif not kinds:
            errors.add(fields["detect"], "detect needs at least one kind")
        else:
            policy = dataclasses.replace(policy, detect=frozenset(kinds))
    if "action" in fields:
        action = _choice(fields["action"], "action", ("redact", "block"), errors)
        if action is not None:
            policy = dataclasses.replace(policy, action=action)  # type: ignore[arg-type]
    return policy


def _content(fields: dict[str, Node], anchor: Node, errors: _Errors) -> ContentPolicy:
    deny = _strings(fields["deny"], "deny", errors, 1_000) if "deny" in fields else ()
    patterns = _strings(fields["patterns"], "patterns", errors, 100) if "patterns" in fields else ()
    action = "block"
    if "action" in fields:
        action = _choice(fields["action"], "action", ("block", "flag"), errors) or action
    try:
        compiled = compile_content_filter(deny, patterns)
    except ValueError as exc:
        errors.add(fields.get("patterns", fields.get("deny", anchor)), str(exc))
        return ContentPolicy()
    if not deny and not patterns:
        errors.add(anchor, "content-filter needs deny words or patterns")
    return ContentPolicy(action, deny, patterns, compiled)  # type: ignore[arg-type]


def _oversight(fields: dict[str, Node], anchor: Node, errors: _Errors) -> OversightPolicy:
    policy = OversightPolicy()
    if "require_review" in fields:
        value = _scalar(fields["require_review"], "require_review", bool, errors)
        policy = dataclasses.replace(policy, require_review=bool(value))
    if "triggers" in fields:
        triggers = _strings(fields["triggers"], "triggers", errors, len(STEP_ORDER))
        allowed = ("pii-detector", "content-filter")
        bad = [t for t in triggers if t not in allowed]
        if bad:
            errors.add(fields["triggers"], f"triggers may name only {', '.join(allowed)}")
        policy = dataclasses.replace(policy, triggers=frozenset(triggers))
    if "mode" in fields:
        mode = _choice(fields["mode"], "mode", ("hold", "refuse"), errors)
        if mode is not None:
            policy = dataclasses.replace(policy, mode=mode)  # type: ignore[arg-type]
    if "hold_timeout_s" in fields:
        timeout_s = _scalar(fields["hold_timeout_s"], "hold_timeout_s", float, errors)
        if timeout_s is not None and not 0 < timeout_s <= MAX_HOLD_S:
            errors.add(fields["hold_timeout_s"], f"hold_timeout_s must be in (0, {MAX_HOLD_S}]")
        elif timeout_s is not None:
            policy = dataclasses.replace(policy, hold_timeout_s=timeout_s)
    if "priority" in fields:
        priority = _choice(fields["priority"], "priority", PRIORITIES, errors)
        if priority is not None:
            policy = dataclasses.replace(policy, priority=priority)
    if "category" in fields:
        category = _scalar(fields["category"], "category", str, errors)
        if category:
            policy = dataclasses.replace(policy, category=category[:64])
    return policy


def _usd_nanousd(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        limit = usd_to_nanousd(str(value))
    except ValueError:
        return None
    return limit if limit >= 0 else None


def _cost_limit(fields: dict[str, Node], anchor: Node, errors: _Errors) -> CostLimitPolicy:
    if "action" in fields:
        _choice(fields["action"], "action", ("block",), errors)
    node = fields.get("monthly_limit_usd")
    if node is None:
        errors.add(anchor, "cost-limit needs monthly_limit_usd")
        return CostLimitPolicy(0)
    value = _value(node) if isinstance(node, ScalarNode) else None
    limit = _usd_nanousd(value)
    if limit is None:
        errors.add(node, "monthly_limit_usd must be a non-negative USD amount like 500 or '12.50'")
        return CostLimitPolicy(0)
    return CostLimitPolicy(limit)


def _audit(fields: dict[str, Node], anchor: Node, errors: _Errors) -> AuditPolicy:
    policy = AuditPolicy()
    if "retention_days" in fields:
        days = _scalar(fields["retention_days"], "retention_days", int, errors)
        if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
            errors.add(fields["retention_days"], f"retention_days must be 1..{MAX_RETENTION_DAYS}")
        elif days is not None:
            policy = dataclasses.replace(policy, retention_days=days)
    for flag in ("log_all_access", "store_content"):
        if flag in fields:
            value = _scalar(fields[flag], flag, bool, errors)
            policy = dataclasses.replace(policy, **{flag: bool(value)})
    return policy


# Each parser gets the step's fields, the node to point at for a missing field, and errors.
_STEP_PARSERS: dict[
    str, tuple[tuple[str, ...], Callable[[dict[str, Node], Node, _Errors], StepPolicy]]
] = {
    "rbac": (("require_auth", "minimum_role"), _rbac),
    "pii-detector": (("detect", "action"), _pii),
    "content-filter": (("deny", "patterns", "action"), _content),
    "human-oversight": (
        ("require_review", "triggers", "mode", "hold_timeout_s", "priority", "category"),
        _oversight,
    ),
    "cost-limit": (("monthly_limit_usd", "action"), _cost_limit),
    "audit-logger": (("retention_days", "log_all_access", "store_content"), _audit),
}


def _targeting(node: Node, errors: _Errors) -> Targeting:
    fields = _mapping(node, "targeting", ("scope", "teams"), errors)
    scope = (
        _choice(fields["scope"], "scope", ("org", "team"), errors) if "scope" in fields else None
    )
    teams = _strings(fields["teams"], "teams", errors, MAX_TEAMS) if "teams" in fields else ()
    if scope == "team" and not teams:
        errors.add(node, "targeting with scope team needs a non-empty teams list")
    if scope == "org" and teams:
        errors.add(node, "teams are only used with scope: team")
    return Targeting("team", frozenset(teams)) if scope == "team" else Targeting()


def _step(node: Node, errors: _Errors) -> Step | None:
    fields = _mapping(node, "a chain step", ("name", "targeting", "policy"), errors)
    if "name" not in fields:
        if isinstance(node, MappingNode):
            errors.add(node, "a chain step needs a name")
        return None
    name = _choice(fields["name"], "step name", STEP_ORDER, errors)
    if name is None:
        return None
    targeting = _targeting(fields["targeting"], errors) if "targeting" in fields else Targeting()
    known, parse = _STEP_PARSERS[name]
    policy_node = fields.get("policy")
    anchor = policy_node if policy_node is not None else fields["name"]
    policy_fields = _mapping(policy_node, f"{name} policy", known, errors) if policy_node else {}
    return Step(name, targeting, parse(policy_fields, anchor, errors))


def _order_problem(name: str, seen: list[str], accepted: list[str]) -> str | None:
    order = ", ".join(STEP_ORDER)
    if name in seen:
        return f"{name!r} appears twice in the chain"
    if accepted and STEP_ORDER.index(name) < STEP_ORDER.index(accepted[-1]):
        return f"{name!r} must come before {accepted[-1]!r}: the chain runs in the order {order}"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A pack document as read: the pack (None if any error), every error, the raw values
    of the extra top-level keys the caller allowed (with their lines), and the line of
    each step of the chain by name."""

    pack: PolicyPack | None
    errors: list[LintError]
    extras: dict[str, tuple[Any, int]]
    step_lines: dict[str, int]


def parse_document(text: str, extra_keys: tuple[str, ...] = ()) -> ParsedDocument:
    """Read a pack, or a document shaped like one with more top-level keys (the org
    baseline's): `extra_keys` are accepted and handed back as plain values for the caller
    to check; any other unknown key is an error as in a pack."""
    errors = _Errors()
    extras: dict[str, tuple[Any, int]] = {}
    step_lines: dict[str, int] = {}
    if len(text.encode()) > MAX_PACK_BYTES:
        return ParsedDocument(None, [LintError(1, f"pack is over {MAX_PACK_BYTES} bytes")], {}, {})
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        return ParsedDocument(None, [LintError(line, f"not valid YAML: {exc.problem}")], {}, {})
    except RecursionError:
        # PyYAML composes nested collections recursively; a pack is a few levels deep.
        return ParsedDocument(None, [LintError(1, "the pack is nested too deeply")], {}, {})
    if root is None:
        return ParsedDocument(None, [LintError(1, "the pack is empty")], {}, {})
    top = _mapping(root, "the pack", ("name", "description", "policies", *extra_keys), errors)
    for key in extra_keys:
        if key in top:
            node = top[key]
            value = _value(node) if isinstance(node, ScalarNode) else None
            extras[key] = (value, node.start_mark.line + 1)
    name = _scalar(top["name"], "name", str, errors) if "name" in top else None
    if "name" not in top:
        errors.add(root, "the pack needs a name")
    elif name is not None and not PACK_NAME.match(name):
        errors.add(top["name"], "name must be lower-case letters, digits, '.', '_' or '-'")
    description = (
        _scalar(top["description"], "description", str, errors) if "description" in top else ""
    )
    steps: list[Step] = []
    if "policies" not in top:
        errors.add(root, "the pack needs policies: chain: [...]")
    else:
        policies = _mapping(top["policies"], "policies", ("chain",), errors)
        chain = policies.get("chain")
        if chain is None:
            errors.add(top["policies"], "policies needs a chain")
        elif not isinstance(chain, SequenceNode):
            errors.add(chain, "chain must be a list of steps")
        else:
            seen: list[str] = []
            for step_node in chain.value:
                step = _step(step_node, errors)
                if step is None:
                    continue
                problem = _order_problem(step.name, seen, [s.name for s in steps])
                seen.append(step.name)
                if problem:
                    errors.add(step_node, problem)
                    continue
                steps.append(step)
                step_lines[step.name] = step_node.start_mark.line + 1
    content = next((st for st in steps if st.name == "content-filter"), None)
    if (
        content is not None
        and isinstance(content.policy, ContentPolicy)
        and content.policy.action == "flag"
        and not any(st.name == "human-oversight" for st in steps)
    ):
        errors.add(root, "content-filter action flag needs a human-oversight step to review")
    if errors.items or name is None:
        found = sorted(errors.items or [LintError(1, "the pack needs a name")], key=_line)
        return ParsedDocument(None, found, extras, step_lines)
    return ParsedDocument(PolicyPack(name, description or "", tuple(steps)), [], extras, step_lines)


def _line(error: LintError) -> int:
    return error.line


def lint(text: str) -> list[LintError]:
    """Every problem of a pack, in line order; empty when it is valid."""
    return parse_document(text).errors


def parse_pack(text: str) -> PolicyPack:
    """The pack, or PackError listing every problem."""
    parsed = parse_document(text)
    if parsed.pack is None:
        raise PackError(parsed.errors)
    return parsed.pack


def template_names() -> list[str]:
    """Names of the packs shipped as templates."""
    folder = resources.files("gateway") / "policy" / "templates"
    return sorted(
        e.name.removesuffix(".yaml") for e in folder.iterdir() if e.name.endswith(".yaml")
    )


def template_source(name: str) -> str:
    """A shipped template's YAML; KeyError for an unknown name."""
    if name not in template_names():
        raise KeyError(name)
    return (resources.files("gateway") / "policy" / "templates" / f"{name}.yaml").read_text()
