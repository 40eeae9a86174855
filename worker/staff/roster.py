"""Who on the admissions team is alerted, and in what order: staff, weekly shifts and escalation ladders.

Shifts are wall-clock times in the center's time zone (CENTER_TIMEZONE). The file is validated completely when it
is loaded, so a typo is an error at start-up that names the entry to fix, never a silent gap at 3 a.m.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_TIMEZONE = ZoneInfo("America/New_York")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


class RosterError(ValueError):
    """The roster file is missing or invalid; the message names the file and the entry to fix."""


class StaffMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: str = Field(min_length=1, max_length=128)
    phone: str
    crm_owner_id: str | None = Field(None, alias="hubspot_owner_id")

    @model_validator(mode="before")
    @classmethod
    def _no_order(cls, value: Any) -> Any:
        if isinstance(value, dict) and "order" in value:
            raise ValueError("`order` is replaced by [[shifts]] with on_call/second (see config/roster.example.toml)")
        return value

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str) -> str:
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            raise ValueError("must be an E.164 number such as +16175550101") from None
        if not phonenumbers.is_valid_number(number):
            raise ValueError("is not a valid phone number")
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


class Shift(BaseModel):
    """One weekly shift: on each of `days`, from `start` to `end` (an `end` at or before `start` is the next day)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", max_length=64)
    days: list[Day] = Field(min_length=1)
    start: time
    end: time
    on_call: str
    second: str | None = None
    supervisor: str | None = None  # default: the roster's supervisor

    @field_validator("start", "end")
    @classmethod
    def _whole_minutes(cls, value: time) -> time:
        if value.second or value.microsecond or value.tzinfo is not None:
            raise ValueError('must be a wall-clock time in whole minutes, such as "08:00"')
        return value

    @field_validator("days")
    @classmethod
    def _each_day_once(cls, value: list[Day]) -> list[Day]:
        if len(set(value)) != len(value):
            raise ValueError("names a day twice")
        return value

    def label(self, index: int) -> str:
        return f"shifts.{index}" + (f" ({self.name})" if self.name else "")

    def minutes(self) -> list[tuple[int, int]]:
        """(first minute of the week, length in minutes) for each day of the shift."""
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        length = (end - start) % MINUTES_PER_DAY or MINUTES_PER_DAY
        return [(DAYS.index(day) * MINUTES_PER_DAY + start, length) for day in self.days]


