"""Who on the admissions team is alerted: the roster file, validated when it is loaded."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class RosterError(ValueError):
    """The roster file is missing or invalid; the message names the file and the entry to fix."""


class StaffMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    phone: str
    crm_owner_id: str | None = Field(None, alias="hubspot_owner_id")
    order: int = Field(ge=1)

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


class Roster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    staff: list[StaffMember] = Field(min_length=1)

    def on_call_staff(self, at: datetime) -> list[StaffMember]:
        """Who to alert at `at`, first one first. Shifts and escalation ladders come with the alerts issue."""
        return sorted(self.staff, key=lambda member: member.order)


def load_roster(path: Path) -> Roster:
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
        return Roster.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise RosterError(f"roster file {path} is invalid: {problems}") from None
