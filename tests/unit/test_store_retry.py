"""The sink's patience with an unwell store (sinks/store_retry.py): a store fault is
waited out with the backoff's delays, the figures say why meanwhile, and a record fault
comes back at once, never retried."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from sinks.store_faults import Backoff, FaultKind
from sinks.store_retry import StoreHealth, StoreRetry

REFUSED = OperationalError("Error HTTPConnectionPool: [Errno 111] Connection refused")
DISK_FULL = DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB", code=243)
BAD_UUID = DatabaseError("Code: 376. DB::Exception: Cannot parse uuid x", code=376)


class FlakyStore:
    """Fails with each of `failures` in turn, then answers `result`."""

    def __init__(self, failures: list[Exception], result: object = "rows") -> None:
        self.failures = list(failures)
        self.result = result
        self.calls = 0

    async def run(self, function: Any, *args: Any) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


class Sleeps:
    """A sleep that only notes each wait and what the figures said during it."""

    def __init__(self, health: StoreHealth) -> None:
        self.health = health
        self.seconds: list[float] = []
        self.states: list[dict[str, object]] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.states.append(self.health.state())


def retry_over(store: FlakyStore) -> tuple[StoreRetry, Sleeps]:
    health = StoreHealth()
    sleeps = Sleeps(health)
    return StoreRetry(store, Backoff(base_ms=100, max_ms=300), health, sleep=sleeps), sleeps


async def test_an_unwell_store_is_tried_until_it_answers_with_growing_waits() -> None:
    store = FlakyStore([REFUSED] * 5)
    retry, sleeps = retry_over(store)

    assert await retry.answer(print) == "rows"

    assert store.calls == 6
    assert sleeps.seconds == [0.1, 0.2, 0.3, 0.3, 0.3]
    assert all(state["state"] == "retrying" for state in sleeps.states)
    assert sleeps.states[-1]["error"] == str(REFUSED)
    assert sleeps.states[-1]["retries"] == 5
    assert retry.health.state() == {
        "state": "ok",
        "retrying_since_ms": None,
        "error": None,
        "disk_full": False,
        "retries": 5,
    }


async def test_a_full_disk_shows_while_it_lasts() -> None:
    retry, sleeps = retry_over(FlakyStore([DISK_FULL, DISK_FULL]))

    assert await retry.refused(print) is None

    assert [state["disk_full"] for state in sleeps.states] == [True, True]
    assert retry.health.disk_full is False


async def test_a_refused_record_comes_back_at_once_and_is_no_outage() -> None:
    store = FlakyStore([BAD_UUID])
    retry, sleeps = retry_over(store)

    fault = await retry.refused(print)

    assert fault is not None
    assert (fault.kind, fault.code) == (FaultKind.RECORD, 376)
    assert store.calls == 1
    assert sleeps.seconds == []
    assert retry.health.retries == 0


async def test_a_record_refused_after_an_outage_ends_the_wait() -> None:
    retry, sleeps = retry_over(FlakyStore([REFUSED, BAD_UUID]))

    fault = await retry.refused(print)

    assert fault is not None
    assert fault.kind is FaultKind.RECORD
    assert sleeps.seconds == [0.1]
    assert retry.health.state()["state"] == "ok"  # the store answered, if with a refusal


async def test_a_look_up_is_never_the_records_fault() -> None:
    # A call with no record in it: even a data code means the store is unwell, and is
    # waited out rather than dropped.
    retry, sleeps = retry_over(FlakyStore([BAD_UUID]))

    assert await retry.answer(print) == "rows"
    assert sleeps.seconds == [0.1]
