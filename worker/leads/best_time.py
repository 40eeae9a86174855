"""When the person asked to be called ("best time to call: evenings", or a date and time), in the center's zone.

A time window that has already begun (an evening request made at 6 pm) means now; a window later today, or a
date, means then. Anything unrecognised means as soon as possible: never delay a callback on a guess.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Start and end of each window people pick on intake forms, center local time.
WINDOWS = {
    "morning": (time(9), time(12)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), time(21)),
}
_CLOCK = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?\s*m\.?\b", re.IGNORECASE)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_US_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")


def _window(text: str) -> tuple[time, time] | None:
    lowered = text.lower()
    for name, window in WINDOWS.items():
        if name in lowered:
            return window
    if "night" in lowered:
        return WINDOWS["evening"]
    return None


def _clock(text: str) -> time | None:
    match = _CLOCK.search(text)
    if match is None:
        return None
    hour, minute = int(match.group(1)) % 12, int(match.group(2) or 0)
    if match.group(3).lower() == "p":
        hour += 12
    return time(hour, minute) if minute < 60 else None


def _day(text: str) -> date | None:
    try:
        if match := _ISO_DATE.search(text):
            return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if match := _US_DATE.search(text):
            return date(int(match.group(3)), int(match.group(1)), int(match.group(2)))
    except ValueError:
        return None
    return None


def requested_call_time(answer: str | None, requested_at: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC moment the person asked to be called, or None for "as soon as possible"."""
    if not answer:
        return None
    local_now = requested_at.astimezone(zone)
    day, window = _day(answer), _window(answer)
    clock = None if window else _clock(answer)  # "Evening (5-9 pm)": the window, not its end
    if day is None and clock is None and window is None:
        return None
    start = clock or (window[0] if window else time(9))
    end = window[1] if window and clock is None else None
    target_day = day or local_now.date()
    candidate = datetime.combine(target_day, start, tzinfo=zone)
    if candidate <= local_now:
        if end is not None and local_now.time() < end and target_day == local_now.date():
            return None  # the window is open now
        if day is not None:
            return None  # a moment already past: call at once
        candidate += timedelta(days=1)
    return candidate.astimezone(requested_at.tzinfo)
