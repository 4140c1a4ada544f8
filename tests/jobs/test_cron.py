"""The cron parser: fields, ranges, steps, names, aliases, seconds, and bad expressions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

import redkit
from redkit.jobs import CronExpression
from redkit.jobs.cron import time_zone


def ticks(expr: str, start: datetime, n: int, tz: str = "UTC") -> list[datetime]:
    cron = CronExpression.parse(expr)
    zone = time_zone(tz)
    out = []
    at = start
    for _ in range(n):
        at = cron.next_after(at, zone)
        out.append(at)
    return out


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def test_every_five_minutes_starts_on_the_next_multiple() -> None:
    assert ticks("*/5 * * * *", utc(2024, 1, 1, 10, 7, 30), 3) == [
        utc(2024, 1, 1, 10, 10),
        utc(2024, 1, 1, 10, 15),
        utc(2024, 1, 1, 10, 20),
    ]


def test_a_tick_is_strictly_after_the_given_time() -> None:
    assert ticks("0 * * * *", utc(2024, 1, 1, 10, 0), 1) == [utc(2024, 1, 1, 11, 0)]


def test_lists_ranges_and_stepped_ranges() -> None:
    assert ticks("0 9-17/4,20 * * *", utc(2024, 1, 1), 5) == [
        utc(2024, 1, 1, 9),
        utc(2024, 1, 1, 13),
        utc(2024, 1, 1, 17),
        utc(2024, 1, 1, 20),
        utc(2024, 1, 2, 9),
    ]


def test_names_and_sunday_as_seven() -> None:
    # 2024-01-01 is a Monday.
    assert ticks("30 8 * * mon-fri", utc(2024, 1, 5, 9), 1) == [utc(2024, 1, 8, 8, 30)]
    assert ticks("0 0 * * 7", utc(2024, 1, 1), 1) == [utc(2024, 1, 7)]
    assert ticks("0 0 1 jan,jul *", utc(2024, 2, 1), 1) == [utc(2024, 7, 1)]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # The 15th, or any Monday (Vixie cron semantics).
    assert ticks("0 0 15 * 1", utc(2024, 1, 1), 3) == [
        utc(2024, 1, 8),
        utc(2024, 1, 15),
        utc(2024, 1, 22),
    ]


def test_leap_day_and_month_ends() -> None:
    assert ticks("0 0 29 2 *", utc(2024, 3, 1), 1) == [utc(2028, 2, 29)]
    assert ticks("0 0 31 * *", utc(2024, 4, 1), 1) == [utc(2024, 5, 31)]


def test_aliases_and_an_optional_seconds_field() -> None:
    assert ticks("@hourly", utc(2024, 1, 1, 10, 30), 1) == [utc(2024, 1, 1, 11)]
    assert ticks("@daily", utc(2024, 1, 1, 10), 1) == [utc(2024, 1, 2)]
    assert ticks("*/20 * * * * *", utc(2024, 1, 1, 0, 0, 5), 3) == [
        utc(2024, 1, 1, 0, 0, 20),
        utc(2024, 1, 1, 0, 0, 40),
        utc(2024, 1, 1, 0, 1, 0),
    ]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "needs 5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("* 24 * * *", "outside 0-23"),
        ("* * 0 * *", "outside 1-31"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "backwards"),
        ("x * * * *", "not a number"),
        ("1,,2 * * * *", "empty item"),
        ("0 0 30 2 *", "never matches"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(redkit.InvalidInput, match=message):
        CronExpression.parse(expr)


@pytest.mark.cluster
async def test_a_tick_whose_job_was_trimmed_is_reported_removed_not_run_again(
    rk: redkit.Redkit,
) -> None:
    from redkit.jobs import JobState

    schedule = rk.schedule("*/5 * * * *", "cleanup", queue="maintenance")
    at = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    first = await schedule.tick(at)
    assert first.created
    await rk.redis.delete(rk.queue("maintenance").job_key(first.id))  # as retention would
    again = await schedule.tick(at)
    assert not again.created
    assert again.state is JobState.REMOVED
    assert JobState.REMOVED.terminal


BERLIN = "Europe/Berlin"


def test_a_time_zone_gives_wall_clock_ticks_in_winter_and_summer() -> None:
    assert ticks("0 3 * * *", utc(2026, 1, 10), 1, BERLIN) == [utc(2026, 1, 10, 2)]  # CET
    assert ticks("0 3 * * *", utc(2026, 7, 10), 1, BERLIN) == [utc(2026, 7, 10, 1)]  # CEST


def test_a_wall_time_the_clock_skips_runs_as_if_it_had_not_jumped() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    assert ticks("30 2 * * *", utc(2026, 3, 28, 12), 2, BERLIN) == [
        utc(2026, 3, 29, 1, 30),  # 03:30 CEST: the day's run is not lost
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    # Every half hour across the jump: no instant twice, none missing but the skipped ones.
    assert ticks("*/30 * * * *", utc(2026, 3, 29, 0, 15), 4, BERLIN) == [
        utc(2026, 3, 29, 0, 30),  # 01:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:00 (skipped) and 03:00 CEST, one instant
        utc(2026, 3, 29, 1, 30),  # 03:30 CEST
        utc(2026, 3, 29, 2, 0),
    ]


def test_a_wall_time_the_clock_repeats_runs_once() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:xx happens twice.
    assert ticks("30 2 * * *", utc(2026, 10, 24, 12), 2, BERLIN) == [
        utc(2026, 10, 25, 0, 30),  # the first 02:30 (CEST)
        utc(2026, 10, 26, 1, 30),  # the next day's, not the second 02:30
    ]
    assert ticks("0 * * * *", utc(2026, 10, 24, 23, 30), 3, BERLIN) == [
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 2, 0),  # 03:00 CET: the repeated 02:00 does not run again
        utc(2026, 10, 25, 3, 0),
    ]
    # A scheduler that starts during the repeated hour waits for the first new wall time.
    assert ticks("*/30 * * * *", utc(2026, 10, 25, 1, 10), 1, BERLIN) == [utc(2026, 10, 25, 2, 0)]


def test_an_unknown_time_zone_is_refused_with_a_hint() -> None:
    with pytest.raises(redkit.InvalidInput, match="IANA name"):
        time_zone("Mars/Olympus")


def test_a_schedule_in_a_time_zone_is_named_apart_from_the_utc_one(rk: redkit.Redkit) -> None:
    utc_entry = rk.schedule("0 3 * * *", "cleanup")
    berlin = rk.schedule("0 3 * * *", "cleanup", tz=BERLIN)
    assert utc_entry.name == "cleanup@0 3 * * *"
    assert berlin.name == "cleanup@0 3 * * *@Europe/Berlin"
    assert berlin.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 2)
    with pytest.raises(redkit.InvalidInput, match="unknown time zone"):
        rk.schedule("0 3 * * *", "cleanup", tz="Nowhere/Else")


@pytest.mark.cluster
async def test_a_running_schedule_is_listed_and_the_registry_stays_bounded(
    rk: redkit.Redkit,
) -> None:
    from redkit.jobs import list_schedules
    from redkit.jobs.queue import SCRIPTS
    from redkit.jobs.schedule import _registry_keys

    nightly = rk.schedule("0 3 * * *", "cleanup", queue="maintenance", tz="Europe/Berlin")
    await nightly.announce(await nightly.server_now())
    (info,) = await list_schedules(rk)
    assert (info.name, info.cron, info.tz, info.function, info.queue) == (
        nightly.name,
        "0 3 * * *",
        "Europe/Berlin",
        "cleanup",
        "maintenance",
    )
    assert info.next_run is not None
    assert info.next_run > info.seen
    # Past the cap the least recently announced go; past the age, stale ones go.
    keys = _registry_keys(rk)
    for name in ("a", "b", "c"):
        # Announcements in one millisecond tie (then the name decides which goes first).
        await asyncio.sleep(0.002)
        await rk.run(SCRIPTS["announce"], keys, [name, b"{}", 3_600_000, 2])
    assert {s.name for s in await list_schedules(rk)} == {"b", "c"}
    await asyncio.sleep(0.01)
    assert await rk.run(SCRIPTS["announce"], keys, ["d", b"{}", 5, 10]) == 1
    assert [s.name for s in await list_schedules(rk)] == ["d"]
