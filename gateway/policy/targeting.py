"""Whom a pack's step applies to: the calls of listed teams, on listed gateways, or all.

A step's own `targeting` (`{scope: org}`, `{scope: team, teams: [...]}`, the seed's
`{teams: [...]}`, and `gateways: [...]` with any of them) and the pack's top-level
`targeting` (the same keys) both hold: the step runs where both say it does. A gateway's
name is its `GOVLEDGER_GATEWAY_NAME`; a step that names gateways never runs on an unnamed
gateway or one it does not name."""

from __future__ import annotations

import dataclasses
from typing import Literal

from yaml.nodes import Node

from gateway.policy.yaml_input import Errors, choice, mapping, strings

MAX_TEAMS = 256
MAX_GATEWAYS = 256
TARGETING_KEYS = ("scope", "teams", "gateways")


@dataclasses.dataclass(frozen=True, slots=True)
class Targeting:
    """Whom a step applies to: the whole tenant (org) or listed teams, on every gateway
    (no `gateways`) or on the listed ones."""

    scope: Literal["org", "team"] = "org"
    teams: frozenset[str] = frozenset()
    gateways: frozenset[str] = frozenset()

    def applies(self, team_id: str, gateway: str = "") -> bool:
        """Whether calls of this team through this gateway run the step."""
        team_ok = self.scope == "org" or team_id in self.teams
        return team_ok and (not self.gateways or gateway in self.gateways)


EVERYONE = Targeting()


def parse_targeting(node: Node, errors: Errors) -> Targeting:
    """A `targeting` mapping; each problem an error at its line."""
    fields = mapping(node, "targeting", TARGETING_KEYS, errors)
    scope = choice(fields["scope"], "scope", ("org", "team"), errors) if "scope" in fields else None
    teams = strings(fields["teams"], "teams", errors, MAX_TEAMS) if "teams" in fields else ()
    gateways = (
        strings(fields["gateways"], "gateways", errors, MAX_GATEWAYS)
        if "gateways" in fields
        else ()
    )
    if "gateways" in fields and not gateways:
        errors.add(node, "targeting.gateways is empty: list the gateways (or leave it out)")
    if scope is None and "teams" in fields:
        # The seed writes `targeting: {teams: [...]}`: those teams, never the whole org.
        if not teams:
            errors.add(node, "targeting.teams is empty: list the teams (or write scope: org)")
        scope = "team"
    elif scope == "team" and not teams:
        errors.add(node, "targeting with scope team needs a non-empty teams list")
    if scope == "org" and teams:
        errors.add(node, "teams are only used with scope: team")
    if scope == "team":
        return Targeting("team", frozenset(teams), frozenset(gateways))
    return Targeting(gateways=frozenset(gateways))


def narrowed(step: Targeting, pack: Targeting) -> Targeting | None:
    """Where a step runs under the pack's targeting: both hold. None when no call could
    run it (its teams or gateways are all outside the pack's)."""
    if pack.scope == "team" and step.scope == "team":
        teams = step.teams & pack.teams
        if not teams:
            return None
    else:
        teams = step.teams if step.scope == "team" else pack.teams
    scope: Literal["org", "team"] = "team" if teams else "org"
    if pack.gateways and step.gateways:
        gateways = step.gateways & pack.gateways
        if not gateways:
            return None
    else:
        gateways = step.gateways or pack.gateways
    return Targeting(scope, teams, gateways)
