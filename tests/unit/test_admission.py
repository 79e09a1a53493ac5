"""The admission limit (gateway/admission.py): a loop that lags past its target for a
whole interval admits fewer calls, refusing the rest at once; a lag spike inside an
interval does not; the limit finds its way back up once the lag is gone."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.admission import Admission, AdmissionConfig, admission_config
from gateway.loop_lag import sample_lag
from tests.component.support import gateway_settings

CONFIG = AdmissionConfig(target_delay_s=0.005, interval_s=0.1, min_limit=2, max_limit=64)


def lag_for(admission: Admission, lag_s: float, start_s: float, intervals: int) -> float:
    """Samples of `lag_s` every 10 ms for `intervals` whole intervals; the time after."""
    now_s = start_s
    for sample in range(1, intervals * 10 + 1):
        now_s = start_s + sample * 0.01
        admission.observe_lag(lag_s, now_s)
    return now_s


def admit(admission: Admission, calls: int) -> int:
    """How many of `calls` new calls are admitted (they stay in flight)."""
    return sum(admission.admit() for _ in range(calls))


def test_a_quiet_loop_admits_up_to_the_most_and_refuses_past_it() -> None:
    admission = Admission(CONFIG)
    lag_for(admission, 0.001, 0.0, 3)
    assert admit(admission, 70) == 64
    assert admission.refused == 6
    admission.release()
    assert admission.admit()


def test_lag_over_the_target_for_an_interval_cuts_the_limit_below_the_calls_in_flight() -> None:
    admission = Admission(CONFIG)
    assert admit(admission, 40) == 40
    lag_for(admission, 0.02, 0.0, 1)  # four times the target: the limit halves
    assert admission.limit == 20
    assert not admission.admit()  # 40 in flight, limit 20: refused at once
    for _ in range(25):
        admission.release()
    assert admit(admission, 10) == 5  # 15 in flight + 5 = the limit


def test_a_lag_spike_within_an_interval_is_not_a_standing_queue() -> None:
    admission = Admission(CONFIG)
    admit(admission, 40)
    for step in range(1, 31):  # one sample in ten is late; the interval's lowest is fine
        admission.observe_lag(0.05 if step % 10 == 3 else 0.001, step * 0.01)
    assert admission.limit == 64


def test_the_limit_never_drops_below_its_floor_and_recovers_when_lag_goes() -> None:
    admission = Admission(CONFIG)
    admit(admission, 10)
    now_s = lag_for(admission, 1.0, 0.0, 20)
    assert admission.limit == CONFIG.min_limit
    for _ in range(10):
        admission.release()
    assert admit(admission, 5) == 2  # the floor still lets calls through
    for _ in range(60):  # lag gone, callers keep the limit reached
        now_s = lag_for(admission, 0.001, now_s, 1)
        admit(admission, 64)
    assert admission.limit == CONFIG.max_limit
    assert admission.last_lag_s == pytest.approx(0.001)


def test_an_idle_gateway_does_not_grow_its_limit_past_what_it_used() -> None:
    admission = Admission(CONFIG)
    admit(admission, 3)
    now_s = lag_for(admission, 0.05, 0.0, 1)
    assert admission.limit == 2.0  # 3 in flight, halved: under the floor
    lag_for(admission, 0.001, now_s, 5)  # the 3 in flight hold the limit reached: it grows
    assert admission.limit == 4.0  # and stops once it is above what is in flight
    for _ in range(3):
        admission.release()
    before = admission.limit
    lag_for(admission, 0.001, now_s + 1, 5)
    assert admission.limit == before


def test_target_zero_turns_admission_off() -> None:
    admission = Admission(AdmissionConfig(0.0, 0.1, 1, 2))
    lag_for(admission, 1.0, 0.0, 5)
    assert admit(admission, 10) == 10
    assert admission.refused == 0


def test_the_settings_make_the_config(tmp_path: object) -> None:
    settings = gateway_settings(
        tmp_path,  # type: ignore[arg-type]
        admission_target_delay_ms=7,
        admission_interval_ms=50,
        admission_min_calls=3,
        admission_retry_after_s=2,
        max_concurrent_upstream=100,
    )
    assert admission_config(settings) == AdmissionConfig(0.007, 0.05, 3, 100, 2)


@pytest.mark.parametrize(
    ("target_s", "interval_s", "low", "high"),
    [(-1.0, 0.1, 1, 2), (0.005, 0.0, 1, 2), (0.005, 0.1, 0, 2), (0.005, 0.1, 3, 2)],
)
def test_a_config_out_of_range_is_refused(
    target_s: float, interval_s: float, low: int, high: int
) -> None:
    with pytest.raises(ValueError, match=r"must be|need"):
        AdmissionConfig(target_s, interval_s, low, high)


class Ticking:
    """A clock that advances `step_s` each time it is read."""

    def __init__(self, step_s: float) -> None:
        self.now_s, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now_s += self.step_s
        return self.now_s


async def sample_until_judged(admission: Admission, clock: Ticking) -> None:
    """Run the sampler on `clock` until the admission has judged one whole interval."""
    await until_judged(admission, asyncio.create_task(sample_lag(admission, clock)))


async def until_judged(admission: Admission, sampler: asyncio.Task[None]) -> None:
    """Wait (5 s at most) until the admission has judged an interval; stop the sampler."""
    for _ in range(500):
        if admission.last_lag_s:
            break
        await asyncio.sleep(0.01)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler


@pytest.mark.parametrize(("in_flight", "shed"), [(40, True), (2, False)])
async def test_the_sampler_feeds_wall_clock_lag(in_flight: int, shed: bool) -> None:
    """Each sample's timer fires 10 ms late (twice the target), by the injected clock:
    the limit drops when calls are in flight, not for a loop late with the floor's few."""
    admission = Admission(CONFIG)
    admit(admission, in_flight)
    await sample_until_judged(admission, Ticking(0.02))  # an interval every 3 samples
    assert admission.last_lag_s == pytest.approx(0.01)
    assert (admission.limit < CONFIG.max_limit) is shed


