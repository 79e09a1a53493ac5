"""Whose fault a failed store call was, and how long the sink waits before the next try
(sinks/store_faults.py): only a ClickHouse code about the data makes a record bad."""

from __future__ import annotations

import errno

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from sinks.store_faults import (
    RECORD_ERRORS,
    Backoff,
    FaultKind,
    classify,
    clickhouse_code,
    record_fault,
)

UUID_REFUSED = (
    "Code: 376. DB::Exception: Cannot parse uuid not-a-uuid: While executing "
    "AvroRowInputFormat. (CANNOT_PARSE_UUID)"
)
DISK_FULL_WRITE = (
    "Code: 75. DB::Exception: Cannot write to file /data/store/tmp_insert_x/data.bin, "
    "errno: 28, strerror: No space left on device. (CANNOT_WRITE_TO_FILE_DESCRIPTOR)"
)


def test_a_value_the_store_cannot_parse_makes_the_record_bad() -> None:
    fault = classify(DatabaseError(UUID_REFUSED, code=376, name="CANNOT_PARSE_UUID"))

    assert fault.kind is FaultKind.RECORD
    assert fault.code == 376
    assert "CANNOT_PARSE_UUID" in fault.reason


def test_a_code_in_the_message_counts_when_the_client_parsed_none() -> None:
    fault = classify(RuntimeError("Code: 27. DB::Exception: Cannot parse input: x"))
    assert (fault.kind, fault.code) == (FaultKind.RECORD, 27)


@pytest.mark.parametrize(
    ("error", "disk_full"),
    [
        (DatabaseError("Code: 243. DB::Exception: Cannot reserve 1 MiB", code=243), True),
        (RuntimeError(DISK_FULL_WRITE), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OperationalError("Error HTTPConnectionPool: [Errno 111] Connection refused"), False),
        (TimeoutError("timed out"), False),
        (DatabaseError("Code: 252. DB::Exception: Too many parts (300)", code=252), False),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded", code=241), False),
        (DatabaseError("Code: 60. DB::Exception: Unknown table lineage", code=60), False),
        (DatabaseError("Code: 99999. DB::Exception: a code of the future", code=99999), False),
        (DatabaseError("The ClickHouse server returned an error"), False),
        (RuntimeError(""), False),
    ],
)
def test_everything_not_about_the_data_is_the_stores_fault(
    error: BaseException, disk_full: bool
) -> None:
    fault = classify(error)

    assert fault.kind is FaultKind.STORE
    assert fault.disk_full is disk_full
    assert fault.reason  # the log line and the stats say why, even for an empty message


def test_a_record_quoting_disk_full_words_is_still_the_records_fault() -> None:
    # A parse error echoes the record's text: a hostile value must not turn itself into
    # an endless wait of the sink.
    message = "Code: 376. DB::Exception: Cannot parse uuid No space left on device errno: 28"
    fault = classify(DatabaseError(message, code=376))
    assert (fault.kind, fault.disk_full) == (FaultKind.RECORD, False)


def test_a_code_attribute_of_another_library_is_not_a_clickhouse_code() -> None:
    class ProxyError(Exception):
        code = 407  # an HTTP status, and also DECIMAL_OVERFLOW in ClickHouse's numbering

    assert 407 in RECORD_ERRORS
    assert clickhouse_code(ProxyError("Proxy Authentication Required")) is None
    assert classify(ProxyError("Proxy Authentication Required")).kind is FaultKind.STORE


def test_reasons_are_bounded() -> None:
    fault = classify(DatabaseError("Code: 27. DB::Exception: " + "x" * 10_000, code=27))
    assert len(fault.reason) == 1_000
    assert len(record_fault("y" * 5_000).reason) == 1_000


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base_ms=200, max_ms=30_000)

    assert [backoff.delay_ms(n) for n in range(9)] == [
        200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000
    ]  # fmt: skip
    assert backoff.delay_ms(10_000) == 30_000  # retried forever: the wait stays capped


@pytest.mark.parametrize(("base_ms", "max_ms"), [(0, 10), (-1, 10), (20, 10)])
def test_backoff_refuses_a_policy_that_would_spin_or_invert(base_ms: int, max_ms: int) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(base_ms, max_ms)


def test_backoff_refuses_a_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff(1, 2).delay_ms(-1)
