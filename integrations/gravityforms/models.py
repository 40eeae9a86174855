"""The parts of Gravity Forms' form and entry objects that admitflow reads.

Shapes: https://docs.gravityforms.com/form-object/, https://docs.gravityforms.com/field-object/ and
https://docs.gravityforms.com/entry-object/ (the REST API v2 and the Webhooks add-on's "All Fields" body both
carry the entry object: meta keys plus one key per field or input id, such as "1.3" for a name's first part).
A repeater field (Gravity Forms 2.4+, class GF_Field_Repeater) holds its sub-fields in `fields`; an entry read
through the API carries its items as a list of objects keyed by the sub-fields' ids.
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


class Choice(BaseModel):
    """A choice of a checkbox, radio, select or multi-select field: the entry stores `value`, people read `text`."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    text: str = ""
    value: str = ""

    @field_validator("text", "value", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


class FieldInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    label: str = ""
    isHidden: bool = False
    name: str = ""  # the input's dynamic population parameter

    @field_validator("label", "name", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

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
    inputName: str = ""  # the dynamic population parameter ("Allow field to be populated dynamically")
    cssClass: str = ""
    isRequired: bool = False
    visibility: str = "visible"  # visible, hidden or administrative
    choices: list[Choice] | None = None
    enableColumns: bool = False  # a list field with several columns
    checkboxLabel: str = ""  # a consent field's statement
    pageNumber: int | None = None  # absent in form exports, which drop it; page fields mark the breaks
    fields: list[FormField] | None = None  # a repeater's sub-fields

    @field_validator("inputs", "choices", "fields", mode="before")
    @classmethod
    def _empty_lists(cls, value: Any) -> Any:
        # Gravity Forms sends "" or null for fields without sub-inputs or choices.
        return value if isinstance(value, list) else None

    @field_validator("label", "adminLabel", "inputType", "nameFormat", "inputName", "cssClass", "visibility",
                     "checkboxLabel", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else str(value) if isinstance(value, int | float) else value

    @field_validator("isRequired", "enableColumns", mode="before")
    @classmethod
    def _php_bool(cls, value: Any) -> Any:
        # Older forms store flags as "1", "" or null.
        return bool(value) and value not in ("0", "false") if not isinstance(value, bool) else value

    @field_validator("pageNumber", mode="before")
    @classmethod
    def _page(cls, value: Any) -> Any:
        return value if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None

    @property
    def effective_type(self) -> str:
        """Post, quiz, product and option fields carry the real type in `inputType`."""
        return self.inputType or self.type

    @property
    def title(self) -> str:
        """What staff call the field: its label, else its admin label, else its type."""
        return " ".join((self.label or self.adminLabel or self.type).split())

    def choice_text(self, value: str) -> str:
        """The text people chose for a stored value (the value itself for an "other" answer)."""
        for choice in self.choices or ():
            if choice.value == value:
                return choice.text or value
        return value


class Form(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    title: str = ""
    fields: list[FormField] = Field(default_factory=list)

    @field_validator("title", mode="before")
    @classmethod
    def _title(cls, value: Any) -> Any:
        return "" if value is None else value

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
                # fromisoformat reads this shape too, at a tenth of strptime's cost; the checks keep it to it.
                if len(value) == 19 and value[10] == " " and value[13] == value[16] == ":":
                    return datetime.fromisoformat(value).replace(tzinfo=UTC)
                return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                return None
        return None if value in ("", None) else value
