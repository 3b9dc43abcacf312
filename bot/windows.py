"""Quiet hours and limits as a sink or a rule writes them, and their time arithmetic.

A quiet window is wall-clock time in its zone: ``from: "22:00", to: "07:00"`` starts
at 22:00 on each of its ``days`` and ends at the next 07:00 there, across midnight and
across daylight-saving changes. A time that a change skips (02:30 on the night clocks
go forward) is the moment of the change (clocks jump from 02:00 to 03:00: a window to
02:30 ends then); a time that happens twice is its first occurrence.

    sinks:
      phone:
        type: ntfy
        quiet: {from: "22:00", to: "07:00", tz: Europe/Berlin, days: [mon, tue], except: urgent}
        limit: 5/10min
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PRIORITIES = ("min", "low", "default", "high", "urgent")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_clock(value: Any) -> Any:
    """``"22:00"`` → time; YAML reads an unquoted 22:00 as 1320 (minutes): taken too."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1440:
        return time(value // 60, value % 60)  # YAML 1.1's sexagesimal 22:00
    match = _CLOCK.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f'{value!r} is not a time of day; write it as "22:00" (24 h, quoted)')
    return time(int(match[1]), int(match[2]))


@functools.cache
def _zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def parse_zone(value: Any) -> Any:
    """An IANA zone name; an unknown one names the closest ones."""
    if isinstance(value, zoneinfo.ZoneInfo):
        return value
    name = str(value).strip()
    if name in _zones():
        return zoneinfo.ZoneInfo(name)
    lowered = {z.lower(): z for z in _zones()}
    if name.lower() in lowered:
        return zoneinfo.ZoneInfo(lowered[name.lower()])
    close = difflib.get_close_matches(name, _zones(), n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; write e.g. Europe/Berlin, UTC"
    raise ValueError(f"unknown time zone {name!r}{hint}")


Clock = Annotated[time, BeforeValidator(parse_clock)]
Zone = Annotated[zoneinfo.ZoneInfo, BeforeValidator(parse_zone)]
Priority = Literal["min", "low", "default", "high", "urgent"]


def _days(value: Any) -> Any:
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list):
        return value
    short = [str(d).strip().lower()[:3] for d in listed]
    unknown = [d for d, s in zip(listed, short, strict=True) if s not in DAYS]
    if unknown:
        raise ValueError(f"unknown day {unknown[0]!r}; allowed: {', '.join(DAYS)}")
    return short


class Quiet(BaseModel):
    """A sink's quiet hours: what it would send inside them waits for their end."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    start: Clock = Field(alias="from")
    end: Clock = Field(alias="to")
    tz: Zone = Field(default_factory=lambda: zoneinfo.ZoneInfo("UTC"))
    days: Annotated[list[str], BeforeValidator(_days)] = Field(default_factory=lambda: [*DAYS])
    except_: Priority | None = Field(None, alias="except")
    digest: bool = True

    @model_validator(mode="after")
    def _not_empty(self) -> Quiet:
        if self.start == self.end:
            raise ValueError("from and to are the same time: the window would be empty")
        return self

    def breaks_through(self, priority: str) -> bool:
        return self.except_ is not None and PRIORITIES.index(priority) >= PRIORITIES.index(
            self.except_
        )

    def until(self, now: datetime) -> datetime | None:
        """The end of the window ``now`` (aware) is in, in UTC; None outside."""
        today = now.astimezone(self.tz).date()
        for day in (today - timedelta(days=1), today):
            if DAYS[day.weekday()] not in self.days:
                continue
            start, end = self._bounds(day)
            if start <= now < end:
                return end
        return None

    def _bounds(self, day: date) -> tuple[datetime, datetime]:
        """The window starting on ``day``, in UTC (so comparisons are by instant)."""
        end_day = day if self.end > self.start else day + timedelta(days=1)
        return _wall(day, self.start, self.tz), _wall(end_day, self.end, self.tz)

    def describe(self) -> str:
        days = "" if len(self.days) == 7 else f" on {', '.join(self.days)}"
        breaks = f", {self.except_} and above break through" if self.except_ else ""
        how = "one digest per rule" if self.digest else "one by one"
        return (
            f"quiet {self.start:%H:%M}–{self.end:%H:%M} {self.tz.key}{days}, "
            f"sent at the end as {how}{breaks}"
        )


def _wall(day: date, clock: time, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant, in UTC, at which clocks in ``zone`` show ``clock`` on ``day`` or
    later: a time that a change to summer time skips is the moment of the change, a time
    that happens twice its first occurrence."""
    naive = datetime.combine(day, clock)
    at = naive.replace(tzinfo=zone).astimezone(UTC)
    if at.astimezone(zone).replace(tzinfo=None) == naive:
        return at
    at = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)  # before the gap: step to it
    while at.astimezone(zone).replace(tzinfo=None) < naive:
        at += timedelta(minutes=1)
    return at


def clock_label(moment: datetime, zone: zoneinfo.ZoneInfo) -> str:
    """``07:00 Europe/Berlin``."""
    local = moment.astimezone(zone)
    return f"{local:%H:%M} {zone.key}"


def show_duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
