"""A small cron expression parser: ``minute hour day-of-month month day-of-week``.

Each field takes ``*``, a number, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``, and
comma-separated lists of these; months and weekdays also take names (``jan``, ``mon``).
Day-of-week runs 0-7 (0 and 7 are Sunday). As in Vixie cron, when both day-of-month and
day-of-week are restricted, a day matches if *either* matches. An optional sixth field in
front gives the seconds (``*/10 * * * * *``: every ten seconds). The aliases ``@yearly``
(``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and ``@hourly`` work.
Ticks are wall-clock times in a time zone (UTC unless a ``tz`` is given), as a person reads
a crontab. Across daylight-saving changes each wall-clock time runs at most once: in the
hour the clock repeats, only its first pass; a time the clock skips runs as if the clock
had not jumped (``30 2 * * *`` runs at 03:30 on the spring-forward day in Europe). So an
interval schedule (``*/15 * * * *``) pauses for the repeated hour in autumn (Vixie cron runs
those on real time instead); use ``tz="UTC"`` (the default) where an even pace matters more
than the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redkit.errors import InvalidInput

__all__ = ["CronExpression", "time_zone"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_HORIZON_YEARS = 8  # long enough for any Feb 29 schedule


def _value(text: str, names: dict[str, int], what: str, low: int, high: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise InvalidInput(f"cron {what}: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise InvalidInput(f"cron {what}: {value} is outside {low}-{high}")
    return value


def _field(text: str, what: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise InvalidInput(f"cron {what}: empty item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidInput(f"cron {what}: bad step {step_text!r} in {part!r}")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first = _value(a, names, what, low, high)
            last = _value(b, names, what, low, high)
            if first > last:
                raise InvalidInput(f"cron {what}: range {base!r} runs backwards")
        else:
            first = _value(base, names, what, low, high)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; :meth:`next_after` finds its next tick."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday ... 6 = Saturday (7 is folded into 0)."""
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        if not isinstance(text, str):
            raise InvalidInput(f"a cron expression must be a string, got {text!r}")
        source = _ALIASES.get(text.strip().lower(), text)
        parts = source.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise InvalidInput(
                f"cron expression {text!r} needs 5 fields (minute hour day-of-month month "
                "day-of-week), or 6 with seconds first"
            )
        fields = [
            _field(part, what, low, high, names)
            for part, (what, low, high, names) in zip(parts, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in fields[5])
        expr = cls(
            text=text,
            seconds=fields[0],
            minutes=fields[1],
            hours=fields[2],
            days=fields[3],
            months=fields[4],
            weekdays=weekdays,
            days_restricted=parts[3] != "*",
            weekdays_restricted=parts[5] != "*",
        )
        expr.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # raises if it never matches
        return expr

    def _day_matches(self, when: datetime) -> bool:
        in_month = when.day in self.days
        in_week = (when.weekday() + 1) % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        if self.days_restricted:
            return in_month
        if self.weekdays_restricted:
            return in_week
        return True

    def next_after(self, when: datetime, tz: tzinfo = UTC) -> datetime:
        """The first tick strictly after ``when``, in UTC (a naive ``when`` is taken as UTC).

        ``tz`` is the zone whose wall clock the expression describes.
        """
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        wall = when.astimezone(tz).replace(tzinfo=None, microsecond=0, fold=0)
        while True:
            wall = self._next_wall(wall)
            # fold=0: a repeated wall time means its first pass; a skipped one keeps the
            # offset from before the jump. Either way each wall time maps to one instant.
            instant = wall.replace(tzinfo=tz).astimezone(UTC)
            if instant > when:
                return instant

    def _next_wall(self, after: datetime) -> datetime:
        """The first naive wall-clock time strictly after ``after`` that matches."""
        t = after + timedelta(seconds=1)
        horizon = t.year + _HORIZON_YEARS
        while t.year <= horizon:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
                continue
            if not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if t.minute not in self.minutes:
                t = (t + timedelta(minutes=1)).replace(second=0)
                continue
            if t.second not in self.seconds:
                t += timedelta(seconds=1)
                continue
            return t
        raise InvalidInput(f"cron expression {self.text!r} never matches a real date")


def time_zone(tz: str | tzinfo) -> tzinfo:
    """``tz`` as a tzinfo: an IANA name (``"Europe/Berlin"``), ``"UTC"``, or a tzinfo."""
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise InvalidInput(f"a time zone must be an IANA name like 'Europe/Berlin', got {tz!r}")
    if tz.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {tz!r}: use an IANA name like 'Europe/Berlin' (on systems "
            "without a time zone database, `pip install tzdata`)"
        ) from None
