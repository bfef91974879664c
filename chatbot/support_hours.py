"""Opening hours of the support team, parsed from one setting: is a person there now, and if not, when?

The format is `DAYS HH:MM-HH:MM[, HH:MM-HH:MM]` rules separated by `;`, then an IANA time zone:
`Mon-Fri 09:00-17:00; Sat 10:00-14:00 Europe/Berlin`. Days are Mon..Sun, ranges (`Mon-Fri`,
`Fri-Mon` wraps) and lists (`Mon,Wed`). A blank setting means someone is always there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class SupportHoursError(ValueError):
    """The SUPPORT_HOURS text cannot be understood; the message says what is wrong."""


@dataclass(frozen=True)
class Window:
    """One opening on one weekday (0 = Monday), in minutes after local midnight; end exclusive."""

    weekday: int
    start: int
    end: int


@dataclass(frozen=True)
class SupportHours:
    """Parsed opening hours in one time zone."""

    windows: tuple[Window, ...]
    tz: ZoneInfo
    spec: str

    def is_open(self, at: datetime) -> bool:
        """True when `at` (an aware datetime) falls inside an opening."""
        local = at.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        return any(w.weekday == local.weekday() and w.start <= minute < w.end for w in self.windows)

    def next_opening(self, at: datetime) -> datetime:
        """The first opening that starts after `at`, as an aware datetime in the support time zone."""
        local = at.astimezone(self.tz)
        for offset in range(8):
            day: date = local.date() + timedelta(days=offset)
            starts = sorted(w.start for w in self.windows if w.weekday == day.weekday())
            for start in starts:
                opening = datetime.combine(day, time(start // 60, start % 60), tzinfo=self.tz)
                if opening > local:
                    return opening
        raise AssertionError("a week always holds an opening")  # parse refuses no windows


def _day(name: str, spec: str) -> int:
    key = name.strip().lower()[:3]
    if key not in DAYS or len(name.strip()) < 3:
        raise SupportHoursError(
            f"SUPPORT_HOURS {spec!r}: {name!r} is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun."
        )
    return DAYS.index(key)


def _days(text: str, spec: str) -> list[int]:
    days: list[int] = []
    for part in text.split(","):
        if "-" in part:
            first, last = (_day(p, spec) for p in part.split("-", 1))
            span = (last - first) % 7
            days.extend((first + i) % 7 for i in range(span + 1))
        else:
            days.append(_day(part, spec))
    return days


def _minutes(hours: str, minutes: str, spec: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise SupportHoursError(f"SUPPORT_HOURS {spec!r}: {hours}:{minutes} is not a time of day.")
    return h * 60 + m


def parse_support_hours(spec: str) -> SupportHours | None:
    """Parse the SUPPORT_HOURS text; None when blank (always open). Raises SupportHoursError."""
    text = (spec or "").strip()
    if not text:
        return None
    head, _, zone = text.rpartition(" ")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SupportHoursError(
            f"SUPPORT_HOURS {spec!r}: end with an IANA time zone such as Europe/Berlin or UTC "
            f"({zone!r} is not one)."
        ) from None
    windows: list[Window] = []
    for rule in filter(None, (r.strip() for r in head.split(";"))):
        days_text, _, times_text = rule.partition(" ")
        ranges = [t.strip() for t in times_text.split(",") if t.strip()]
        if not ranges:
            raise SupportHoursError(
                f"SUPPORT_HOURS {spec!r}: {rule!r} needs days then hours, e.g. Mon-Fri 09:00-17:00."
            )
        days = _days(days_text, spec)
        for time_range in ranges:
            match = _TIME.match(time_range)
            if not match:
                raise SupportHoursError(
                    f"SUPPORT_HOURS {spec!r}: {time_range!r} is not HH:MM-HH:MM."
                )
            start = _minutes(match[1], match[2], spec)
            end = _minutes(match[3], match[4], spec)
            if end <= start:
                raise SupportHoursError(
                    f"SUPPORT_HOURS {spec!r}: {time_range!r} ends before it starts "
                    "(split a night across two days)."
                )
            windows.extend(Window(day, start, end) for day in days)
    if not windows:
        raise SupportHoursError(f"SUPPORT_HOURS {spec!r}: no opening hours found.")
    return SupportHours(windows=tuple(windows), tz=tz, spec=text)
