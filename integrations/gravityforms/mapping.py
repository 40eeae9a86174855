"""What an entry says about the person, read through a mapping inferred once per form, which `forms show` prints.

Each role (first name, email, phone, message...) has candidate fields, best first. A field's kind comes from its
type (an email field holds an email, whatever its label); a plain text or hidden field counts by its label, admin
label, dynamic population parameter (`inputName`) or CSS class. Candidates are ranked by what those words say:
the person's own field first, then a work address, then one inside a repeater; a field about someone else (an
emergency contact, a referrer, a loved one) is never taken for the person's. The first ranked candidate that was
answered gives the value, so a multi-page form whose first paragraph field was left empty keeps the message in the
second. Name inputs follow Gravity Forms' fixed sub-ids: .2 prefix, .3 first, .4 middle, .6 last, .8 suffix
(https://docs.gravityforms.com/name/). A consent field's .1 input is "1" when ticked
(https://docs.gravityforms.com/consent/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from integrations.gravityforms.answers import KNOWN_TYPES, input_value, repeater_items
from integrations.gravityforms.models import Form, FormField

NAME_FIRST = "3"
NAME_LAST = "6"
TEXT_CONSENT_LABEL = re.compile(r"\b(text|texts|texting|sms)\b", re.IGNORECASE)
BEST_TIME_LABEL = re.compile(r"best time|time to (call|reach)|when (should|can|may) we (call|reach)", re.IGNORECASE)
FOR_WHOM_LABEL = re.compile(r"who is this for|for whom|myself|loved one", re.IGNORECASE)
MESSAGE_LABEL = re.compile(
    r"message|help|tell us|question|comment|describe|detail|anything else|concern|situation|reason|what brings|"
    r"how can we|story|inquiry|enquiry", re.IGNORECASE)
SOMEONE_ELSE = re.compile(
    r"emergency|alternate contact|secondary contact|other contact|contact person|referr|therapist|doctor|physician|"
    r"counsel+or|provider|case manager|parent|guardian|spouse|partner|loved one|family member|relative|friend|"
    r"patient|client|\btheir\b|\bhis\b|\bher\b", re.IGNORECASE)
WORK = re.compile(r"business|work|company|office|employer|organi[sz]ation", re.IGNORECASE)
EMAIL_WORDS = re.compile(r"e-?mail", re.IGNORECASE)
PHONE_WORDS = re.compile(r"phone|mobile|cell|telephone|\btel\b|contact number", re.IGNORECASE)
FIRST_NAME_WORDS = re.compile(r"first[ _-]?name|given[ _-]?name|\bfname\b", re.IGNORECASE)
LAST_NAME_WORDS = re.compile(r"last[ _-]?name|surname|family[ _-]?name|\blname\b", re.IGNORECASE)
_CONTACT_WORDS = re.compile("|".join(pattern.pattern for pattern in (EMAIL_WORDS, PHONE_WORDS, FIRST_NAME_WORDS,
                                                                     LAST_NAME_WORDS)), re.IGNORECASE)

CONTACT_ROLES = ("first_name", "last_name", "email", "phone")
CONSENT_ROLES = ("consent", "consent_to_text")
ATTRIBUTION_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "fbclid",
                    "msclkid", "referrer", "landing_page")
_ATTRIBUTION_WORDS = {
    **{key: re.compile(rf"\butm[ _-]?{key[4:]}\b", re.IGNORECASE) for key in ATTRIBUTION_KEYS[:5]},
    **{key: re.compile(rf"\b{key}\b", re.IGNORECASE) for key in ("gclid", "fbclid", "msclkid")},
    "referrer": re.compile(r"\breferr?er\b|referring (url|page|site)|http_referr?er", re.IGNORECASE),
    "landing_page": re.compile(r"landing[ _-]?(page|url)|entry[ _-]?page|first[ _-]?page", re.IGNORECASE),
}
# Ranks: the person's own field, their work address, one inside a repeater. Someone else's is never used.
OWN, WORK_RANK, IN_REPEATER, SOMEONE_ELSES = 0, 1, 2, 9


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
    # The fields these values came from, so the note lists every other answer.
    used: frozenset[int] = field(default=frozenset(), compare=False)


@dataclass(frozen=True)
class Source:
    """Where a role's value may be read: a field's input (or the field itself), maybe inside a repeater."""

    field: FormField
    input_id: str
    rank: int = OWN
    repeater: FormField | None = None
    why: str = ""  # why it ranks where it does, for `forms show`

    def value(self, entry: Mapping[str, Any]) -> str | None:
        if self.repeater is None:
            return input_value(entry, self.input_id)
        items = repeater_items(entry, self.repeater)
        return input_value(items[0], self.input_id) if items else None

    def describe(self) -> str:
        where = f" in repeater {self.repeater.id}" if self.repeater else ""
        why = f", {self.why}" if self.why else ""
        return f'{self.input_id} "{self.field.title}" ({self.field.type}{where}{why})'


@dataclass(frozen=True)
class FormMapping:
    """Each role's candidates, best first, and what an operator should check about this form."""

    roles: dict[str, list[Source]]
    warnings: list[str]
    pinned: frozenset[str] = frozenset()  # roles an override in SITES_FILE names

    def read(self, entry: Mapping[str, Any]) -> ApplicantFields:
        used: set[int] = set()
        values: dict[str, Any] = {}
        contact_from: set[int | None] = set()
        for role in ("email", "phone", "message", "for_whom", "honeypot"):
            values[role] = self._first_answer(role, entry, used, contact_from if role in ("email", "phone") else None)
        # Contact details taken from a repeater's first item are that item's person's: so is the name.
        repeater_id = next(iter(contact_from)) if len(contact_from) == 1 else None
        first, last = self._name(entry, used, repeater_id)
        if values["for_whom"] is not None:  # the chosen label, not the stored value
            chosen = next(source for source in self._usable("for_whom") if source.value(entry) is not None)
            values["for_whom"] = chosen.field.choice_text(values["for_whom"])
        times = [source.field.choice_text(value) for source in self.roles.get("best_time", ())
                 if (value := source.value(entry))]
        used.update(source.field.id for source in self.roles.get("best_time", ()) if source.value(entry))
        for role in CONSENT_ROLES:
            sources = self.roles.get(role, [])
            values[role] = _consent(sources[0], entry) if sources else None  # the statement agreed to: in the note
        return ApplicantFields(first_name=first, last_name=last, best_time=" ".join(times) or None,
                               used=frozenset(used), **values)

    def attribution(self, entry: Mapping[str, Any]) -> dict[str, str]:
        """UTM parameters, click ids, referrer and landing page from the fields that hold them (hidden fields
        filled by the page's script or by dynamic population), else from the query string of the page the form
        was on (the entry's `source_url`, which is also `form_page`)."""
        found = {}
        for key in ATTRIBUTION_KEYS:
            value = next((value for source in self.roles.get(key, ()) if (value := source.value(entry))), None)
            if value:
                found[key] = value
        page = input_value(entry, "source_url")
        if page:
            found["form_page"] = page
            query = parse_qs(urlsplit(page).query)
            for key in ATTRIBUTION_KEYS[:8]:
                if key not in found and (values := query.get(key)) and values[0].strip():
                    found[key] = values[0].strip()
        return found

    def attribution_fields(self) -> frozenset[int]:
        return frozenset(source.field.id for key in ATTRIBUTION_KEYS for source in self.roles.get(key, ()))

    def _usable(self, role: str) -> Iterator[Source]:
        return (source for source in self.roles.get(role, ()) if source.rank < SOMEONE_ELSES)

    def _first_answer(self, role: str, entry: Mapping[str, Any], used: set[int],
                      origins: set[int | None] | None = None) -> str | None:
        for source in self._usable(role):
            if (value := source.value(entry)) is not None:
                if source.repeater is None:  # a repeater goes into the note whole, every item of it
                    used.add(source.field.id)
                if origins is not None:
                    origins.add(source.repeater.id if source.repeater else None)
                return value
        return None

    def _name(self, entry: Mapping[str, Any], used: set[int], repeater_id: int | None
              ) -> tuple[str | None, str | None]:
        """First and last name from one name field (the first answered), else from "first/last name" fields; from
        the repeater the contact details came from, when they did."""
        sources = list(self._usable("first_name"))
        if repeater_id is not None:
            sources = [s for s in sources if s.repeater and s.repeater.id == repeater_id] + sources
        for source in sources:
            name = source.field
            if name.effective_type != "name" or "first_name" in self.pinned:
                first = source.value(entry)
                if first is not None:
                    if source.repeater is None:
                        used.add(name.id)
                    return first, self._first_answer("last_name", entry, used)
                continue
            if name.inputs:
                last_source = Source(name, f"{name.id}.{NAME_LAST}", source.rank, source.repeater)
                first = source.value(entry)
                last = self._first_answer("last_name", entry, used) if "last_name" in self.pinned else (
                    last_source.value(entry))
            else:
                whole = source.value(entry)
                first, last = _split_full_name(whole) if whole else (None, None)
            if first is not None or last is not None:
                # A prefix, middle name or suffix is not on the contact: the name then goes into the note too.
                if source.repeater is None and not _has_more_than_first_and_last(source, entry):
                    used.add(name.id)
                return first, last
        return None, self._first_answer("last_name", entry, used)


