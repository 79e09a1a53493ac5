"""What a failed store call means for the sink, and how long to wait before the next try.

Two kinds of failure, and the sink treats them oppositely:
- the store refused a record for what it holds (a value its column cannot parse, a
  value out of range): the record is bad and waiting will not change that; the sink
  dead-letters it (alone: see `sinks/writer.py`) and goes on;
- anything else (a refused connection, a timeout, a full disk, too many parts, an
  error we do not know): the store is unwell; the sink waits and tries again, for as
  long as it takes, and commits no offset past the records it holds meanwhile.

Fail closed: a failure is about a record only when the store said so with a code in
`RECORD_ERRORS`. An unknown code or a transport error is a store fault, so a hiccup of
the store never dead-letters good records. The code decides, not the message's words: a
parse error may quote the record's own (hostile) text, which must not be able to turn a
bad record into an endless wait by saying "No space left on device".

Pure: no I/O; clickhouse-connect is imported for its exception class only.
"""

from __future__ import annotations

import enum
import errno
import re
from dataclasses import dataclass

from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

# ClickHouse error codes (src/Common/ErrorCodes.cpp) that name a value of the inserted
# data: parsing, conversion, range and constraint failures of one row. Codes that can
# also come from the store's own files (ATTEMPT_TO_READ_AFTER_EOF, CANNOT_READ_ALL_DATA,
# CORRUPTED_DATA) or from a schema that drifted from the records (THERE_IS_NO_COLUMN,
# NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_TABLE) stay out: they are the store's, not a record's.
RECORD_ERRORS: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    25: "CANNOT_PARSE_ESCAPE_SEQUENCE",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    128: "TOO_LARGE_ARRAY_SIZE",
    131: "TOO_LARGE_STRING_SIZE",
    190: "SIZES_OF_ARRAYS_DONT_MATCH",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    376: "CANNOT_PARSE_UUID",
    407: "DECIMAL_OVERFLOW",
    441: "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
    467: "CANNOT_PARSE_BOOL",
    469: "VIOLATED_CONSTRAINT",
    691: "UNKNOWN_ELEMENT_OF_ENUM",
}
NOT_ENOUGH_SPACE = 243
# How a full disk shows in a message: ClickHouse's own refusal, or the system's ENOSPC
# inside a write error (CANNOT_WRITE_TO_FILE_DESCRIPTOR ... errno: 28).
DISK_FULL_TEXT = re.compile(
    r"no space left on device|errno:? ?28\b|not_enough_space|enospc|not enough space",
    re.IGNORECASE,
)
# "Code: 27. DB::Exception: ..." as ClickHouse writes it (an engine or server message
# reached us without the client's parsed code).
CODE_IN_TEXT = re.compile(r"\bCode: (\d+)\. DB::Exception\b")
MAX_REASON_CHARS = 1_000


class FaultKind(enum.Enum):
    """Whose fault a failed store call was."""

    RECORD = "record"  # the data: dead-letter the record, never retry it
    STORE = "store"  # the store: wait, retry, commit nothing past it


@dataclass(frozen=True, slots=True)
class StoreFault:
    """A classified failure: whose, the ClickHouse code if any, and a reason to show."""

    kind: FaultKind
    code: int | None
    reason: str
    disk_full: bool = False


def clickhouse_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of an exception: the client's parsed code, else the
    `Code: N. DB::Exception` of its message. Codes of other libraries (an HTTP status on
    `.code`) are not ClickHouse's and are ignored."""
    if isinstance(exc, ClickHouseClientError) and isinstance(exc.code, int):
        return exc.code
    match = CODE_IN_TEXT.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException) -> StoreFault:
    """Whose fault a failed store call was (see the module's doc)."""
    text = str(exc) or type(exc).__name__
    reason = text[:MAX_REASON_CHARS]
    code = clickhouse_code(exc)
    if code in RECORD_ERRORS:
        return StoreFault(FaultKind.RECORD, code, reason)
    disk_full = (
        code == NOT_ENOUGH_SPACE
        or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
        or DISK_FULL_TEXT.search(text) is not None
    )
    return StoreFault(FaultKind.STORE, code, reason, disk_full=disk_full)


def record_fault(reason: str) -> StoreFault:
    """A record the sink could not turn into an insert at all (the store never saw it)."""
    return StoreFault(FaultKind.RECORD, None, reason[:MAX_REASON_CHARS])


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between tries of an unwell store: base, doubling per try, capped at max."""

    base_ms: int
    max_ms: int

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.max_ms:
            raise ValueError("backoff needs 0 < base_ms <= max_ms")

    def delay_ms(self, attempt: int) -> int:
        """The wait after failed try number `attempt` (0 for the first failure)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Past 2**32 times the base every wait is the cap; no need for larger powers.
        return min(self.max_ms, self.base_ms << min(attempt, 32))
