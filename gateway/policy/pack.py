"""Policy packs: the YAML platform teams write, parsed into frozen dataclasses.

A pack names a chain of steps. Each step has a name, an optional `targeting`
(`{scope: org}` or `{scope: team, teams: [...]}`) and parameters. Two shapes are read,
into the same typed pack, by this one parser (docs/governance.md shows both):

- ours: each step a mapping `{name, targeting, policy}`, parameters under its `policy`;
- the seed's (Keeptrusts): each step its bare name (`- audit-logger`) or a mapping of one
  key, the name, holding at most `targeting` (`- pii-detector: {targeting: ...}`), and one
  top-level `policy:` map of parameters by step name; its role names (`member`, `admin`,
  ...) are mapped onto ours (`SEED_ROLES`); the name may sit under `pack:` or be absent,
  taken then from the file name (`pack_name_from_file`).

Steps run in one fixed order (`STEP_ORDER`) so a pack reads the way it runs; a pack that
lists them otherwise is refused with the line to fix. Every error carries its line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.policy.content_filter import ContentFilter, compile_content_filter
from gateway.policy.detectors import PII_KINDS
from gateway.policy.targeting import EVERYONE, Targeting, narrowed, parse_targeting
from gateway.policy.yaml_input import (
    Errors,
    LintError,
    choice,
    compose,
    key_of,
    mapping,
    scalar,
    strings,
)
from gateway.policy.yaml_input import (
    value as node_value,
)
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
MAX_HOLD_S = 300.0
MAX_RETENTION_DAYS = 3_650
PACK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
PACK_KEYS = ("name", "description", "pack", "policies", "policy", "targeting")
# The seed's `pack:` header; its version is kept in the source only.
PACK_HEADER_KEYS = ("name", "description", "version", "enabled")
# The seed's role names onto ours (docs/governance.md): its members use the gateway as
# our developers do; its admins configure a team or tenant; its owner runs the org.
SEED_ROLES: dict[str, Role] = {
    "member": "developer",
    "editor": "developer",
    "admin": "tenant-admin",
    "owner": "org-admin",
}

PiiAction = Literal["redact", "block"]
OversightMode = Literal["hold", "refuse"]


class PackError(ValueError):
    """A pack that does not parse or validate; `errors` lists every problem found."""

    def __init__(self, errors: list[LintError]) -> None:
        assert errors, "a PackError has at least one error"
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


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


# --- one parser per step --------------------------------------------------------------


def _rbac(fields: dict[str, Node], anchor: Node, errors: Errors) -> RbacPolicy:
    policy = RbacPolicy()
    if "require_auth" in fields:
        value = scalar(fields["require_auth"], "require_auth", bool, errors)
        policy = dataclasses.replace(policy, require_auth=bool(value))
    if "minimum_role" in fields:
        role = choice(fields["minimum_role"], "minimum_role", (*ROLES, *SEED_ROLES), errors)
        if role is not None:
            mapped = SEED_ROLES.get(role, role)
            policy = dataclasses.replace(policy, minimum_role=mapped)  # type: ignore[arg-type]
    return policy


def _pii(fields: dict[str, Node], anchor: Node, errors: Errors) -> PiiPolicy:
    policy = PiiPolicy()
    if "detect" in fields:
        kinds = strings(fields["detect"], "detect", errors, len(PII_KINDS))
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
        action = choice(fields["action"], "action", ("redact", "block"), errors)
        if action is not None:
            policy = dataclasses.replace(policy, action=action)  # type: ignore[arg-type]
    return policy


def _content(fields: dict[str, Node], anchor: Node, errors: Errors) -> ContentPolicy:
    deny = strings(fields["deny"], "deny", errors, 1_000) if "deny" in fields else ()
    patterns = strings(fields["patterns"], "patterns", errors, 100) if "patterns" in fields else ()
    action = "block"
    if "action" in fields:
        action = choice(fields["action"], "action", ("block", "flag"), errors) or action
    try:
        compiled = compile_content_filter(deny, patterns)
    except ValueError as exc:
        errors.add(fields.get("patterns", fields.get("deny", anchor)), str(exc))
        return ContentPolicy()
    if not deny and not patterns:
        errors.add(anchor, "content-filter needs deny words or patterns")
    return ContentPolicy(action, deny, patterns, compiled)  # type: ignore[arg-type]


def _oversight(fields: dict[str, Node], anchor: Node, errors: Errors) -> OversightPolicy:
    policy = OversightPolicy()
    if "require_review" in fields:
        value = scalar(fields["require_review"], "require_review", bool, errors)
        policy = dataclasses.replace(policy, require_review=bool(value))
    if "triggers" in fields:
        triggers = strings(fields["triggers"], "triggers", errors, len(STEP_ORDER))
        allowed = ("pii-detector", "content-filter")
        bad = [t for t in triggers if t not in allowed]
        if bad:
            errors.add(fields["triggers"], f"triggers may name only {', '.join(allowed)}")
        policy = dataclasses.replace(policy, triggers=frozenset(triggers))
    if "mode" in fields:
        mode = choice(fields["mode"], "mode", ("hold", "refuse"), errors)
        if mode is not None:
            policy = dataclasses.replace(policy, mode=mode)  # type: ignore[arg-type]
    if "hold_timeout_s" in fields:
        timeout_s = scalar(fields["hold_timeout_s"], "hold_timeout_s", float, errors)
        if timeout_s is not None and not 0 < timeout_s <= MAX_HOLD_S:
            errors.add(fields["hold_timeout_s"], f"hold_timeout_s must be in (0, {MAX_HOLD_S}]")
        elif timeout_s is not None:
            policy = dataclasses.replace(policy, hold_timeout_s=timeout_s)
    if "priority" in fields:
        priority = choice(fields["priority"], "priority", PRIORITIES, errors)
        if priority is not None:
            policy = dataclasses.replace(policy, priority=priority)
    if "category" in fields:
        category = scalar(fields["category"], "category", str, errors)
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


def _cost_limit(fields: dict[str, Node], anchor: Node, errors: Errors) -> CostLimitPolicy:
    if "action" in fields:
        choice(fields["action"], "action", ("block",), errors)
    node = fields.get("monthly_limit_usd")
    if node is None:
        errors.add(anchor, "cost-limit needs monthly_limit_usd")
        return CostLimitPolicy(0)
    value = node_value(node) if isinstance(node, ScalarNode) else None
    limit = _usd_nanousd(value)
    if limit is None:
        errors.add(node, "monthly_limit_usd must be a non-negative USD amount like 500 or '12.50'")
        return CostLimitPolicy(0)
    return CostLimitPolicy(limit)


def _audit(fields: dict[str, Node], anchor: Node, errors: Errors) -> AuditPolicy:
    policy = AuditPolicy()
    if "retention_days" in fields:
        days = scalar(fields["retention_days"], "retention_days", int, errors)
        if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
            errors.add(fields["retention_days"], f"retention_days must be 1..{MAX_RETENTION_DAYS}")
        elif days is not None:
            policy = dataclasses.replace(policy, retention_days=days)
    for flag in ("log_all_access", "store_content"):
        if flag in fields:
            value = scalar(fields[flag], flag, bool, errors)
            policy = dataclasses.replace(policy, **{flag: bool(value)})
    return policy


# Each parser gets the step's fields, the node to point at for a missing field, and errors.
_STEP_PARSERS: dict[
    str, tuple[tuple[str, ...], Callable[[dict[str, Node], Node, Errors], StepPolicy]]
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


# The keys of a step in our shape; a mapping with any other key is a seed-shaped step.
OUR_STEP_KEYS = ("name", "targeting", "policy")


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """A chain item as written, in either shape: its step name, targeting and (our shape)
    parameters."""

    name: str
    name_node: Node
    targeting: Node | None
    params: Node | None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node_value(node) is None


def _seed_entry(node: MappingNode, errors: Errors) -> _Entry | None:
    """`- rbac:`, `- pii-detector: {targeting: ...}`: a mapping of one key, the name."""
    key_node, body = node.value[0]
    name = choice(key_node, "step name", STEP_ORDER, errors)
    if name is None:
        return None
    if _is_null(body):
        return _Entry(name, key_node, None, None)
    where = f"chain step {name} (its parameters go under policy.{name})"
    fields = mapping(body, where, ("targeting",), errors)
    return _Entry(name, key_node, fields.get("targeting"), None)


def _entry(node: Node, errors: Errors) -> _Entry | None:
    if isinstance(node, ScalarNode):  # the seed's bare name: `- audit-logger`
        name = choice(node, "step name", STEP_ORDER, errors)
        return None if name is None else _Entry(name, node, None, None)
    if isinstance(node, MappingNode):
        keys = [key_of(k) for k, _ in node.value]
        if "name" not in keys and any(k not in OUR_STEP_KEYS for k in keys):
            if len(keys) == 1:
                return _seed_entry(node, errors)
            listed = ", ".join(str(k) for k in keys)
            errors.add(
                node,
                "a chain step is {name, targeting, policy} or a mapping of one key, the "
                f"step's name; this one has {len(keys)} keys: {listed}",
            )
            return None
    fields = mapping(node, "a chain step", OUR_STEP_KEYS, errors)
    if "name" not in fields:
        if isinstance(node, MappingNode):
            errors.add(node, "a chain step needs a name")
        return None
    name = choice(fields["name"], "step name", STEP_ORDER, errors)
    if name is None:
        return None
    return _Entry(name, fields["name"], fields.get("targeting"), fields.get("policy"))


def _step(entry: _Entry, seed_params: dict[str, Node], errors: Errors) -> Step:
    """The typed step: parameters from the step itself (our shape) or from the top-level
    `policy:` map (the seed's), never both."""
    targeting = parse_targeting(entry.targeting, errors) if entry.targeting else EVERYONE
    known, parse = _STEP_PARSERS[entry.name]
    seed = seed_params.get(entry.name)
    if entry.params is not None and seed is not None:
        errors.add(seed, f"{entry.name} has parameters both in its chain step and in policy")
    if entry.params is not None:
        fields = mapping(entry.params, f"{entry.name} policy", known, errors)
        return Step(entry.name, targeting, parse(fields, entry.params, errors))
    if seed is not None and not _is_null(seed):
        fields = mapping(seed, f"policy.{entry.name}", known, errors)
        return Step(entry.name, targeting, parse(fields, seed, errors))
    return Step(entry.name, targeting, parse({}, entry.name_node, errors))


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


def _pack_name(
    root: Node, top: dict[str, Node], default_name: str | None, errors: Errors
) -> tuple[str | None, str]:
    """The pack's name and description: top-level, or under the seed's `pack:` (with its
    `version` and `enabled`), the name else `default_name` (from the file name)."""
    header = mapping(top["pack"], "pack", PACK_HEADER_KEYS, errors) if "pack" in top else {}
    if "version" in header:
        version = (
            node_value(header["version"]) if isinstance(header["version"], ScalarNode) else None
        )
        if isinstance(version, bool) or not isinstance(version, str | int | float):
            errors.add(header["version"], "pack.version must be a string or a number")
    if "enabled" in header and scalar(header["enabled"], "pack.enabled", bool, errors) is False:
        errors.add(header["enabled"], "pack.enabled is false: a pushed pack runs; do not push it")
    found: dict[str, Node] = {}
    for key in ("name", "description"):
        if key in top and key in header:
            errors.add(header[key], f"{key} is given twice: {key} and pack.{key}")
        if key in top or key in header:
            found[key] = top.get(key) or header[key]
    description = (
        scalar(found["description"], "description", str, errors) if "description" in found else ""
    )
    if "name" not in found:
        if default_name is not None and PACK_NAME.match(default_name):
            return default_name, description or ""
        errors.add(root, "the pack needs a name (name:, pack.name, or a file name that gives one)")
        return None, description or ""
    name = scalar(found["name"], "name", str, errors)
    if name is not None and not PACK_NAME.match(name):
        errors.add(found["name"], "name must be lower-case letters, digits, '.', '_' or '-'")
        return None, description or ""
    return name, description or ""


def _chain(top: dict[str, Node], root: Node, errors: Errors) -> tuple[list[Step], dict[str, int]]:
    """The chain's steps in order, and the line of each."""
    steps: list[Step] = []
    step_lines: dict[str, int] = {}
    seed_params = mapping(top["policy"], "policy", STEP_ORDER, errors) if "policy" in top else {}
    if "policies" not in top:
        errors.add(root, "the pack needs policies: chain: [...]")
        return steps, step_lines
    policies = mapping(top["policies"], "policies", ("chain",), errors)
    chain = policies.get("chain")
    if chain is None:
        errors.add(top["policies"], "policies needs a chain")
        return steps, step_lines
    if not isinstance(chain, SequenceNode):
        errors.add(chain, "chain must be a list of steps")
        return steps, step_lines
    seen: list[str] = []
    for step_node in chain.value:
        entry = _entry(step_node, errors)
        if entry is None:
            continue
        problem = _order_problem(entry.name, seen, [s.name for s in steps])
        seen.append(entry.name)
        if problem:
            errors.add(step_node, problem)
            continue
        steps.append(_step(entry, seed_params, errors))
        step_lines[entry.name] = step_node.start_mark.line + 1
    named = {n for step_node in chain.value for n in _names_in(step_node)}
    for key_node, _ in top["policy"].value if seed_params else ():
        if key_of(key_node) in seed_params and key_of(key_node) not in named:
            name = key_of(key_node)
            errors.add(key_node, f"policy.{name}: there is no {name} step in the chain")
    return steps, step_lines


def _names_in(node: Node) -> set[str]:
    """Every step name a chain item mentions, well formed or not."""
    if isinstance(node, ScalarNode):
        return {str(node.value)}
    if not isinstance(node, MappingNode):
        return set()
    found = {str(k.value) for k, _ in node.value if isinstance(k, ScalarNode)}
    found |= {
        str(v.value) for k, v in node.value if key_of(k) == "name" and isinstance(v, ScalarNode)
    }
    return found


def parse_document(
    text: str, extra_keys: tuple[str, ...] = (), default_name: str | None = None
) -> ParsedDocument:
    """Read a pack, or a document shaped like one with more top-level keys (the org
    baseline's): `extra_keys` are accepted and handed back as plain values for the caller
    to check; any other unknown key is an error as in a pack. `default_name` names a pack
    that has no name of its own (see `pack_name_from_file`)."""
    errors = Errors()
    extras: dict[str, tuple[Any, int]] = {}
    root, problem = compose(text)
    if problem is not None:
        return ParsedDocument(None, [problem], {}, {})
    if root is None:
        return ParsedDocument(None, [LintError(1, "the pack is empty")], {}, {})
    top = mapping(root, "the pack", (*PACK_KEYS, *extra_keys), errors)
    for key in extra_keys:
        if key in top:
            node = top[key]
            extra = node_value(node) if isinstance(node, ScalarNode) else None
            extras[key] = (extra, node.start_mark.line + 1)
    name, description = _pack_name(root, top, default_name, errors)
    steps, step_lines = _chain(top, root, errors)
    if "targeting" in top:  # the pack's own targeting narrows each step's
        pack_targeting = parse_targeting(top["targeting"], errors)
        for index, step in enumerate(steps):
            where = narrowed(step.targeting, pack_targeting)
            if where is None:
                errors.add(
                    top["targeting"], f"{step.name} targets no team or gateway of the pack's"
                )
                continue
            steps[index] = dataclasses.replace(step, targeting=where)
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
    return ParsedDocument(PolicyPack(name, description, tuple(steps)), [], extras, step_lines)


def _line(error: LintError) -> int:
    return error.line


def lint(text: str, default_name: str | None = None) -> list[LintError]:
    """Every problem of a pack, in line order; empty when it is valid."""
    return parse_document(text, default_name=default_name).errors


def parse_pack(text: str, default_name: str | None = None) -> PolicyPack:
    """The pack, or PackError listing every problem; `default_name` for a pack without
    a name of its own."""
    parsed = parse_document(text, default_name=default_name)
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


def pack_name_from_file(path: str) -> str | None:
    """A pack name from a file's name, for a pack that has none: the base name without
    .yaml/.yml, every run of characters other than ASCII letters, digits, '.', '_', '-'
    (a path, spaces, control or look-alike characters) made one '-', lower-cased, cut
    to 64; None when nothing usable is left."""
    base = re.split(r"[\\/]", path)[-1]
    stem = re.sub(r"\.ya?ml$", "", base, flags=re.IGNORECASE)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lower().strip("._-")[:64].rstrip("._-")
    return cleaned if PACK_NAME.match(cleaned) else None
