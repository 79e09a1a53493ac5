"""What a notification route may subscribe to and the shapes it may be delivered in: one
list for the notifier (streams/notify), the admin API and the command line. A module of
constants only, so `govledger notify --help` imports nothing heavier."""

from __future__ import annotations

from typing import Literal

Format = Literal["cloudevents", "slack", "pagerduty"]
FORMATS: tuple[Format, ...] = ("cloudevents", "slack", "pagerduty")

# What a route subscribes to (`--on`); `circuit.opened` and `escalation.p1` also get the
# resolve when the breaker closes or the escalation is decided.
ROUTE_EVENTS: tuple[str, ...] = (
    "quota.threshold",
    "circuit.opened",
    "sla.breached",
    "escalation.p1",
    "escalation.sla_breached",
    "export.completed",
)
