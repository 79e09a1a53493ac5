"""The broker ACLs of compose/: generated from the topic catalogue, each topic with exactly
its intended writers and readers, deny by default, and the committed init script in step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from govledger.broker_acls import (
    AUDITOR,
    FAUST_APP_ID,
    ROLES,
    Acl,
    Role,
    acls,
    init_script,
)
from schemas.topics import CATALOGUE, CONTROL

ROOT = Path(__file__).resolve().parents[2]
INIT_SCRIPT = ROOT / "compose" / "kafka-init.sh"

# Decided by hand, per topic: a topic added to the catalogue fails here until someone says
# who may write and read it.
WRITERS = {
    "govledger.lineage": {"gateway"},
    "govledger.control": {"admin-api"},
    "govledger.wallet-state": {"worker"},
    "govledger.breaker-state": {"worker"},
    "govledger.alerts": {"worker"},
    # Escalations are opened by the gateways' guardrails (sealed into the gateway's chain).
    "govledger.escalations": {"gateway"},
    "govledger.sla": {"worker"},
    "govledger.checkpoints": {"gateway", "admin-api", "worker", "sink"},
    "govledger.dlq": {"worker", "sink"},
    # What each sink batch stored: only sinks say so; outboxes (gateway, admin, SLA) read it.
    "govledger.stored": {"sink"},
    # The notifier's delivery attempts: it logs in as the worker's user.
    "govledger.notifications": {"worker"},
}
EVERY_READER = {"sink", "auditor"}
READERS = {
    "govledger.lineage": {"worker"} | EVERY_READER,
    "govledger.control": {"gateway", "admin-api", "worker"} | EVERY_READER,
    "govledger.wallet-state": {"gateway", "admin-api", "worker"} | EVERY_READER,
    "govledger.breaker-state": {"gateway", "admin-api"} | EVERY_READER,
    "govledger.alerts": {"worker"} | EVERY_READER,
    "govledger.escalations": {"gateway", "admin-api", "worker"} | EVERY_READER,
    "govledger.sla": EVERY_READER,
    "govledger.checkpoints": EVERY_READER,
    "govledger.dlq": EVERY_READER,
    "govledger.stored": {"gateway", "admin-api", "worker"} | EVERY_READER,
    "govledger.notifications": EVERY_READER,
}


def users_with(operation: str, topic: str) -> set[str]:
    return {
        rule.user
        for rule in acls()
        if rule.resource == "topic"
        and rule.pattern == "literal"
        and rule.name == topic
        and rule.operation == operation
    }


def test_the_expected_tables_cover_exactly_the_catalogue() -> None:
    names = {topic.name for topic in CATALOGUE}
    assert set(WRITERS) == names
    assert set(READERS) == names


@pytest.mark.parametrize("topic", [t.name for t in CATALOGUE])
def test_each_topic_has_exactly_its_intended_writers(topic: str) -> None:
    assert users_with("Write", topic) == WRITERS[topic]


@pytest.mark.parametrize("topic", [t.name for t in CATALOGUE])
def test_each_topic_has_exactly_its_intended_readers(topic: str) -> None:
    assert users_with("Read", topic) == READERS[topic]


def test_a_gateway_cannot_write_control_and_only_the_admin_api_can() -> None:
    assert "gateway" not in users_with("Write", CONTROL.name)
    assert users_with("Write", CONTROL.name) == {"admin-api"}


def test_no_role_creates_alters_or_deletes_a_catalogue_topic_or_touches_the_cluster() -> None:
    catalogue = {topic.name for topic in CATALOGUE}
    for rule in acls():
        assert rule.resource in {"topic", "group"}, rule  # no cluster, no transactional id
        if rule.name in catalogue:
            assert rule.operation in {"Read", "Write", "Describe"}, rule


def test_the_auditor_only_reads_and_joins_no_group() -> None:
    own = [rule for rule in acls() if rule.user == AUDITOR.user]
    assert {rule.operation for rule in own} == {"Read", "Describe"}
    assert {rule.resource for rule in own} == {"topic"}
    assert {rule.name for rule in own} == {topic.name for topic in CATALOGUE}


def test_consumer_groups_belong_to_the_sink_and_the_worker_alone() -> None:
    groups = {(rule.user, rule.pattern, rule.name) for rule in acls() if rule.resource == "group"}
    assert groups == {("sink", "literal", "govledger-sink"), ("worker", "prefixed", FAUST_APP_ID)}


def test_the_faust_prefix_is_the_workers_alone_and_covers_no_catalogue_topic() -> None:
    prefixed = [rule for rule in acls() if rule.pattern == "prefixed"]
    assert {rule.user for rule in prefixed} == {"worker"}
    assert all(not topic.name.startswith(FAUST_APP_ID) for topic in CATALOGUE)


def test_a_prefix_that_would_cover_a_catalogue_topic_is_refused() -> None:
    greedy = Role("greedy", "", reads=(), writes=(), prefix="govledger.")
    with pytest.raises(ValueError, match="covers a catalogue topic"):
        acls((greedy,))


def test_every_role_is_a_distinct_user_with_its_own_secret() -> None:
    assert len({role.user for role in ROLES}) == len(ROLES)
    assert len({role.secret for role in ROLES}) == len(ROLES)


def test_the_committed_init_script_is_the_generated_one() -> None:
    assert INIT_SCRIPT.read_text() == init_script(), (
        "regenerate: python -m govledger.broker_acls > compose/kafka-init.sh"
    )


# --- the init script, run against stand-ins of Kafka's command-line tools ---------------

STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$CALLS"
"""


