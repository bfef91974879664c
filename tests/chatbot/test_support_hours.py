"""SUPPORT_HOURS: parsed with real time zones; open or not, and when the next opening is."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from chatbot.support_hours import SupportHoursError, parse_support_hours

BERLIN = ZoneInfo("Europe/Berlin")


def test_weekday_hours_in_berlin() -> None:
    hours = parse_support_hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    assert hours is not None
    # Thursday 2026-11-26: 08:30 UTC is 09:30 in Berlin (winter, UTC+1).
    assert hours.is_open(datetime(2026, 11, 26, 8, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 11, 26, 7, 59, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 11, 26, 16, 0, tzinfo=UTC))  # 17:00 is closed
    # Friday evening -> Monday 09:00 Berlin.
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=BERLIN)
    assert hours.next_opening(friday_evening) == datetime(2026, 11, 30, 9, 0, tzinfo=BERLIN)
    # Early morning -> the same day's opening.
    early = datetime(2026, 11, 26, 6, 0, tzinfo=BERLIN)
    assert hours.next_opening(early) == datetime(2026, 11, 26, 9, 0, tzinfo=BERLIN)


def test_summer_time_is_the_zones_own() -> None:
    hours = parse_support_hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    assert hours is not None
    # Wednesday 2026-07-15: 07:30 UTC is 09:30 in Berlin (summer, UTC+2).
    assert hours.is_open(datetime(2026, 7, 15, 7, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 7, 15, 15, 30, tzinfo=UTC))


def test_several_rules_split_days_and_wrapping_ranges() -> None:
    hours = parse_support_hours("Mon,Wed 09:00-12:00, 13:00-17:00; Sat 10:00-14:00 UTC")
    assert hours is not None
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    assert hours.is_open(monday.replace(hour=11))
    assert not hours.is_open(monday.replace(hour=12, minute=30))
    assert not hours.is_open(datetime(2026, 12, 1, 11, tzinfo=UTC))  # Tuesday
    assert hours.next_opening(datetime(2026, 12, 5, 15, tzinfo=UTC)) == datetime(
        2026, 12, 7, 9, tzinfo=UTC
    )
    weekend = parse_support_hours("Fri-Mon 10:00-24:00 UTC")
    assert weekend is not None and weekend.is_open(datetime(2026, 11, 29, 23, 59, tzinfo=UTC))


def test_blank_means_always_open() -> None:
    assert parse_support_hours("") is None
    assert parse_support_hours("   ") is None


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("Mon-Fri 09:00-17:00", "time zone"),
        ("Mon-Fri 09:00-17:00 Mars/Olympus", "time zone"),
        ("Mon-Fry 09:00-17:00 UTC", "not a day"),
        ("Mon-Fri 9-17 UTC", "HH:MM-HH:MM"),
        ("Mon-Fri 17:00-09:00 UTC", "ends before it starts"),
        ("Mon-Fri 09:00-25:00 UTC", "not a time"),
        ("Mon-Fri UTC", "days then hours"),
        ("Europe/Berlin", "no opening hours"),
    ],
)
def test_bad_hours_say_what_is_wrong(spec: str, complaint: str) -> None:
    with pytest.raises(SupportHoursError, match=complaint):
        parse_support_hours(spec)
