"""Quiet hours are wall-clock time in their zone: across midnight, days, DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bot.config import SinkConfig
from bot.windows import Quiet


def quiet(**spec: object) -> Quiet:
    return Quiet.model_validate({"from": "22:00", "to": "07:00", **spec})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def ends(q: Quiet, moment: str) -> str | None:
    end = q.until(at(moment))
    return end.astimezone(q.tz).isoformat() if end else None


BERLIN = quiet(tz="Europe/Berlin")
NEW_YORK = quiet(tz="America/New_York")


@pytest.mark.parametrize(
    ("q", "moment", "end"),
    [
        # an ordinary night, across midnight
        (BERLIN, "2026-12-04T21:59:59+01:00", None),
        (BERLIN, "2026-12-04T22:00:00+01:00", "2026-12-05T07:00:00+01:00"),
        (BERLIN, "2026-12-05T03:00:00+01:00", "2026-12-05T07:00:00+01:00"),
        (BERLIN, "2026-12-05T06:59:59+01:00", "2026-12-05T07:00:00+01:00"),
        (BERLIN, "2026-12-05T07:00:00+01:00", None),
        # the night of 2026-03-29: clocks go from 02:00 to 03:00; the night is an hour shorter
        (BERLIN, "2026-03-28T22:00:00+01:00", "2026-03-29T07:00:00+02:00"),
        (BERLIN, "2026-03-29T03:30:00+02:00", "2026-03-29T07:00:00+02:00"),
        (BERLIN, "2026-03-29T07:00:00+02:00", None),
        (BERLIN, "2026-03-29T06:00:00+01:00", None),  # the same instant as 07:00 summer time
        # the night of 2026-10-25: 03:00 back to 02:00; the night is an hour longer
        (BERLIN, "2026-10-24T22:00:00+02:00", "2026-10-25T07:00:00+01:00"),
        (BERLIN, "2026-10-25T02:30:00+01:00", "2026-10-25T07:00:00+01:00"),
        (BERLIN, "2026-10-25T06:30:00+01:00", "2026-10-25T07:00:00+01:00"),
        (BERLIN, "2026-10-25T07:00:00+01:00", None),
        # New York: 2026-03-08 (02:00 → 03:00) and 2026-11-01 (02:00 → 01:00)
        (NEW_YORK, "2026-03-07T22:30:00-05:00", "2026-03-08T07:00:00-04:00"),
        (NEW_YORK, "2026-03-08T06:59:00-04:00", "2026-03-08T07:00:00-04:00"),
        (NEW_YORK, "2026-03-08T07:00:00-04:00", None),
        (NEW_YORK, "2026-10-31T23:00:00-04:00", "2026-11-01T07:00:00-05:00"),
        (NEW_YORK, "2026-11-01T01:30:00-05:00", "2026-11-01T07:00:00-05:00"),
        (NEW_YORK, "2026-11-01T06:59:59-05:00", "2026-11-01T07:00:00-05:00"),
        (NEW_YORK, "2026-11-01T07:00:00-05:00", None),
    ],
)
def test_window_follows_the_wall_clock(q: Quiet, moment: str, end: str | None) -> None:
    assert ends(q, moment) == end


def test_a_skipped_end_is_the_moment_clocks_jump() -> None:
    q = Quiet.model_validate({"from": "01:00", "to": "02:30", "tz": "Europe/Berlin"})
    assert ends(q, "2026-03-29T01:30:00+01:00") == "2026-03-29T03:00:00+02:00"
    assert ends(q, "2026-03-29T03:00:00+02:00") is None


def test_a_repeated_hour_ends_at_its_first_occurrence() -> None:
    q = Quiet.model_validate({"from": "00:00", "to": "02:30", "tz": "Europe/Berlin"})
    assert ends(q, "2026-10-25T01:00:00+02:00") == "2026-10-25T02:30:00+02:00"
    assert ends(q, "2026-10-25T02:30:00+01:00") is None  # the second 02:30: already over


def test_days_name_the_night_a_window_starts() -> None:
    q = quiet(tz="Europe/Berlin", days=["fri"])
    assert ends(q, "2026-12-04T23:00:00+01:00") == "2026-12-05T07:00:00+01:00"  # Friday night
    assert ends(q, "2026-12-05T06:00:00+01:00") == "2026-12-05T07:00:00+01:00"  # Saturday morning
    assert ends(q, "2026-12-05T23:00:00+01:00") is None  # Saturday night
    assert ends(q, "2026-12-04T06:00:00+01:00") is None  # Friday morning: Thursday's night


def test_a_daytime_window_and_one_second_before_its_end() -> None:
    q = Quiet.model_validate({"from": "09:00", "to": "17:00", "tz": "UTC"})
    assert ends(q, "2026-12-04T16:59:59+00:00") == "2026-12-04T17:00:00+00:00"
    assert ends(q, "2026-12-04T08:59:59+00:00") is None


def test_breakthrough_is_at_or_above_except() -> None:
    q = quiet(**{"except": "high"})
    assert q.breaks_through("urgent") and q.breaks_through("high")
    assert not q.breaks_through("default")
    assert not quiet().breaks_through("urgent")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"tz": "Europe/Berln"}, "unknown time zone 'Europe/Berln'; closest: Europe/Berlin"),
        ({"from": "25:00"}, "'25:00' is not a time of day"),
        ({"to": "22:00"}, "from and to are the same time"),
        ({"days": ["mon", "funday"]}, "unknown day 'funday'; allowed: mon, tue"),
        ({"except": "loud"}, "Input should be 'min', 'low', 'default', 'high' or 'urgent'"),
        ({"form": "22:00"}, "Extra inputs are not permitted"),
    ],
)
def test_mistakes_are_refused(spec: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        SinkConfig.model_validate(
            {"type": "ntfy", "quiet": {"from": "22:00", "to": "07:00", **spec}}
        )
    assert says in str(err.value)


def test_an_unquoted_time_yaml_read_as_minutes_is_taken() -> None:
    assert quiet(**{"from": 1320, "to": 420}) == quiet()


def test_a_limit_that_lets_nothing_through_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        SinkConfig.model_validate({"type": "ntfy", "limit": "0/1h"})
    assert "'0/1h' lets nothing through" in str(err.value)
    assert SinkConfig.model_validate({"type": "ntfy", "limit": "5/10min"}).limit == (5, 600.0)