def _has_more_than_first_and_last(source: Source, entry: Mapping[str, Any]) -> bool:
    if not source.field.inputs:
        return False
    return any(input_value(entry, f"{source.field.id}.{part}") for part in ("2", "4", "8"))


def _split_full_name(full: str) -> tuple[str | None, str | None]:
    parts = full.split()
    if len(parts) == 1:
        return parts[0], None
    return " ".join(parts[:-1]), parts[-1]


def _yes(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() not in ("", "0", "no", "n", "false")


def _consent(source: Source, entry: Mapping[str, Any]) -> bool | None:
    box = source.field
    kind = box.effective_type
    if source.input_id != str(box.id):  # an override naming one input
        return bool(_yes(source.value(entry)))
    if kind == "consent":
        return input_value(entry, f"{box.id}.1") is not None
    if kind == "checkbox":
        if box.inputs:
            return any(input_value(entry, item.id) for item in box.inputs if not item.isHidden)
        return source.value(entry) is not None
    answer = (source.value(entry) or "").lower()
    return answer in ("yes", "y", "1", "true", "ok") if answer else None


def _rank(field_: FormField, section: str, repeater: FormField | None) -> tuple[int, str]:
    own = " ".join((field_.label, field_.adminLabel, field_.inputName, field_.cssClass))
    if SOMEONE_ELSE.search(own) or SOMEONE_ELSE.search(section):
        return SOMEONE_ELSES, "someone else's: never used for the person"
    if repeater is not None:
        return IN_REPEATER, "in a repeater: used when nothing outside it was answered"
    return (WORK_RANK, "a work address: used after the person's own") if WORK.search(own) else (OWN, "")


class _Builder:
    def __init__(self) -> None:
        self.roles: dict[str, list[tuple[tuple[int, int, int], Source]]] = {}
        self.position = 0

    def add(self, role: str, source: Source, typed: bool = True) -> None:
        self.position += 1
        key = (source.rank, 0 if typed else 1, self.position)
        self.roles.setdefault(role, []).append((key, source))

    def visit(self, field_: FormField, section: str, repeater: FormField | None) -> None:
        kind = field_.effective_type
        label_words = " ".join((field_.label, field_.adminLabel, field_.inputName, field_.cssClass))
        # A section's title ("Emergency contact") says whose the contact fields under it are, not whose consent.
        contact_kind = kind in ("name", "email", "phone") or (kind == "text" and _CONTACT_WORDS.search(label_words))
        rank, why = _rank(field_, section if contact_kind else "", repeater)
        if kind in ("consent", "checkbox", "radio", "select", "date", "time", "hidden") or (
                kind == "text" and not contact_kind):
            rank, why = (IN_REPEATER, "in a repeater") if repeater else (OWN, "")
        whole = Source(field_, str(field_.id), rank, repeater, why)
        if kind == "name":
            if field_.inputs:
                self.add("first_name", Source(field_, f"{field_.id}.{NAME_FIRST}", rank, repeater, why))
                self.add("last_name", Source(field_, f"{field_.id}.{NAME_LAST}", rank, repeater, why))
            else:
                self.add("first_name", whole)
        elif kind in ("email", "phone"):
            self.add(kind, whole)
        elif kind == "textarea":
            if rank < SOMEONE_ELSES and not MESSAGE_LABEL.search(label_words):
                rank, why = max(rank, WORK_RANK), "not labelled like a message: used after those that are"
            self.add("message", Source(field_, whole.input_id, rank, repeater, why))
        elif kind == "consent":
            self.add("consent_to_text" if TEXT_CONSENT_LABEL.search(field_.label) else "consent", whole)
        elif kind in ("select", "radio", "date", "time") and BEST_TIME_LABEL.search(field_.label):
            self.add("best_time", whole)
        elif kind in ("select", "radio") and FOR_WHOM_LABEL.search(field_.label):
            self.add("for_whom", whole)
        elif kind in ("checkbox", "radio", "select") and TEXT_CONSENT_LABEL.search(field_.label):
            self.add("consent_to_text", whole)
        elif kind in ("text", "hidden") and repeater is None:
            self._by_words(whole, label_words)

    def _by_words(self, whole: Source, label_words: str) -> None:
        for key, pattern in _ATTRIBUTION_WORDS.items():
            if pattern.search(label_words):
                self.add(key, whole)
                return
        if whole.field.effective_type == "hidden":
            return
        for role, pattern in (("email", EMAIL_WORDS), ("phone", PHONE_WORDS), ("first_name", FIRST_NAME_WORDS),
                              ("last_name", LAST_NAME_WORDS)):
            if pattern.search(label_words):
                self.add(role, whole, typed=False)
                return

    def ranked(self) -> dict[str, list[Source]]:
        return {role: [source for _, source in sorted(items, key=lambda item: item[0])]
                for role, items in self.roles.items()}


def _walk(fields: list[FormField]) -> Iterator[tuple[FormField, str, FormField | None]]:
    """Every field with the label of the section it sits in, and its repeater; repeaters' sub-fields follow them."""
    section = ""
    for field_ in fields:
        if field_.type in ("section", "page"):
            section = field_.label if field_.type == "section" else ""
            continue
        yield field_, section, None
        if field_.type == "repeater":
            for sub in field_.fields or ():
                yield sub, f"{section} {field_.label}", field_


def infer_mapping(form: Form, overrides: Mapping[str, str] | None = None) -> FormMapping:
    """The roles of the form's fields; `overrides` (a role -> field or input id, from SITES_FILE) pin a role."""
    builder = _Builder()
    walked = list(_walk(form.fields))
    for field_, section, repeater in walked:
        builder.visit(field_, section, repeater)
    roles = builder.ranked()
    pinned = []
    for role, input_id in (overrides or {}).items():
        owner = next((f for f, _, r in walked if r is None and str(f.id) == input_id.split(".", 1)[0]), None)
        if owner is None:
            pinned.append(f"the override {role} = \"{input_id}\" names no field of this form: fix it in SITES_FILE")
            continue
        roles[role] = [Source(owner, input_id)]
    return FormMapping(roles, pinned + _warnings(form, roles, walked, set(overrides or {})),
                       frozenset(overrides or {}))


def _warnings(form: Form, roles: dict[str, list[Source]], walked: list[tuple[FormField, str, FormField | None]],
              pinned: set[str]) -> list[str]:
    warnings = []
    usable = {role: [s for s in sources if s.rank < SOMEONE_ELSES] for role, sources in roles.items()}
    if not usable.get("phone") and not usable.get("email"):
        warnings.append("no phone or email field for the person: every entry will be flagged no_contact; add one, "
                        "or name it in SITES_FILE (fields = { phone = \"ID\" })")
    elif not usable.get("phone"):
        warnings.append("no phone field for the person: staff can only answer by email")
    elif not usable.get("email"):
        warnings.append("no email field for the person")
    for role in ("first_name", "email", "phone", "message"):
        candidates = usable.get(role, [])
        if role not in pinned and len(candidates) > 1:
            warnings.append(
                f"{len(candidates)} candidates for {role}: {candidates[0].describe()} first, then "
                f"{candidates[1].describe()}; the first answered is used and the others go into the note; to pin "
                f"one, set fields = {{ {role} = \"{candidates[1].input_id}\" }} for form {form.id} in SITES_FILE")
    contact_in_repeater = sorted({s.repeater.id for role in CONTACT_ROLES for s in roles.get(role, ()) if s.repeater})
    for repeater_id in contact_in_repeater:
        warnings.append(f"contact fields inside repeater {repeater_id}: the first item is the person's only when "
                        "the form has no answered contact field outside it; every item goes into the note")
    for field_, _, _ in walked:
        if field_.isRequired and field_.effective_type not in KNOWN_TYPES:
            warnings.append(f'required field {field_.id} "{field_.title}" is of type {field_.effective_type}, which '
                            "admitflow cannot read: its stored value goes into the note as it is")
    return warnings


def read_applicant(form: Form, entry: dict[str, Any], overrides: Mapping[str, str] | None = None) -> ApplicantFields:
    """The person's fields of this entry (builds the form's mapping: callers reading many entries keep one)."""
    return infer_mapping(form, overrides).read(entry)


