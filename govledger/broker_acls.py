"""The broker's wall in production: one SASL/SCRAM user per service role and the Kafka ACLs
each role gets, derived from the topic catalogue (schemas/topics.py) so that they cannot
drift from the topics.

`python -m govledger.broker_acls > compose/kafka-init.sh` writes the script the compose
`kafka-init` container runs: it creates the catalogue topics, the SCRAM users and the ACLs.
The broker denies whatever no ACL allows (allow.everyone.if.no.acl.found=false), so this
table is the whole of what each role may do. A unit test checks the committed script equals
this module's output, and that each topic has exactly its intended writers and readers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from schemas.settings import StreamSettings
from schemas.topics import (
    ALERTS,
    BREAKER_STATE,
    CATALOGUE,
    CHECKPOINTS,
    CONTROL,
    DLQ,
    ESCALATIONS,
    LINEAGE,
    NOTIFICATIONS,
    SLA,
    STORED,
    WALLET_STATE,
    Topic,
)
from sinks.writer import CONSUMER_GROUP as SINK_GROUP

# Faust names every topic and group it makes after its app id: changelogs, repartition
# and leader topics (`<id>-…`), the agents' group (`<id>`) and the intake's (`<id>-intake`).
FAUST_APP_ID: str = StreamSettings.worker_app_id
SCRAM_MECHANISM = "SCRAM-SHA-512"
# The init container reaches the broker over its loopback-only PLAINTEXT listener, whose
# anonymous principal is a super user (see compose/docker-compose.yml).
INIT_BOOTSTRAP = "localhost:9094"
KAFKA_BIN = "/opt/kafka/bin"
# Kafka's name for each of our operations in kafka-acls.sh.
READ = ("Read", "Describe")
WRITE = ("Write", "Describe")
GROUP = ("Read", "Describe")
FAUST_TOPICS = ("Create", "Describe", "Read", "Write")


@dataclass(frozen=True, slots=True)
class Role:
    """A service role: its SCRAM user and what it may read, write and join."""

    user: str
    doc: str
    reads: tuple[Topic, ...]
    writes: tuple[Topic, ...]
    groups: tuple[str, ...] = ()
    # Topics and groups under this prefix (the Faust app id), created and used freely.
    prefix: str = ""

    @property
    def secret(self) -> str:
        """Name of the compose secret that holds this user's password."""
        return f"kafka-{self.user}-password"


GATEWAY = Role(
    "gateway",
    "OpenAI-compatible gateway (GOVLEDGER_GATEWAY_SERVES=api): its lineage, the escalations "
    "its guardrails open (sealed into its own chain) and its chain checkpoints; reads what "
    "the sinks stored, to empty its outbox.",
    reads=(CONTROL, WALLET_STATE, ESCALATIONS, BREAKER_STATE, STORED),
    writes=(LINEAGE, ESCALATIONS, CHECKPOINTS),
)
ADMIN_API = Role(
    "admin-api",
    "Admin API (a gateway with GOVLEDGER_GATEWAY_SERVES=admin): the control log (keys, "
    "wallets, budgets, policy packs, escalation decisions) and its chain checkpoints; reads "
    "what the sinks stored, to empty its outbox.",
    reads=(CONTROL, WALLET_STATE, ESCALATIONS, BREAKER_STATE, STORED),
    writes=(CONTROL, CHECKPOINTS),
)
WORKER = Role(
    "worker",
    "Faust stream processors: state topics, alerts, SLA windows, their checkpoints and "
    "dead letters, plus Faust's own topics and groups under the app id; the notifier logs "
    "in as this user too (its delivery attempts; its group is under the app id); reads "
    "what the sinks stored, to empty the SLA outbox.",
    reads=(LINEAGE, CONTROL, ESCALATIONS, ALERTS, WALLET_STATE, STORED),
    writes=(WALLET_STATE, BREAKER_STATE, ALERTS, SLA, CHECKPOINTS, DLQ, NOTIFICATIONS),
    prefix=FAUST_APP_ID,
)
SINK = Role(
    "sink",
    "Sink and query API: reads every topic into the store; writes dead letters and the "
    "checkpoints of its dead-letter chain, and what each written batch stored (outboxes).",
    reads=CATALOGUE,
    writes=(DLQ, CHECKPOINTS, STORED),
    groups=(SINK_GROUP,),
)
AUDITOR = Role(
    "auditor",
    "Outside auditor and `govledger replay` from Kafka: reads every topic, writes nothing, "
    "joins no group.",
    reads=CATALOGUE,
    writes=(),
)
ROLES: tuple[Role, ...] = (GATEWAY, ADMIN_API, WORKER, SINK, AUDITOR)