def run_init(
    tmp_path: Path, passwords: dict[str, str], environment: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The script run as compose runs it, with `environment` (the kafka-init service's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for role in ROLES:
        (secrets / role.secret).write_text(passwords.get(role.user, f"{role.user}-pw-" + "a" * 20))
    calls = tmp_path / "calls"
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_BIN": str(bin_dir),
        "SECRETS_DIR": str(secrets),
        "TOPIC_PARTITIONS": "12",
        "CALLS": str(calls),
        **(environment or {}),
    }
    done = subprocess.run(
        ["bash", str(INIT_SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    return done, calls.read_text() if calls.exists() else ""


def test_the_init_script_makes_topics_users_and_acls(tmp_path: Path) -> None:
    passwords = {role.user: f"{role.user}-0123456789abcdef" for role in ROLES}
    done, calls = run_init(tmp_path, passwords)
    assert done.returncode == 0, done.stderr
    for topic in CATALOGUE:
        policy = "compact" if topic.compacted else "delete"
        assert (
            f"--topic {topic.name} --partitions 12 --replication-factor 1 "
            f"--config cleanup.policy={policy}"
        ) in calls
    for role in ROLES:
        password = passwords[role.user]
        assert (
            f"--entity-name {role.user} --add-config SCRAM-SHA-512=[password={password}]" in calls
        )
        assert passwords[role.user] not in done.stdout + done.stderr
    acl_lines = [line for line in calls.splitlines() if line.startswith("kafka-acls.sh")]
    granted = set()
    for line in acl_lines:
        words = line.split()
        user = words[words.index("--allow-principal") + 1].removeprefix("User:")
        pattern = words[words.index("--resource-pattern-type") + 1]
        ops = [words[i + 1] for i, w in enumerate(words) if w == "--operation"]
        targets = [
            (w[2:], words[i + 1]) for i, w in enumerate(words) if w in {"--topic", "--group"}
        ]
        granted |= {Acl(user, op, kind, pattern, name) for op in ops for kind, name in targets}
    assert granted == set(acls())


@pytest.mark.parametrize(
    "bad",
    ["short", "has]bracket-0123456789", "has,comma-0123456789", "has space 0123456789", ""],
)
def test_the_init_script_refuses_a_password_it_cannot_quote_without_printing_it(
    tmp_path: Path, bad: str
) -> None:
    done, calls = run_init(tmp_path, {"worker": bad})
    assert done.returncode == 1
    assert "kafka-worker-password" in done.stderr
    if bad:
        assert bad not in done.stdout + done.stderr
    assert "--entity-name worker" not in calls
