"""Export schedules, the pure part: the next run of `every` and cron cadences (UTC, no
daylight-saving shifts), missed runs collapsed into one, the minimum interval, and the
records as kept on disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sinks.exports.schedules import (
    Cadence,
    Due,
    ExportSchedule,
    ScheduleInputError,
    ScheduleRun,
    due,
    parse_cron,
    parse_every,
)

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


T0 = ms(2026, 3, 2, 10, 7, 30)  # a Monday


def test_every_runs_one_interval_after_creation_then_on_its_grid() -> None:
    hourly = Cadence(anchor_ms=T0, every_ms=HOUR_MS)
    assert hourly.next_after(T0) == T0 + HOUR_MS
    assert hourly.next_after(T0 - DAY_MS) == T0 + HOUR_MS
    assert hourly.next_after(T0 + HOUR_MS - 1) == T0 + HOUR_MS
    assert hourly.next_after(T0 + HOUR_MS) == T0 + 2 * HOUR_MS  # strictly after
    assert hourly.next_after(T0 + 5 * HOUR_MS + 17) == T0 + 6 * HOUR_MS


def test_cron_runs_at_its_utc_times() -> None:
    quarter = Cadence(anchor_ms=T0, cron="*/15 * * * *")
    assert quarter.next_after(T0) == ms(2026, 3, 2, 10, 15)
    assert quarter.next_after(ms(2026, 3, 2, 10, 15)) == ms(2026, 3, 2, 10, 30)
    weekdays = Cadence(anchor_ms=T0, cron="0 6 * * 1-5")
    assert weekdays.next_after(ms(2026, 3, 6, 7)) == ms(2026, 3, 9, 6)  # Friday → Monday
    sundays = Cadence(anchor_ms=T0, cron="0 0 * * 7")
    assert sundays.next_after(T0) == ms(2026, 3, 8)
    leap = Cadence(anchor_ms=T0, cron="0 0 29 2 *")
    assert leap.next_after(T0) == ms(2028, 2, 29)


def test_utc_runs_do_not_move_with_daylight_saving() -> None:
    # Europe moves its clocks on 29 March 2026 and the US on 8 March: a 02:30 UTC run is
    # one day apart throughout, with no skipped or doubled night.
    nightly = Cadence(anchor_ms=T0, cron="30 2 * * *")
    run = nightly.next_after(ms(2026, 3, 1))
    for day in range(40):
        assert run == ms(2026, 3, 1, 2, 30) + day * DAY_MS
        run = nightly.next_after(run)
    assert datetime.fromtimestamp(run / 1000, UTC) == datetime(2026, 4, 10, 2, 30, tzinfo=UTC)


def test_a_due_every_run_is_one_run_however_many_slots_passed() -> None:
    hourly = Cadence(anchor_ms=T0, every_ms=HOUR_MS)
    first = T0 + HOUR_MS
    assert due(hourly, first, first - 1, MINUTE_MS) is None
    assert due(hourly, first, first, MINUTE_MS) == Due(first, 0, first + HOUR_MS)
    # Down for five and a half hours: one run now, five slots collapsed into it, and the
    # next run on the grid after now (not a catch-up burst).
    now = first + 5 * HOUR_MS + 30 * MINUTE_MS
    assert due(hourly, first, now, MINUTE_MS) == Due(first, 5, first + 6 * HOUR_MS)


def test_a_due_cron_run_collapses_the_missed_ones_too() -> None:
    daily = Cadence(anchor_ms=T0, cron="0 6 * * *")
    first = ms(2026, 3, 3, 6)
    now = ms(2026, 3, 10, 9)  # a week later, mid-morning
    assert due(daily, first, now, MINUTE_MS) == Due(first, 7, ms(2026, 3, 11, 6))
    assert due(daily, first, first - 1, MINUTE_MS) is None


def test_runs_are_never_closer_than_the_minimum_interval() -> None:
    twice = Cadence(anchor_ms=T0, cron="0,1 * * * *")
    assert twice.shortest_gap_ms() == MINUTE_MS
    assert Cadence(anchor_ms=T0, cron="*/5 * * * *").shortest_gap_ms() == 5 * MINUTE_MS
    assert Cadence(anchor_ms=T0, every_ms=42_000).shortest_gap_ms() == 42_000
    slot = ms(2026, 3, 2, 11, 0)
    # At :00 with a two-minute minimum, :01 is skipped: the next run is the next hour's.
    assert due(twice, slot, slot + 400, 2 * MINUTE_MS) == Due(slot, 0, ms(2026, 3, 2, 12, 0))
    assert due(twice, slot, slot + 400, MINUTE_MS) == Due(slot, 0, ms(2026, 3, 2, 11, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 6 * * 1-5", "0 6 * * 1-5"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("  0   6 * *  0 ", "0 6 * * 0"),
        ("0 0 1 1,7 *", "0 0 1 1,7 *"),
        ("0-30/10 8-18/2 * * *", "0-30/10 8-18/2 * * *"),
    ],
)
def test_a_cron_of_the_classic_subset_is_kept_normalized(text: str, expected: str) -> None:
    assert parse_cron(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "* * * *",
        "* * * * * *",  # a seconds or year field
        "@daily",
        "0 0 L * *",
        "H * * * *",
        "0 0 * * mon",
        "0 0 * jan *",
        "0 0 1W * *",
        "0 0 * * 1#2",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 8",
        "-1 * * * *",
        "*/0 * * * *",
        "*/61 * * * *",
        "5/10 * * * *",
        "10-5 * * * *",
        "1,,2 * * * *",
        "1, * * * *",
        "** * * * *",
        "001 * * * *",
        "0 0 31 2 *",  # never fires
        "0 0 30 2 *",
        "*\t* * * *",
        "* * * * *\n",
        "\u0661 * * * *",  # an Arabic-Indic digit
        "\uff11 * * * *",  # a fullwidth digit
        "* * * * *; rm -rf /",
        "1 " * 60,
        "*/5 * * * * " + " " * 200,
    ],
)
def test_cron_text_outside_the_subset_is_refused(text: str) -> None:
    with pytest.raises(ScheduleInputError) as refused:
        parse_cron(text)
    assert refused.value.code == "invalid_cron"


def test_every_takes_a_duration_and_nothing_else() -> None:
    assert parse_every("1d") == DAY_MS
    assert parse_every("90s") == 90_000
    for text in ("0s", "1w", "-1d", "1.5h", "1d ", "", "9" * 40 + "d"):
        with pytest.raises(ScheduleInputError) as refused:
            parse_every(text)
        assert refused.value.code == "invalid_every"


def _schedule(**overrides: object) -> ExportSchedule:
    fields: dict[str, object] = {
        "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "tenant": "acme",
        "type": "events",
        "format": "csv",
        "since": "7d",
        "description": "weekly",
        "created_by": "key:k1",
        "created_at_ms": T0,
        "every": None,
        "cron": "0 6 * * 1",
        "next_run_ms": ms(2026, 3, 9, 6),
        **overrides,
    }
    return ExportSchedule(**fields)  # type: ignore[arg-type]


def test_a_schedule_reads_back_as_kept_and_shows_its_last_run_first() -> None:
    schedule = _schedule()
    schedule.runs = [
        ScheduleRun(slot_ms=T0 + n, missed=0, submitted_at_ms=T0 + n, status="succeeded")
        for n in range(3)
    ]
    schedule.runs_total = 3
    again = ExportSchedule.from_record(schedule.record())
    assert again == schedule
    shown = again.public(with_runs=True)
    assert shown["last_run"]["slot_ms"] == T0 + 2
    assert [r["slot_ms"] for r in shown["runs"]] == [T0 + 2, T0 + 1, T0]
    assert "runs" not in again.public(with_runs=False)


@pytest.mark.parametrize(
    "overrides",
    [
        {"every": "1d"},  # both
        {"cron": None},  # neither
        {"cron": "0  6 * * 1"},  # not as the route keeps it
        {"cron": "@weekly"},
        {"every": "1w", "cron": None},
    ],
)
def test_a_kept_schedule_that_is_not_one_is_refused(overrides: dict[str, object]) -> None:
    record = _schedule().record()
    record.update(overrides)
    with pytest.raises(ValueError):  # noqa: PT011 - ScheduleInputError is one
        ExportSchedule.from_record(record)


def test_the_first_cron_run_after_a_day_boundary() -> None:
    # A run due at 00:00 is not skipped when asked from the millisecond before it.
    midnight = Cadence(anchor_ms=T0, cron="0 0 * * *")
    assert midnight.next_after(ms(2026, 3, 3) - 1) == ms(2026, 3, 3)
    start = datetime(2026, 3, 3, tzinfo=UTC) + timedelta(milliseconds=1)
    assert midnight.next_after(int(start.timestamp() * 1000)) == ms(2026, 3, 4)
