"""The org baseline: the floor of every tenant's policy. Pure: no I/O, no clock.

A baseline is written like a pack (same steps, same YAML) plus one top-level key,
`role_ceiling`. Only org admins publish it (`PUT /v1/admin/policies/baseline`). It holds:

- required steps (rbac, pii-detector, content-filter, audit-logger), which run on every
  call of every tenant, before the tenant's own step of the same kind (`effective_pack`);
- the retention floor: the baseline's `audit-logger` `retention_days`. A tenant pack
  whose audit-logger keeps rows for less is refused, and the retention job never deletes
  rows younger than the floor, whatever an older pack says;
- `role_ceiling`: the highest role a tenant admin may grant (never org-admin).

A tenant pack that states a weaker version of a required step (a lower action, a lower
minimum role, no `user` where the org requires one, a shorter retention) is refused at
push and by `govledger policy lint`, naming the rule (`OrgViolation`). A pack that leaves
a required step out is accepted: the org's step runs anyway. Packs published before the
baseline was tightened keep working; the baseline's steps and floor still apply to them.
"""

from __future__ import annotations

import dataclasses

from gateway.policy.pack import (
    STEP_ORDER,
    AuditPolicy,
    ContentPolicy,
    PackError,
    PiiPolicy,
    PolicyPack,
    RbacPolicy,
    Step,
    parse_document,
)
from gateway.policy.targeting import EVERYONE
from gateway.policy.yaml_input import LintError
from schemas.records import ROLES, Role
from streams.keys.logic import role_rank

RULE_REQUIRED_STEP = "required_step"
RULE_RETENTION_FLOOR = "retention_floor"
RULE_ROLE_CEILING = "role_ceiling"
# Steps an org may require of everyone. human-oversight and cost-limit are left to the
# tenants: reviews are queued per tenant and budgets are set per team (`wallets budget`).
BASELINE_STEPS = ("rbac", "pii-detector", "content-filter", "audit-logger")
# No tenant admin grants org-admin, whatever the baseline says.
HIGHEST_ROLE_CEILING: Role = "tenant-admin"
ORG_TENANT = ""  # the tenant_id of org-wide control records

PII_ACTION_RANK = {"redact": 1, "block": 2}
CONTENT_ACTION_RANK = {"flag": 1, "block": 2}

# What a fresh stack runs until an org admin publishes its own baseline: personal data
# redacted on every call of every tenant, audit rows kept at least 30 days, tenant admins
# grant at most tenant-admin (as before the baseline existed).
DEFAULT_BASELINE_YAML = """\
# The org baseline a fresh govledger runs with. Publish your own with
# `govledger policy baseline FILE` (org admins only).
name: org-baseline
description: Personal data redacted for every tenant; audit rows kept at least 30 days.
role_ceiling: tenant-admin
policies:
  chain:
    - name: pii-detector
      policy:
        detect: [email, phone, card, iban, national_id, secret]
        action: redact
    - name: audit-logger
      policy:
        retention_days: 30
"""


