"""What doctor decides, without I/O: a check's result line, and the arithmetic of lag,
commit stalls, clock skew, file permissions, migrations, the admin token and the
published schemas. The probes (`govledger.doctor.probes`) fetch what these judge."""

from __future__ import annotations

import dataclasses
import re
import stat
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How a check came out; only `fail` makes doctor exit 1."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of doctor's report: status, the check's name, what it saw and, unless
    it passed, how to fix it."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def line(self) -> str:
        """`status  name  detail` and, unless ok, `; fix: hint`."""
        text = f"{self.status.value:<4}  {self.name:<11} {self.detail}"
        if self.hint and self.status is not Status.OK:
            text += f"; fix: {self.hint}"
        return text

    def as_json(self) -> dict[str, str]:
        """The result as a JSON object (`--json`)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "hint": "" if self.status is Status.OK else self.hint,
        }


def worst(statuses: Sequence[Status]) -> Status:
    """The worst of some statuses (ok when none)."""
    order = (Status.OK, Status.WARN, Status.FAIL)
    return max(statuses, key=order.index, default=Status.OK)


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when no check failed, 1 when one did (warnings pass)."""
    return 1 if any(r.status is Status.FAIL for r in results) else 0


# --- consumer groups: lag and commit stalls ---------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition a group consumes: its committed position (the next offset the group
    reads), the partition's end offset, and when the oldest record the group has not
    committed past was written (epoch ms; None when nothing is behind or unknown)."""

    committed: int
    end: int
    oldest_uncommitted_ms: int | None = None

    @property
    def lag(self) -> int:
        """Records on the broker the group has not committed past."""
        return max(0, self.end - self.committed)


@dataclasses.dataclass(frozen=True, slots=True)
class GroupView:
    """A consumer group as the broker describes it, with the partitions it commits on."""

    group_id: str
    state: str
    members: int
    partitions: Mapping[str, PartitionOffsets]


def group_findings(
    view: GroupView, now_ms: int, stall_after_ms: int, lag_warn_records: int
) -> tuple[Status, str]:
    """Whether a group is healthy: members present (fail if none), no partition whose
    oldest uncommitted record is older than `stall_after_ms` (fail: a commit stall, the
    position is not moving), total lag under `lag_warn_records` (warn)."""
    lag = sum(p.lag for p in view.partitions.values())
    stalled = sorted(
        (now_ms - p.oldest_uncommitted_ms, name)
        for name, p in view.partitions.items()
        if p.lag > 0
        and p.oldest_uncommitted_ms is not None
        and now_ms - p.oldest_uncommitted_ms >= stall_after_ms
    )
    summary = f"group {view.group_id}: {view.members} member(s), lag {lag} record(s)"
    if view.members < 1:
        return Status.FAIL, f"{summary}; no member (state {view.state or 'unknown'})"
    if stalled:
        age_ms, name = stalled[-1]
        return Status.FAIL, (
            f"{summary}; commits stalled on {len(stalled)} partition(s), {name} holds a "
            f"record uncommitted for {age_ms // 1000} s (threshold {stall_after_ms // 1000} s)"
        )
    if lag >= lag_warn_records:
        return Status.WARN, f"{summary}; at or past the warning threshold {lag_warn_records}"
    return Status.OK, summary


# --- clock skew ---------------------------------------------------------------------------


def date_header_ms(value: str) -> int | None:
    """An HTTP `Date` header as epoch ms (whole seconds), or None if it is not one."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * 1000


def skew_ms(sent_ms: int, received_ms: int, server_ms: int, resolution_ms: int = 1000) -> int:
    """The least clock difference consistent with one exchange: the server stamped a time
    in [server_ms, server_ms + resolution_ms) while our clock read [sent_ms, received_ms].
    0 when the intervals overlap; otherwise the gap, signed (+: the server is ahead)."""
    assert sent_ms <= received_ms, "a reply comes after its request"
    if server_ms > received_ms:
        return server_ms - received_ms
    if server_ms + resolution_ms < sent_ms:
        return server_ms + resolution_ms - sent_ms
    return 0


def skew_findings(skews_ms: Mapping[str, int], max_ms: int) -> tuple[Status, str]:
    """Fail when any part's clock is off ours by more than `max_ms`."""
    if not skews_ms:
        return Status.WARN, "no part answered with a Date header"
    parts = ", ".join(f"{name} {value:+d} ms" for name, value in sorted(skews_ms.items()))
    off = [name for name, value in skews_ms.items() if abs(value) > max_ms]
    if off:
        return Status.FAIL, f"clock off by more than {max_ms} ms: {parts}"
    return Status.OK, f"within {max_ms} ms of this host: {parts}"


# --- file permissions ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class FileStat:
    """What doctor needs of a file's or a directory's stat."""

    mode: int
    uid: int


def secret_file_findings(
    what: str, path: str, found: FileStat | None, my_uid: int, *, ours: bool
) -> tuple[Status, str]:
    """A secret file: present, owned by this user, and readable by its owner only.
    A file we made (`ours`, in the data dir) that others may read fails; a mounted one
    (a Docker secret, which compose mounts as the host file's mode) only warns."""
    if found is None:
        return Status.FAIL, f"{what} {path} is missing"
    if not stat.S_ISREG(found.mode):
        return Status.FAIL, f"{what} {path} is not a regular file"
    perms = stat.S_IMODE(found.mode)
    if perms & 0o002:
        return Status.FAIL, f"{what} {path} is world-writable (mode {perms:04o})"
    if perms & 0o077:
        status = Status.FAIL if ours else Status.WARN
        return status, f"{what} {path} is readable by others (mode {perms:04o})"
    if found.uid != my_uid:
        return Status.WARN, f"{what} {path} belongs to uid {found.uid}, not this user"
    return Status.OK, f"{what} {path} is owner-only (mode {perms:04o})"