async def test_an_idle_gateway_does_not_sample_until_a_call_is_admitted() -> None:
    """No call in flight: the sampler does not wake at all; the first call admitted starts
    it, and its samples judge the interval as before."""
    admission = Admission(CONFIG)
    clock = Ticking(0.02)
    sampler = asyncio.create_task(sample_lag(admission, clock))
    await asyncio.sleep(0.3)  # three intervals of an idle gateway
    assert clock.now_s == 0.0, "the idle sampler read no clock: it slept"
    admit(admission, 40)
    await until_judged(admission, sampler)
    assert admission.last_lag_s == pytest.approx(0.01)
    assert admission.limit < CONFIG.max_limit


def test_a_busy_gateway_under_its_target_waits_for_the_end_of_the_interval() -> None:
    """Once an interval has a sample under the target it cannot be judged overloaded, so
    the next sample is due at its end; while every sample is over the target, or before
    the first, a tenth of an interval."""
    admission = Admission(CONFIG)
    admit(admission, 10)
    assert admission.next_sample_in_s(0.0) == pytest.approx(0.01)
    admission.observe_lag(0.02, 0.01)  # over the target: keep looking for a low one
    assert admission.next_sample_in_s(0.01) == pytest.approx(0.01)
    admission.observe_lag(0.001, 0.03)  # under it: the interval's verdict is in
    assert admission.next_sample_in_s(0.03) == pytest.approx(0.07)
    assert admission.next_sample_in_s(0.095) == pytest.approx(0.01)  # never sooner
    admission.observe_lag(0.001, 0.1)  # ends the interval, and is the next one's first
    assert admission.last_lag_s == pytest.approx(0.001)
    assert admission.next_sample_in_s(0.1) == pytest.approx(0.1)
    for _ in range(10):
        admission.release()
    assert admission.next_sample_in_s(0.1) == pytest.approx(CONFIG.interval_s)


def test_a_sample_over_the_target_at_an_intervals_end_counts_for_the_next_one() -> None:
    """The boundary sample opens the next interval: lag that stays over the target from it
    on cuts the limit at that interval's end, as if sampled all along."""
    admission = Admission(CONFIG)
    admit(admission, 40)
    admission.observe_lag(0.001, 0.05)
    admission.observe_lag(0.02, 0.1)  # ends a fine interval; the next starts over target
    assert admission.limit == CONFIG.max_limit
    assert admission.next_sample_in_s(0.1) == pytest.approx(0.01)
    admission.observe_lag(0.02, 0.2)
    assert admission.limit == 20


async def test_a_busy_gateway_within_its_capacity_samples_about_once_an_interval() -> None:
    """Calls in flight and a loop on time (a target no lag on a loaded test machine
    reaches): the sampler wakes about once an interval (it woke ten times an interval,
    half of a gateway's wake-ups at one client's pace)."""
    interval_s = 0.05
    admission = Admission(AdmissionConfig(1.0, interval_s, 2, 64), now_s=time.monotonic())
    admit(admission, 10)
    samples: list[float] = []
    observe = admission.observe_lag

    def counted(lag_s: float, now_s: float) -> None:
        samples.append(lag_s)
        observe(lag_s, now_s)

    admission.observe_lag = counted  # type: ignore[method-assign]
    began = time.monotonic()
    sampler = asyncio.create_task(sample_lag(admission))
    await asyncio.sleep(0.5)  # ten intervals
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    intervals = (time.monotonic() - began) / interval_s
    assert 3 <= len(samples) <= intervals + 2, (len(samples), intervals)
    assert admission.limit == 64