# What kafka-init.sh accepts as a password: it goes inside SCRAM-SHA-512=[password=…].
PASSWORD_PATTERN = "^[A-Za-z0-9._-]{16,}$"  # noqa: S105 (a pattern, not a password)


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One allow rule: principal, operation, resource type, pattern type, resource name."""

    user: str
    operation: str
    resource: str  # topic or group
    pattern: str  # literal or prefixed
    name: str


def acls(roles: tuple[Role, ...] = ROLES) -> list[Acl]:
    """Every allow rule the roles need, and no other."""
    rules: set[Acl] = set()
    catalogue = {topic.name for topic in CATALOGUE}
    for role in roles:
        if role.prefix and any(name.startswith(role.prefix) for name in catalogue):
            raise ValueError(f"prefix {role.prefix!r} of {role.user} covers a catalogue topic")
        for topics, operations in ((role.reads, READ), (role.writes, WRITE)):
            for topic in topics:
                rules.update(
                    Acl(role.user, op, "topic", "literal", topic.name) for op in operations
                )
        for group in role.groups:
            rules.update(Acl(role.user, op, "group", "literal", group) for op in GROUP)
        if role.prefix:
            rules.update(
                Acl(role.user, op, "topic", "prefixed", role.prefix) for op in FAUST_TOPICS
            )
            rules.update(Acl(role.user, op, "group", "prefixed", role.prefix) for op in GROUP)
    return sorted(rules)


def _acl_commands(roles: tuple[Role, ...]) -> list[str]:
    """kafka-acls.sh lines, one per (user, operations, resource type, pattern type)."""
    grouped: dict[tuple[str, str, str, tuple[str, ...]], list[str]] = {}
    by_resource: dict[tuple[str, str, str, str], list[str]] = {}
    for rule in acls(roles):
        by_resource.setdefault((rule.user, rule.resource, rule.pattern, rule.name), []).append(
            rule.operation
        )
    for (user, resource, pattern, name), operations in by_resource.items():
        grouped.setdefault((user, resource, pattern, tuple(sorted(operations))), []).append(name)
    lines = []
    for (user, resource, pattern, allowed), names in sorted(grouped.items()):
        ops = " ".join(f"--operation {op}" for op in allowed)
        targets = " ".join(f"--{resource} {name}" for name in sorted(names))
        lines.append(
            f"acl --allow-principal User:{user} {ops} --resource-pattern-type {pattern} {targets}"
        )
    return lines


def init_script(roles: tuple[Role, ...] = ROLES) -> str:
    """The kafka-init container's script: topics, SCRAM users, ACLs."""
    topics = [
        f"topic {topic.name} {'compact' if topic.compacted else 'delete'}" for topic in CATALOGUE
    ]
    users = [f"user {role.user} {role.secret}" for role in roles]
    return "\n".join(
        [
            "#!/bin/bash",
            "# GENERATED by `python -m govledger.broker_acls > compose/kafka-init.sh` from",
            "# schemas/topics.py and govledger/broker_acls.py: edit those, then regenerate.",
            "#",
            "# Runs once per `up` in the kafka-init container, inside the broker's network",
            "# namespace, against its loopback-only listener (super user). Idempotent: topics",
            "# and users that exist are kept; ACLs are added. Revoking a grant removed from",
            "# the generator needs `kafka-acls.sh --remove` by hand.",
            "set -euo pipefail",
            f"BOOTSTRAP={INIT_BOOTSTRAP}",
            f'BIN="${{KAFKA_BIN:-{KAFKA_BIN}}}"',
            'SECRETS="${SECRETS_DIR:-/run/secrets}"',
            'PARTITIONS="${TOPIC_PARTITIONS:?set TOPIC_PARTITIONS}"',
            "# One broker: 1 and 1. Three brokers (compose/cluster.yml): 3 and 2, so a record",
            "# acked (acks=all) is on two brokers at least and one broker may be down.",
            'REPLICAS="${TOPIC_REPLICATION_FACTOR:-1}"',
            'MIN_ISR="${TOPIC_MIN_INSYNC_REPLICAS:-1}"',
            "",
            "topic() {  # name cleanup.policy",
            '  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \\',
            '    --topic "$1" --partitions "$PARTITIONS" --replication-factor "$REPLICAS" \\',
            '    --config "cleanup.policy=$2" --config "min.insync.replicas=$MIN_ISR"',
            "}",
            "",
            "user() {  # user secret-name; the password never reaches the output",
            "  local password",
            '  password="$(tr -d \'\\r\\n\' < "$SECRETS/$2")"',
            f"  if [[ ! $password =~ {PASSWORD_PATTERN} ]]; then",
            '    echo "secret $2: want 16+ of A-Z a-z 0-9 . _ - (compose/make-secrets.sh)" >&2',
            "    exit 1",
            "  fi",
            '  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter \\',
            '    --entity-type users --entity-name "$1" \\',
            f'    --add-config "{SCRAM_MECHANISM}=[password=$password]"',
            "}",
            "",
            "acl() {",
            '  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --add "$@" > /dev/null',
            "}",
            "",
            "# Topics: created here, so no service needs CREATE on the catalogue.",
            *topics,
            "",
            "# One SCRAM user per role.",
            *users,
            "",
            "# What each role may do; the broker denies everything else.",
            *_acl_commands(roles),
            "",
            'echo "kafka-init: topics, users and ACLs in place"',
            "",
        ]
    )


def main() -> int:
    """Print the kafka-init script."""
    sys.stdout.write(init_script())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
