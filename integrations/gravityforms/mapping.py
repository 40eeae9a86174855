"""What an entry says about the person, read through the form's field types, so a new form needs no mapping.

Name inputs follow Gravity Forms' fixed sub-ids: .2 prefix, .3 first, .4 middle, .6 last, .8 suffix
(https://docs.gravityforms.com/name/). A consent field's .1 input is "1" when ticked
(https://docs.gravityforms.com/consent/).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from integrations.gravityforms.models import Form, FormField

NAME_FIRST = "3"
NAME_LAST = "6"
TEXT_CONSENT_LABEL = re.compile(r"\b(text|texts|texting|sms)\b", re.IGNORECASE)
BEST_TIME_LABEL = re.compile(r"best time|time to (call|reach)|when (should|can|may) we (call|reach)", re.IGNORECASE)
FOR_WHOM_LABEL = re.compile(r"who is this for|for whom|myself|loved one", re.IGNORECASE)


@dataclass(frozen=True)
class ApplicantFields:
    """The person's own words, as typed. PHI: never log."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    message: str | None = None
    consent: bool | None = None
    consent_to_text: bool | None = None
    best_time: str | None = None  # "best time to call", as chosen
    for_whom: str | None = None  # "for myself / a loved one", as chosen
    honeypot: str | None = None  # a field people never see: filled in only by bots


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text or None


def _input_value(entry: dict[str, Any], field: FormField, sub_id: str) -> str | None:
    return _text(entry.get(f"{field.id}.{sub_id}"))


def _split_full_name(full: str) -> tuple[str | None, str | None]:
    parts = full.split()
    if len(parts) == 1:
        return parts[0], None
    return " ".join(parts[:-1]), parts[-1]


def _ticked(entry: dict[str, Any], field: FormField) -> bool:
    if field.inputs:
        return any(_text(entry.get(item.id)) for item in field.inputs if not item.isHidden)
    return bool(_text(entry.get(str(field.id))))


def _yes(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() not in ("", "0", "no", "n", "false")


def read_applicant(form: Form, entry: dict[str, Any], overrides: Mapping[str, str] | None = None) -> ApplicantFields:
    """The form's first name, email, phone and paragraph field, and its consent boxes.

    Only the first field of each kind counts, even when it was left empty: a second phone field on a form is
    someone else's (an emergency contact), never the applicant's. `overrides` maps a role (see
    config/sites.py FieldRole) to the field or input id that holds it, for what field types cannot say.
    """
    fields = _read_by_type(form, entry)
    if not overrides:
        return fields
    values = {role: _text(entry.get(input_id)) for role, input_id in overrides.items()}
    changes: dict[str, Any] = {
        role: value
        for role, value in values.items()
        if role in ("first_name", "last_name", "email", "phone", "message", "best_time", "for_whom", "honeypot")
    }
    for role in ("consent", "consent_to_text"):
        if role in values:
            changes[role] = bool(_yes(values[role]))
    return replace(fields, **changes)


def _read_by_type(form: Form, entry: dict[str, Any]) -> ApplicantFields:
    first = last = email = phone = message = None
    consent: bool | None = None
    text_ok: bool | None = None
    seen: set[str] = set()
    best_time: list[str] = []
    for_whom: str | None = None
    for field in form.fields:
        kind = field.effective_type
        if kind in ("name", "email", "phone", "textarea"):
            if kind in seen:
                continue
            seen.add(kind)
        if kind == "name":
            if field.inputs:
                first = _input_value(entry, field, NAME_FIRST)
                last = _input_value(entry, field, NAME_LAST)
            else:
                full = _text(entry.get(str(field.id)))
                if full:
                    first, last = _split_full_name(full)
        elif kind == "email":
            email = _text(entry.get(str(field.id)))
        elif kind == "phone":
            phone = _text(entry.get(str(field.id)))
        elif kind == "textarea":
            message = _text(entry.get(str(field.id)))
        elif kind == "consent":
            ticked = _input_value(entry, field, "1") is not None
            if TEXT_CONSENT_LABEL.search(field.label):
                text_ok = ticked
            else:
                consent = ticked
        elif kind in ("select", "radio", "date", "time") and BEST_TIME_LABEL.search(field.label):
            answer = _text(entry.get(str(field.id)))
            if answer:
                best_time.append(answer)
        elif kind in ("select", "radio") and FOR_WHOM_LABEL.search(field.label) and for_whom is None:
            for_whom = _text(entry.get(str(field.id)))
        elif kind in ("checkbox", "radio", "select") and TEXT_CONSENT_LABEL.search(field.label):
            if kind == "checkbox":
                text_ok = _ticked(entry, field)
            else:
                answer = (_text(entry.get(str(field.id))) or "").lower()
                text_ok = answer in ("yes", "y", "1", "true", "ok") if answer else None
    return ApplicantFields(
        first, last, email, phone, message, consent, text_ok, best_time=" ".join(best_time) or None, for_whom=for_whom
    )