@dataclasses.dataclass(frozen=True, slots=True)
class OrgBaseline:
    """A validated baseline: its required steps, and the highest role a tenant admin may
    grant."""

    pack: PolicyPack
    role_ceiling: Role

    @property
    def retention_floor_days(self) -> int | None:
        """The fewest days any tenant keeps its audit rows; None without an audit step."""
        step = self.pack.step("audit-logger")
        return step.policy.retention_days if step and isinstance(step.policy, AuditPolicy) else None

    def summary(self) -> dict[str, object]:
        """What the admin API shows of it."""
        return {
            "name": self.pack.name,
            "required_steps": [step.name for step in self.pack.steps],
            "retention_floor_days": self.retention_floor_days,
            "role_ceiling": self.role_ceiling,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class OrgViolation:
    """One org rule a tenant pack or a key issuance breaks."""

    rule: str
    line: int
    detail: str

    def __str__(self) -> str:
        return f"org baseline rule {self.rule}: {self.detail}"


def _baseline_errors(text: str) -> tuple[OrgBaseline | None, list[LintError]]:
    parsed = parse_document(text, extra_keys=("role_ceiling",))
    errors = list(parsed.errors)
    ceiling, ceiling_line = parsed.extras.get("role_ceiling", (None, 1))
    allowed = ROLES[: ROLES.index(HIGHEST_ROLE_CEILING) + 1]
    allowed_steps = ", ".join(BASELINE_STEPS)
    if "role_ceiling" not in parsed.extras:
        errors.append(LintError(1, f"the org baseline needs role_ceiling: {', '.join(allowed)}"))
    elif ceiling not in allowed:
        errors.append(LintError(ceiling_line, f"role_ceiling must be one of {', '.join(allowed)}"))
    errors.extend(
        LintError(line, f"{name} cannot be an org baseline step (allowed: {allowed_steps})")
        for name, line in parsed.step_lines.items()
        if name not in BASELINE_STEPS
    )
    if parsed.pack is not None:
        errors.extend(
            LintError(
                parsed.step_lines[step.name],
                f"{step.name}: an org baseline step applies to every team; no targeting",
            )
            for step in parsed.pack.steps
            if step.targeting != EVERYONE
        )
    if errors or parsed.pack is None:
        return None, sorted(errors, key=lambda e: e.line)
    return OrgBaseline(parsed.pack, ceiling), []


def lint_baseline(text: str) -> list[LintError]:
    """Every problem of a baseline document, in line order; empty when it is valid."""
    return _baseline_errors(text)[1]


def parse_baseline(text: str) -> OrgBaseline:
    """The baseline, or PackError listing every problem."""
    baseline, errors = _baseline_errors(text)
    if baseline is None:
        raise PackError(errors)
    return baseline


DEFAULT_BASELINE = parse_baseline(DEFAULT_BASELINE_YAML)


def _weaker(required: Step, own: Step, line: int) -> list[OrgViolation]:
    """How a tenant's step states less than the org's step of the same kind."""
    found: list[OrgViolation] = []

    def weaker(detail: str, rule: str = RULE_REQUIRED_STEP) -> None:
        found.append(OrgViolation(rule, line, detail))

    org, mine = required.policy, own.policy
    if isinstance(org, RbacPolicy) and isinstance(mine, RbacPolicy):
        if org.require_auth and not mine.require_auth:
            weaker("rbac require_auth false would drop the org's require_auth: true")
        if role_rank(mine.minimum_role) < role_rank(org.minimum_role):
            weaker(f"rbac minimum_role {mine.minimum_role} is below the org's {org.minimum_role}")
    elif isinstance(org, PiiPolicy) and isinstance(mine, PiiPolicy):
        if PII_ACTION_RANK[mine.action] < PII_ACTION_RANK[org.action]:
            weaker(f"pii-detector action {mine.action} is weaker than the org's {org.action}")
    elif isinstance(org, ContentPolicy) and isinstance(mine, ContentPolicy):
        if CONTENT_ACTION_RANK[mine.action] < CONTENT_ACTION_RANK[org.action]:
            weaker(f"content-filter action {mine.action} is weaker than the org's {org.action}")
    elif isinstance(org, AuditPolicy) and isinstance(mine, AuditPolicy):
        if mine.retention_days < org.retention_days:
            weaker(
                f"retention_days {mine.retention_days} is below the org floor of "
                f"{org.retention_days}",
                RULE_RETENTION_FLOOR,
            )
        if org.log_all_access and not mine.log_all_access:
            weaker("audit-logger log_all_access false would drop the org's log_all_access: true")
    return found


def pack_violations(
    baseline: OrgBaseline, text: str, default_name: str | None = None
) -> list[OrgViolation]:
    """The org rules a tenant pack's source breaks, in line order (empty for a pack that
    does not parse: its lint errors come first). `default_name` as for `parse_pack`: a
    pack named by its file must be checked as the pack it is."""
    parsed = parse_document(text, default_name=default_name)
    if parsed.pack is None:
        return []
    found: list[OrgViolation] = []
    for own in parsed.pack.steps:
        required = baseline.pack.step(own.name)
        if required is not None:
            found.extend(_weaker(required, own, parsed.step_lines[own.name]))
    return sorted(found, key=lambda v: v.line)


def lint_against(
    baseline: OrgBaseline, text: str, default_name: str | None = None
) -> list[LintError]:
    """A pack's lint errors, or, for a valid pack, the org rules it breaks."""
    parsed = parse_document(text, default_name=default_name)
    if parsed.errors:
        return parsed.errors
    return [LintError(v.line, str(v)) for v in pack_violations(baseline, text, default_name)]


def grant_violation(baseline: OrgBaseline, role: Role) -> OrgViolation | None:
    """Whether a tenant admin may issue a key of this role under the baseline."""
    if role_rank(role) <= role_rank(baseline.role_ceiling):
        return None
    return OrgViolation(
        RULE_ROLE_CEILING,
        1,
        f"a tenant admin may grant roles up to {baseline.role_ceiling}, not {role}",
    )


def _pii_rank(step: Step) -> int:
    return PII_ACTION_RANK[step.policy.action] if isinstance(step.policy, PiiPolicy) else 0


def effective_pack(baseline: OrgBaseline, pack: PolicyPack | None) -> PolicyPack:
    """The chain a call runs: for each kind of step, in the pack order, the org's step and
    then the tenant's. One exception: among pii-detector steps a blocking one runs first,
    so that redaction by the org does not hide from the tenant's block what it blocks."""
    own = pack.steps if pack is not None else ()
    steps: list[Step] = []
    for name in STEP_ORDER:
        group = [s for s in baseline.pack.steps if s.name == name]
        group += [s for s in own if s.name == name]
        if name == "pii-detector":
            group.sort(key=_pii_rank, reverse=True)  # stable: the org's first among equals
        steps.extend(group)
    if pack is None:
        return PolicyPack(baseline.pack.name, baseline.pack.description, tuple(steps))
    return PolicyPack(pack.name, pack.description, tuple(steps))


class ChainCache:
    """effective_pack per (tenant, pack name), kept until the baseline or the pack is
    republished: both are immutable and replaced whole, so `is` tells (a call used to build
    its chain anew). One entry per tenant and pack name its keys run under."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[OrgBaseline, PolicyPack | None, PolicyPack]] = {}

    def chain(
        self, tenant_id: str, pack_name: str, baseline: OrgBaseline, pack: PolicyPack | None
    ) -> PolicyPack:
        """The chain a call under this tenant's pack runs (effective_pack)."""
        kept = self._kept.get((tenant_id, pack_name))
        if kept is not None and kept[0] is baseline and kept[1] is pack:
            return kept[2]
        chain = effective_pack(baseline, pack)
        self._kept[(tenant_id, pack_name)] = (baseline, pack, chain)
        return chain


def floor_retention(days_by_tenant: dict[str, int], floor_days: int | None) -> dict[str, int]:
    """Each tenant's retention raised to the floor: rows younger than the floor are kept
    even under a pack published before the floor was raised."""
    if floor_days is None:
        return dict(days_by_tenant)
    return {tenant: max(days, floor_days) for tenant, days in days_by_tenant.items()}