class RosterFile(BaseModel):
    """The TOML file as written; `load_roster` checks what one entry cannot check alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    supervisor: str | None = None
    staff: list[StaffMember] = Field(min_length=1)
    shifts: list[Shift] = Field(min_length=1)


@dataclass(frozen=True)
class Rung:
    """One step of an escalation ladder: who, and in what role."""

    role: str
    member: StaffMember


class Roster:
    """The validated roster. `on_call_staff(at)` is the escalation ladder at that moment, first to alert first."""

    def __init__(self, source: RosterFile, timezone: ZoneInfo) -> None:
        self.timezone = timezone
        self.staff = list(source.staff)
        self.shifts = list(source.shifts)
        self._by_id = {member.id: member for member in self.staff}
        self._supervisor = source.supervisor
        # The shift covering each minute of the week (Monday 00:00 is 0), or -1.
        self._week = [-1] * MINUTES_PER_WEEK
        for index, shift in enumerate(self.shifts):
            for first, length in shift.minutes():
                for minute in range(first, first + length):
                    self._week[minute % MINUTES_PER_WEEK] = index

    def shift_at(self, at: datetime) -> Shift | None:
        index = self._week[_week_minute(at.astimezone(self.timezone))]
        return self.shifts[index] if index >= 0 else None

    def ladder(self, at: datetime) -> list[Rung]:
        """On call, second, supervisor at `at`, each person once. Outside every shift: the supervisor alone."""
        shift = self.shift_at(at)
        if shift is None:
            ids = [("supervisor", self._supervisor)]
        else:
            ids = [("on call", shift.on_call), ("second", shift.second),
                   ("supervisor", shift.supervisor or self._supervisor)]
        rungs: list[Rung] = []
        for role, member_id in ids:
            if member_id is not None and all(rung.member.id != member_id for rung in rungs):
                rungs.append(Rung(role, self._by_id[member_id]))
        return rungs

    def on_call_staff(self, at: datetime) -> list[StaffMember]:
        """Who to alert at `at`, in escalation order (on call, second, supervisor)."""
        return [rung.member for rung in self.ladder(at)]

    def next_handover(self, at: datetime) -> datetime | None:
        """The next moment after `at` at which the ladder changes, or None if it is the same all week."""
        local = at.astimezone(self.timezone).replace(second=0, microsecond=0)
        now_minute = _week_minute(local)
        current = self._ladder_ids(self._week[now_minute])
        for ahead in range(1, MINUTES_PER_WEEK):
            if self._ladder_ids(self._week[(now_minute + ahead) % MINUTES_PER_WEEK]) != current:
                wall_clock = local.replace(tzinfo=None) + timedelta(minutes=ahead)
                return wall_clock.replace(tzinfo=self.timezone)
        return None

    def member(self, staff_id: str) -> StaffMember | None:
        return self._by_id.get(staff_id)

    def staff_with_phone(self, phone: str) -> StaffMember | None:
        return next((member for member in self.staff if member.phone == phone), None)

    def _ladder_ids(self, shift_index: int) -> tuple[str | None, ...]:
        if shift_index < 0:
            return (self._supervisor,)
        shift = self.shifts[shift_index]
        return (shift.on_call, shift.second, shift.supervisor or self._supervisor)


def _week_minute(local: datetime) -> int:
    return local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute


def _clock(week_minute: int) -> str:
    day, minute = divmod(week_minute % MINUTES_PER_WEEK, MINUTES_PER_DAY)
    return f"{DAYS[day].capitalize()} {minute // 60:02d}:{minute % 60:02d}"


def _problems(source: RosterFile) -> list[str]:
    """What is wrong across entries: duplicates, unknown staff ids, overlapping shifts, uncovered hours."""
    problems: list[str] = []
    for field in ("id", "name", "phone"):
        seen: dict[str, int] = {}
        for index, member in enumerate(source.staff):
            value = getattr(member, field)
            if value in seen:
                problems.append(f"staff.{index}.{field}: {value} is also staff.{seen[value]}'s {field}; "
                                "each staff member needs their own")
            seen.setdefault(value, index)
    ids = {member.id for member in source.staff}
    known = ", ".join(sorted(ids))
    if source.supervisor is not None and source.supervisor not in ids:
        problems.append(f"supervisor: no staff member has id {source.supervisor!r} (ids: {known})")
    for index, shift in enumerate(source.shifts):
        for role in ("on_call", "second", "supervisor"):
            member_id = getattr(shift, role)
            if member_id is not None and member_id not in ids:
                problems.append(f"{shift.label(index)}.{role}: no staff member has id {member_id!r} (ids: {known})")
    week = [-1] * MINUTES_PER_WEEK
    reported: set[tuple[int, int]] = set()
    for index, shift in enumerate(source.shifts):
        for first, length in shift.minutes():
            for minute in range(first, first + length):
                other = week[minute % MINUTES_PER_WEEK]
                if other >= 0 and (other, index) not in reported:
                    reported.add((other, index))
                    problems.append(f"{shift.label(index)} overlaps {source.shifts[other].label(other)} at "
                                    f"{_clock(minute)}: one shift at a time decides who is on call")
                week[minute % MINUTES_PER_WEEK] = index
    if source.supervisor is None:
        gaps = _gaps(week)
        if gaps:
            listed = "; ".join(f"{_clock(start)}-{_clock(end)}" for start, end in gaps[:3])
            problems.append(f"shifts: nobody is on call {listed}{' and more' if len(gaps) > 3 else ''}: add shifts "
                            "covering those hours or a top-level supervisor, who is alerted when no shift is on")
    return problems


def _gaps(week: list[int]) -> list[tuple[int, int]]:
    """Uncovered stretches of the week as (first minute, minute after the last), wrapping Sunday into Monday."""
    if all(owner < 0 for owner in week):
        return [(0, MINUTES_PER_WEEK)]
    start = next(minute for minute in range(MINUTES_PER_WEEK) if week[minute] >= 0)
    gaps: list[tuple[int, int]] = []
    gap_start: int | None = None
    for offset in range(1, MINUTES_PER_WEEK + 1):
        minute = (start + offset) % MINUTES_PER_WEEK
        if week[minute] < 0 and gap_start is None:
            gap_start = start + offset
        elif week[minute] >= 0 and gap_start is not None:
            gaps.append((gap_start, start + offset))
            gap_start = None
    return sorted(gaps, key=lambda gap: gap[0] % MINUTES_PER_WEEK)


def load_roster(path: Path, timezone: ZoneInfo = DEFAULT_TIMEZONE) -> Roster:
    """Read and validate the roster file; raises `RosterError` naming the file and every entry to fix."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RosterError(f"roster file {path} does not exist: set ROSTER_FILE to your staff roster") from None
    except OSError as exc:
        raise RosterError(f"roster file {path} cannot be read ({exc.strerror}): point ROSTER_FILE at a file") from None
    except UnicodeDecodeError:
        raise RosterError(f"roster file {path} is not UTF-8 text: save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise RosterError(f"roster file {path} is not valid TOML: {exc}") from None
    try:
        source = RosterFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise RosterError(f"roster file {path} is invalid: {problems}") from None
    cross_problems = _problems(source)
    if cross_problems:
        raise RosterError(f"roster file {path} is invalid: {'; '.join(cross_problems)}")
    return Roster(source, timezone)