def data_dir_findings(path: str, found: FileStat | None) -> tuple[Status, str]:
    """The data directory: present, a directory, not writable by everyone."""
    if found is None:
        return Status.FAIL, f"data dir {path} does not exist"
    if not stat.S_ISDIR(found.mode):
        return Status.FAIL, f"data dir {path} is not a directory"
    perms = stat.S_IMODE(found.mode)
    if perms & 0o002 and not perms & stat.S_ISVTX:
        return Status.FAIL, f"data dir {path} is world-writable (mode {perms:04o})"
    return Status.OK, f"data dir {path} (mode {perms:04o})"


# --- admin token ---------------------------------------------------------------------------

GENERATED_TOKEN = re.compile(r"adm_[A-Za-z0-9_-]{43}")
MIN_TOKEN_CHARS = 32


def admin_token_findings(token: str, *, generated: bool) -> tuple[Status, str]:
    """The admin token's shape (never its value): a generated one as `up` makes it, a
    configured one long enough to resist guessing and free of whitespace."""
    if not token:
        return Status.FAIL, "the admin token is empty"
    if any(c.isspace() for c in token) or not token.isprintable():
        return Status.FAIL, "the admin token holds whitespace or control characters"
    if generated and not GENERATED_TOKEN.fullmatch(token):
        return Status.FAIL, "the admin token file does not hold a token as `up` makes it"
    if len(token) < MIN_TOKEN_CHARS:
        return Status.WARN, f"the admin token is {len(token)} characters (< {MIN_TOKEN_CHARS})"
    return Status.OK, f"present, {len(token)} characters"


# --- store migrations ----------------------------------------------------------------------


def migration_findings(shipped: Sequence[int], applied: Sequence[int]) -> tuple[Status, str]:
    """Every shipped migration applied; one the code does not know means an older
    govledger runs against a newer store."""
    missing = sorted(set(shipped) - set(applied))
    unknown = sorted(set(applied) - set(shipped))
    if missing:
        listed = ", ".join(f"{n:03d}" for n in missing)
        return Status.FAIL, f"migrations not applied: {listed}"
    if unknown:
        listed = ", ".join(f"{n:03d}" for n in unknown)
        return Status.FAIL, f"the store has migrations this govledger does not ship: {listed}"
    return Status.OK, f"all {len(shipped)} migrations applied"


# --- topics ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TopicView:
    """A topic as the broker describes it."""

    partitions: int
    cleanup_policy: str | None  # None when the broker would not say


def topic_findings(
    expected: Mapping[str, bool], found: Mapping[str, TopicView], partitions: int
) -> tuple[Status, str]:
    """Every catalogue topic (name -> compacted) exists with the configured partitions
    (fewer fails; more warns: GOVLEDGER_TOPIC_PARTITIONS only applies at creation) and
    the right cleanup policy."""
    problems: list[str] = []
    warnings: list[str] = []
    for name, compacted in expected.items():
        topic = found.get(name)
        if topic is None:
            problems.append(f"{name} missing")
            continue
        if topic.partitions < partitions:
            problems.append(f"{name} has {topic.partitions} partitions (< {partitions})")
        elif topic.partitions > partitions:
            warnings.append(f"{name} has {topic.partitions} partitions (> {partitions})")
        want = "compact" if compacted else "delete"
        if topic.cleanup_policy is not None and want not in topic.cleanup_policy.split(","):
            problems.append(f"{name} cleanup.policy={topic.cleanup_policy} (want {want})")
    if problems:
        return Status.FAIL, "; ".join(problems + warnings)
    if warnings:
        return Status.WARN, "; ".join(warnings)
    return Status.OK, f"all {len(expected)} topics with {partitions} partitions"


# --- published schemas ------------------------------------------------------------------------

VERSIONED = re.compile(r"(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc")


def schema_findings(
    published: Mapping[str, Mapping[str, str]],
    current: Mapping[str, tuple[str, str]],
    sources: Mapping[str, Mapping[str, Any]],
) -> tuple[Status, str]:
    """The shipped `.avsc` files against `published.json`: each file published and
    unchanged (`current`: file -> (sha256, crc64 fingerprint hex)), each published file
    still shipped, and each version vN+1 able to read what vN wrote as far as fields go
    (every field vN+1 adds carries a default)."""
    problems = [
        f"{name} is not in published.json" for name in sorted(set(current) - set(published))
    ]
    problems += [
        f"{name} was published but is gone" for name in sorted(set(published) - set(current))
    ]
    for name in sorted(set(current) & set(published)):
        sha256, crc = current[name]
        entry = published[name]
        if entry.get("file_sha256") != sha256 or entry.get("crc64_avro") != crc:
            problems.append(f"{name} changed after publication")
    for name, source in sorted(sources.items()):
        match = VERSIONED.fullmatch(name)
        if match is None:
            problems.append(f"{name} is not named name.vN.avsc")
            continue
        version = int(match["version"])
        before = sources.get(f"{match['name']}.v{version - 1}.avsc")
        if version > 1 and before is None:
            problems.append(f"{name} has no predecessor v{version - 1}")
        elif before is not None:
            old = {f["name"] for f in before.get("fields", [])}
            added = [
                f["name"]
                for f in source.get("fields", [])
                if f["name"] not in old and "default" not in f
            ]
            if added:
                problems.append(f"{name} adds {', '.join(added)} without a default")
    if problems:
        return Status.FAIL, "; ".join(problems)
    return Status.OK, f"{len(current)} schemas match published.json, versions compatible"
