"""The parts of Gravity Forms' form and entry objects that admitflow reads.

Shapes: https://docs.gravityforms.com/form-object/, https://docs.gravityforms.com/field-object/ and
https://docs.gravityforms.com/entry-object/ (the REST API v2 and the Webhooks add-on's "All Fields" body both
carry the entry object: meta keys plus one key per field or input id, such as "1.3" for a name's first part).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENTRY_META_KEYS = frozenset(
    {
        "id", "form_id", "post_id", "date_created", "date_updated", "is_starred", "is_read", "ip", "source_url",
        "user_agent", "currency", "payment_status", "payment_date", "payment_amount", "payment_method",
        "transaction_id", "is_fulfilled", "created_by", "transaction_type", "status",
    }
)


class FieldInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    label: str = ""
    isHidden: bool = False

    @field_validator("id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> str:
        return str(value)


class FormField(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    type: str
    label: str = ""
    adminLabel: str = ""
    inputs: list[FieldInput] | None = None
    inputType: str = ""
    nameFormat: str = ""

    @field_validator("inputs", mode="before")
    @classmethod
    def _empty_inputs(cls, value: Any) -> Any:
        # Gravity Forms sends "" or null for fields without sub-inputs.
        return value if isinstance(value, list) else None

    @property
    def effective_type(self) -> str:
        """Post and quiz fields carry the real type in `inputType`."""
        return self.inputType or self.type


class Form(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    title: str = ""
    fields: list[FormField] = Field(default_factory=list)

    @field_validator("id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> str:
        return str(value)


class EntryMeta(BaseModel):
    """An entry's identity and context, without its field values."""

    model_config = ConfigDict(extra="ignore")

    id: str
    form_id: str
    status: str = "active"
    date_created: datetime | None = None
    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None

    @field_validator("id", "form_id", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> str:
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not (text.isascii() and text.isdigit()) or len(text) > 20:  # isdigit() alone accepts "²" and "١٢"
            raise ValueError("must be a Gravity Forms numeric id")
        return text

    @field_validator("date_created", mode="before")
    @classmethod
    def _gf_datetime(cls, value: Any) -> Any:
        # Gravity Forms writes "2026-11-27 03:12:45", in UTC.
        if isinstance(value, str) and value:
            try:
                return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                return None
        return None if value in ("", None) else value
