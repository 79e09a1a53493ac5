"""Which targets a call may go to, in order, and how long to wait between attempts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.catalogue import Target, names
from schemas.settings import SettingsError

# Failures worth another attempt: the upstream may answer next time, or another may.
# A 4xx other than 429 says the request itself is wrong; no other target would differ.
RETRYABLE = frozenset({"timeout", "connect", "transport", "http_5xx", "rate_limited"})
MAX_CHAIN = 8


def parse_fallbacks(text: str) -> dict[str, tuple[str, ...]]:
    """`model=fallback1|fallback2;other=…` as a mapping; SettingsError if malformed."""
    chains: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        model, _, rest = entry.partition("=")
        chain = tuple(filter(None, (m.strip() for m in rest.split("|"))))
        if not model.strip() or not chain or len(chain) > MAX_CHAIN:
            raise SettingsError(f"GOVLEDGER_FALLBACKS: {entry!r} is not model=fallback|…")
        chains[model.strip()] = chain
    return chains


def plan(
    model: str, catalogue: Mapping[str, Target], fallbacks: Mapping[str, tuple[str, ...]]
) -> list[Target]:
    """The primary target, then each fallback the catalogue serves, once each."""
    names = [model, *fallbacks.get(model, ())]
    return [catalogue[name] for name in dict.fromkeys(names) if name in catalogue]


def backoff_s(
    retry: int, *, base_s: float, cap_s: float, retry_after_s: float | None, jitter: float
) -> float:
    """Seconds before retry number `retry` (0-based): the upstream's Retry-After when it
    sent one, else exponential backoff scaled by `jitter` in [0.5, 1]; never past cap_s."""
    assert 0.5 <= jitter <= 1.0, "jitter scales the backoff by half to whole"
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), cap_s)
    return min(cap_s, base_s * 2.0**retry) * jitter


_WEIGHT = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """A public model name whose traffic is split between catalogue models by weight: an
    A/B split (`sim-small:50|sim-large:50`) or a canary (`stable:95|canary:5`)."""

    name: str
    members: tuple[tuple[str, int], ...]  # (model, weight), in the order configured

    def __post_init__(self) -> None:
        assert 1 <= len(self.members) <= MAX_CHAIN, "a group has 1 to MAX_CHAIN members"
        assert all(weight >= 0 for _, weight in self.members), "weights are non-negative"
        assert any(weight > 0 for _, weight in self.members), "some member takes traffic"


def parse_model_groups(text: str) -> dict[str, ModelGroup]:
    """`group=model:weight|model:weight;…` as a mapping; SettingsError if malformed.
    The weight is after the last colon, so models named like `llama3.1:8b` still work."""
    groups: dict[str, ModelGroup] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, _, rest = entry.partition("=")
        name = name.strip()
        members: list[tuple[str, int]] = []
        for member in filter(None, (m.strip() for m in rest.split("|"))):
            model, _, weight = member.rpartition(":")
            if not model.strip() or not _WEIGHT.fullmatch(weight.strip()):
                raise SettingsError(
                    f"GOVLEDGER_MODEL_GROUPS: {entry!r}: {member!r} is not model:weight"
                    " with a whole weight >= 0"
                )
            members.append((model.strip(), int(weight)))
        problem = _group_problem(name, members, groups)
        if problem:
            raise SettingsError(f"GOVLEDGER_MODEL_GROUPS: {entry!r} {problem}")
        groups[name] = ModelGroup(name, tuple(members))
    return groups


def _group_problem(
    name: str, members: Sequence[tuple[str, int]], groups: Mapping[str, ModelGroup]
) -> str:
    if not name:
        return "is not group=model:weight|…"
    if name in groups:
        return f"names group {name!r} again"
    if not members:
        return "has no members"
    if len(members) > MAX_CHAIN:
        return f"has more than {MAX_CHAIN} members"
    if len({model for model, _ in members}) < len(members):
        return "lists a model twice"
    if not any(weight > 0 for _, weight in members):
        return "has no member with a weight above 0"
    return ""


def pick_member(group: ModelGroup, draw: float) -> str:
    """The member a call goes to, for a uniform `draw` in [0, 1): each member takes the
    share of draws its weight is of the total, in the order configured, so the same draw
    always picks the same member and a zero-weight member is never picked."""
    assert 0.0 <= draw < 1.0, "draw is uniform in [0, 1)"
    total = sum(weight for _, weight in group.members)
    point = draw * total
    upper = 0
    for model, weight in group.members:
        upper += weight
        if weight and point < upper:
            return model
    # Only reached if rounding put the point at the very top: the last member taking traffic.
    return next(model for model, weight in reversed(group.members) if weight)


def group_order(group: ModelGroup, draw: float) -> list[str]:
    """The models to try for a call to the group: the picked member, then the others by
    descending weight (ties in the order configured) as its fallbacks. Zero-weight
    members are fallbacks only."""
    picked = pick_member(group, draw)
    others = sorted((m for m in group.members if m[0] != picked), key=lambda m: -m[1])
    return [picked, *(model for model, _ in others)]


def parse_target_regions(text: str) -> dict[str, str]:
    """`model=region,…` as a mapping; SettingsError if malformed or a model is listed twice."""
    regions: dict[str, str] = {}
    for item in names(text):
        model, _, region = (part.strip() for part in item.partition("="))
        if not model or not region or model in regions:
            raise SettingsError(
                f"GOVLEDGER_TARGET_REGIONS: {item!r} is not model=region, once per model"
            )
        regions[model] = region
    return regions


def parse_tenant_regions(text: str) -> dict[str, frozenset[str]]:
    """`tenant=region|region;…` as a mapping; SettingsError if malformed or a tenant is
    listed twice. Tenants not listed may be served in any region."""
    allowed: dict[str, frozenset[str]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        tenant, _, rest = (part.strip() for part in entry.partition("="))
        regions = frozenset(filter(None, (r.strip() for r in rest.split("|"))))
        if not tenant or not regions or tenant in allowed:
            raise SettingsError(
                f"GOVLEDGER_TENANT_REGIONS: {entry!r} is not tenant=region|…, once per tenant"
            )
        allowed[tenant] = regions
    return allowed


def in_regions(
    targets: Sequence[Target],
    target_region: Mapping[str, str],
    default_region: str,
    allowed: frozenset[str] | None,
) -> list[Target]:
    """The targets, in order, whose region is allowed (data residency): a model's region
    is its `target_region` entry, else `default_region`; None allows every region."""
    if allowed is None:
        return list(targets)
    return [t for t in targets if target_region.get(t.model, default_region) in allowed]
