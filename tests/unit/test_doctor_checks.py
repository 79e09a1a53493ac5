"""doctor's pure judgements: lag and commit stalls, clock skew, file permissions, the
admin token, migrations, topics, the published schemas, and the report line."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from govledger.doctor.checks import (
    CheckResult,
    FileStat,
    GroupView,
    PartitionOffsets,
    Status,
    TopicView,
    admin_token_findings,
    data_dir_findings,
    date_header_ms,
    exit_code,
    group_findings,
    migration_findings,
    schema_findings,
    secret_file_findings,
    skew_findings,
    skew_ms,
    topic_findings,
)

NOW_MS = 1_800_000_000_000
STALL_MS = 120_000


def group(members: int = 1, /, **partitions: PartitionOffsets) -> GroupView:
    return GroupView(
        "govledger-streams-intake", "Stable" if members else "Empty", members, partitions
    )


# --- lag and stalls -------------------------------------------------------------------------


def test_a_group_with_members_and_no_lag_is_healthy() -> None:
    status, detail = group_findings(group(p0=PartitionOffsets(7, 7)), NOW_MS, STALL_MS, 100)
    assert status is Status.OK
    assert detail == "group govledger-streams-intake: 1 member(s), lag 0 record(s)"


def test_a_group_without_members_fails_whatever_its_lag() -> None:
    status, detail = group_findings(group(0), NOW_MS, STALL_MS, 100)
    assert status is Status.FAIL
    assert "no member (state Empty)" in detail


def test_lag_sums_over_partitions_and_never_goes_negative() -> None:
    view = group(a=PartitionOffsets(3, 10), b=PartitionOffsets(5, 9), c=PartitionOffsets(9, 4))
    assert [p.lag for p in view.partitions.values()] == [7, 4, 0]
    assert "lag 11 record(s)" in group_findings(view, NOW_MS, STALL_MS, 100)[1]


def test_a_record_uncommitted_for_longer_than_the_threshold_is_a_stall_naming_its_partition() -> (
    None
):
    stalled = PartitionOffsets(3, 10, oldest_uncommitted_ms=NOW_MS - STALL_MS - 5_000)
    moving = PartitionOffsets(3, 10, oldest_uncommitted_ms=NOW_MS - 1_000)
    status, detail = group_findings(
        group(**{"govledger.lineage[2]": stalled, "govledger.lineage[0]": moving}),
        NOW_MS,
        STALL_MS,
        100,
    )
    assert status is Status.FAIL
    assert "commits stalled on 1 partition(s), govledger.lineage[2]" in detail
    assert "uncommitted for 125 s (threshold 120 s)" in detail


def test_a_young_backlog_is_no_stall_and_an_old_record_already_committed_is_none() -> None:
    young = PartitionOffsets(3, 10, oldest_uncommitted_ms=NOW_MS - STALL_MS + 1)
    # The oldest-record time of a partition with no lag cannot make a stall.
    caught_up = PartitionOffsets(10, 10, oldest_uncommitted_ms=NOW_MS - 10 * STALL_MS)
    status, _ = group_findings(group(a=young, b=caught_up), NOW_MS, STALL_MS, 100)
    assert status is Status.OK


def test_lag_at_the_warning_threshold_warns() -> None:
    view = group(a=PartitionOffsets(0, 100))
    assert group_findings(view, NOW_MS, STALL_MS, 100)[0] is Status.WARN
    assert group_findings(view, NOW_MS, STALL_MS, 101)[0] is Status.OK


# --- clock skew -------------------------------------------------------------------------------


def test_a_date_header_reads_as_whole_seconds_and_anything_else_as_none() -> None:
    assert date_header_ms("Mon, 07 Dec 2026 08:00:00 GMT") == 1_796_630_400_000
    assert date_header_ms("yesterday") is None
    assert date_header_ms("") is None
    assert date_header_ms("Mon, 07 Dec 2026 08:00:00") is None  # no zone: not HTTP's


@pytest.mark.parametrize(
    ("sent_ms", "received_ms", "server_ms", "expected_ms"),
    [
        (10_500, 10_700, 10_000, 0),  # stamped within the second our request spanned
        (10_000, 10_100, 10_000, 0),
        (10_000, 10_100, 13_000, 2_900),  # ahead: at least 13 000 - 10 100
        (20_000, 20_100, 10_000, -9_000),  # behind: at most 11 000 - 20 000
    ],
)
def test_skew_is_the_least_difference_one_exchange_proves(
    sent_ms: int, received_ms: int, server_ms: int, expected_ms: int
) -> None:
    assert skew_ms(sent_ms, received_ms, server_ms) == expected_ms


def test_skew_past_the_limit_fails_naming_the_part() -> None:
    status, detail = skew_findings({"gateway": 0, "query-api": -2_500}, 2_000)
    assert status is Status.FAIL
    assert "query-api -2500 ms" in detail
    assert skew_findings({"gateway": 2_000}, 2_000)[0] is Status.OK
    assert skew_findings({}, 2_000)[0] is Status.WARN


# --- permissions ------------------------------------------------------------------------------

ME = 1000
FILE = stat.S_IFREG
DIR = stat.S_IFDIR


@pytest.mark.parametrize(
    ("mode", "uid", "ours", "expected", "words"),
    [
        (FILE | 0o600, ME, True, Status.OK, "owner-only (mode 0600)"),
        (FILE | 0o400, ME, True, Status.OK, "owner-only (mode 0400)"),
        (FILE | 0o640, ME, True, Status.FAIL, "readable by others (mode 0640)"),
        (FILE | 0o644, ME, False, Status.WARN, "readable by others (mode 0644)"),
        (FILE | 0o602, ME, False, Status.FAIL, "world-writable"),
        (FILE | 0o600, 0, True, Status.WARN, "belongs to uid 0"),
        (DIR | 0o700, ME, True, Status.FAIL, "not a regular file"),
    ],
)
def test_a_secret_file_is_owner_only(
    mode: int, uid: int, ours: bool, expected: Status, words: str
) -> None:
    status, detail = secret_file_findings(
        "root keyring", "/d/root.keys", FileStat(mode, uid), ME, ours=ours
    )
    assert status is expected
    assert words in detail


def test_a_missing_secret_file_fails() -> None:
    status, detail = secret_file_findings("admin token", "/d/admin.token", None, ME, ours=True)
    assert (status, detail) == (Status.FAIL, "admin token /d/admin.token is missing")


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (FileStat(DIR | 0o755, ME), Status.OK),
        (FileStat(DIR | 0o700, ME), Status.OK),
        (FileStat(DIR | 0o1777, ME), Status.OK),  # sticky: others cannot replace our files
        (FileStat(DIR | 0o777, ME), Status.FAIL),
        (FileStat(FILE | 0o700, ME), Status.FAIL),
        (None, Status.FAIL),
    ],
)
def test_the_data_dir_exists_and_is_not_writable_by_everyone(
    found: FileStat | None, expected: Status
) -> None:
    assert data_dir_findings("/d", found)[0] is expected


# --- admin token ------------------------------------------------------------------------------

GENERATED = "adm_" + "A" * 43


@pytest.mark.parametrize(
    ("token", "generated", "expected"),
    [
        (GENERATED, True, Status.OK),
        ("adm_short", True, Status.FAIL),
        ("x" * 40, True, Status.FAIL),  # a file `up` made holds `adm_…`
        ("x" * 40, False, Status.OK),
        ("x" * 12, False, Status.WARN),
        ("two words and then some more to be long enough", False, Status.FAIL),
        ("", False, Status.FAIL),
    ],
)
def test_the_admin_token_has_a_sound_shape(token: str, generated: bool, expected: Status) -> None:
    status, detail = admin_token_findings(token, generated=generated)
    assert status is expected
    assert token not in detail or not token  # the token itself is never shown


# --- migrations and topics ----------------------------------------------------------------------


def test_every_shipped_migration_must_be_applied_and_no_unknown_one() -> None:
    assert migration_findings([1, 2, 3], [1, 2, 3]) == (Status.OK, "all 3 migrations applied")
    assert migration_findings([1, 2, 3], [1]) == (Status.FAIL, "migrations not applied: 002, 003")
    status, detail = migration_findings([1, 2], [1, 2, 3])
    assert status is Status.FAIL
    assert detail.endswith("does not ship: 003")


def test_topics_exist_with_their_partitions_and_cleanup_policy() -> None:
    expected = {"lineage": False, "wallet-state": True}
    healthy = {"lineage": TopicView(4, "delete"), "wallet-state": TopicView(4, "compact")}
    assert topic_findings(expected, healthy, 4)[0] is Status.OK
    status, detail = topic_findings(
        expected, {"lineage": TopicView(2, "delete"), "wallet-state": TopicView(4, "delete")}, 4
    )
    assert status is Status.FAIL
    assert "lineage has 2 partitions (< 4)" in detail
    assert "wallet-state cleanup.policy=delete (want compact)" in detail
    assert topic_findings(expected, {"lineage": TopicView(4, None)}, 4)[1] == "wallet-state missing"
    more = {"lineage": TopicView(12, "delete"), "wallet-state": TopicView(12, "compact,delete")}
    assert topic_findings(expected, more, 4)[0] is Status.WARN


# --- published schemas ----------------------------------------------------------------------------

A_FIELD: dict[str, Any] = {"name": "a", "type": "long"}
V1: dict[str, Any] = {"type": "record", "name": "Thing", "fields": [A_FIELD]}


def _v2(**field: object) -> dict[str, Any]:
    return {**V1, "fields": [A_FIELD, {"name": "b", "type": "string", **field}]}


def _published(*names: str) -> dict[str, dict[str, str]]:
    return {n: {"file_sha256": f"sha-{n}", "crc64_avro": f"crc-{n}"} for n in names}


def _current(*names: str) -> dict[str, tuple[str, str]]:
    return {n: (f"sha-{n}", f"crc-{n}") for n in names}


def test_published_schemas_unchanged_and_compatible_pass() -> None:
    names = ("thing.v1.avsc", "thing.v2.avsc")
    sources = {names[0]: V1, names[1]: _v2(default="")}
    status, _ = schema_findings(_published(*names), _current(*names), sources)
    assert status is Status.OK


def test_an_edited_unpublished_or_vanished_schema_fails() -> None:
    published = _published("thing.v1.avsc", "gone.v1.avsc")
    current = {"thing.v1.avsc": ("edited", "crc-thing.v1.avsc"), **_current("new.v1.avsc")}
    sources = {"thing.v1.avsc": V1, "new.v1.avsc": V1}
    status, detail = schema_findings(published, current, sources)
    assert status is Status.FAIL
    assert "new.v1.avsc is not in published.json" in detail
    assert "gone.v1.avsc was published but is gone" in detail
    assert "thing.v1.avsc changed after publication" in detail


def test_a_version_that_adds_a_field_without_a_default_or_skips_one_fails() -> None:
    names = ("thing.v1.avsc", "thing.v2.avsc", "other.v2.avsc")
    sources = {names[0]: V1, names[1]: _v2(), names[2]: V1}
    status, detail = schema_findings(_published(*names), _current(*names), sources)
    assert status is Status.FAIL
    assert "thing.v2.avsc adds b without a default" in detail
    assert "other.v2.avsc has no predecessor v1" in detail


# --- the report ----------------------------------------------------------------------------


def test_a_line_shows_the_hint_only_when_the_check_did_not_pass() -> None:
    failed = CheckResult("worker", Status.FAIL, "no member", "start the worker")
    passed = CheckResult("worker", Status.OK, "1 member", "start the worker")
    assert failed.line() == "fail  worker      no member; fix: start the worker"
    assert passed.line() == "ok    worker      1 member"
    assert passed.as_json()["hint"] == ""
    assert exit_code([passed, CheckResult("clock", Status.WARN, "x")]) == 0
    assert exit_code([passed, failed]) == 1
