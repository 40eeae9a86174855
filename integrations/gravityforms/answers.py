"""Every answer of an entry as staff read it: "Label: value", choices as their labels, lists and files readable.

Entry values by field type, as the REST API v2 answers them (GF_REST_Controller::prepare_entry_for_response) and as
the Webhooks add-on sends the stored entry:
- name, address, checkbox, consent, time, single product: one key per input ("1.3"); address .1 street, .2 line 2,
  .3 city, .4 state, .5 ZIP, .6 country (https://docs.gravityforms.com/address-field/); product .1 name, .2 price,
  .3 quantity (https://docs.gravityforms.com/product/); consent .1 "1" when ticked (https://docs.gravityforms.com/consent/).
- select, radio: the choice's value ("value|price" on product and option fields); people read the choice's text.
- multiselect: a list from the API, a JSON list as stored since 2.5, comma-separated before.
- list: rows from the API (a list of strings, or of {"Column": value} objects with several columns); the stored
  value is PHP-serialized (GF_Field_List::get_value_save_entry), JSON when set through the API.
- fileupload: a URL; with several files a list from the API, a JSON list as stored.
- repeater: a list of items keyed by the sub-fields' ids (GF_Field_Repeater::hydrate); stored flat as "1001_0".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import phpserialize  # type: ignore[import-untyped]

from integrations.gravityforms.models import FormField

# Fields that hold no answer, or one that must never leave the site (passwords, card numbers).
NOT_ANSWERS = frozenset({"page", "section", "html", "captcha", "password", "creditcard", "submit"})
ADDRESS_PARTS = ("1", "2", "3", "4", "5", "6")
NAME_PARTS = ("2", "3", "4", "6", "8")
# Field types whose value is read here; an add-on's own type is shown as stored, and `forms show` warns of it.
KNOWN_TYPES = frozenset({
    "text", "textarea", "email", "phone", "name", "address", "select", "radio", "checkbox", "multiselect", "number",
    "date", "time", "website", "hidden", "list", "fileupload", "consent", "product", "singleproduct", "option",
    "quantity", "shipping", "singleshipping", "total", "price", "calculation", "hiddenproduct", "donation",
    "repeater", "post_title", "post_content", "post_excerpt", "post_tags", "post_category", "post_custom_field",
    "post_image", "quiz", "poll", "survey", *NOT_ANSWERS,
})


@dataclass(frozen=True)
class Answer:
    """One answered field: what staff read. PHI: never log."""

    field_id: int
    label: str
    value: str


def text_of(value: Any) -> str | None:
    """A stored value as stripped text, or None for empty and for what is not a plain value."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = str(value).strip()
    return text or None


def input_value(entry: Mapping[str, Any], input_id: str) -> str | None:
    return text_of(entry.get(input_id))


def structured(value: Any) -> Any:
    """A list or object stored as JSON or PHP-serialized text, decoded; other values unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            return value
    if text[:2] == "a:":
        try:
            decoded = phpserialize.loads(text.encode("utf-8"), decode_strings=True)
        except (ValueError, TypeError, IndexError, UnicodeDecodeError):
            return value
        return _php_lists(decoded)
    return value


def _php_lists(value: Any) -> Any:
    """PHP arrays come back as dicts; those keyed 0..n-1 are lists."""
    if isinstance(value, dict):
        items = {key: _php_lists(item) for key, item in value.items()}
        if all(isinstance(key, int) for key in items) and sorted(items) == list(range(len(items))):
            return [items[key] for key in range(len(items))]
        return {str(key): item for key, item in items.items()}
    return value


def repeater_items(entry: Mapping[str, Any], repeater: FormField) -> list[dict[str, Any]]:
    """A repeater's items, each keyed by its sub-fields' field or input ids."""
    value = structured(entry.get(str(repeater.id)))
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    # The stored, flat form: "<input id>_<item index>".
    ids = [item.id for sub in repeater.fields or () for item in (sub.inputs or ())]
    ids += [str(sub.id) for sub in repeater.fields or () if not sub.inputs]
    items: dict[int, dict[str, Any]] = {}
    for input_id in ids:
        index = 0
        while (key := f"{input_id}_{index}") in entry:
            items.setdefault(index, {})[input_id] = entry[key]
            index += 1
    return [items[index] for index in sorted(items)]


def _join(parts: Iterable[str | None], separator: str = " ") -> str | None:
    return separator.join(part for part in parts if part) or None


def _choice_and_price(field: FormField, value: str) -> str:
    """Product and option choices are stored as "value|price"."""
    kind = field.type
    if kind in ("product", "option", "shipping") and "|" in value:
        choice, price = value.rsplit("|", 1)
        return f"{field.choice_text(choice)} ({price})" if price else field.choice_text(choice)
    return field.choice_text(value)


def _list_rows(value: Any) -> str | None:
    rows = structured(value)
    if isinstance(rows, str):
        return text_of(rows)
    if not isinstance(rows, list):
        return None
    lines = []
    for row in rows:
        if isinstance(row, dict):
            line = _join((f"{column}: {cell}" for column, cell in row.items() if text_of(cell)), ", ")
        else:
            line = text_of(row)
        if line:
            lines.append(line)
    return "; ".join(lines) or None


def _many(value: Any) -> list[str]:
    items = structured(value)
    if isinstance(items, list):
        return [text for item in items if (text := text_of(item))]
    text = text_of(items)
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


def render(field: FormField, entry: Mapping[str, Any]) -> str | None:
    """The field's answer as staff read it, or None when it was not answered."""
    kind = field.effective_type
    own = entry.get(str(field.id))
    if kind in NOT_ANSWERS:
        return None
    if kind == "repeater":
        return _repeater(field, entry)
    if kind == "name" and field.inputs:
        return _join(input_value(entry, f"{field.id}.{part}") for part in NAME_PARTS)
    if kind == "address":
        street = _join((input_value(entry, f"{field.id}.{part}") for part in ADDRESS_PARTS[:2]), ", ")
        state_zip = _join(input_value(entry, f"{field.id}.{part}") for part in ("4", "5"))
        city = input_value(entry, f"{field.id}.3")
        return _join((street, city, state_zip, input_value(entry, f"{field.id}.6")), ", ")
    if kind == "consent":
        if input_value(entry, f"{field.id}.1") is None:
            return None
        statement = text_of(entry.get(f"{field.id}.2")) or field.checkboxLabel
        return f"Agreed ({' '.join(statement.split())})" if statement else "Agreed"
    if kind in ("singleproduct", "hiddenproduct", "calculation") or (kind == "product" and field.inputs):
        name, price = input_value(entry, f"{field.id}.1"), input_value(entry, f"{field.id}.2")
        quantity = input_value(entry, f"{field.id}.3")
        if not quantity or quantity == "0":
            return None
        return _join((name or field.title, f"quantity {quantity}", f"price {price}" if price else None), ", ")
    if kind == "checkbox" or (field.inputs and kind in ("option", "post_category", "quiz", "poll", "survey")):
        ticked = [input_value(entry, item.id) for item in field.inputs or ()]
        return _join((field.choice_text(value) for value in ticked if value), ", ")
    if kind == "multiselect" or (kind in ("post_category", "poll", "survey") and not field.inputs):
        return _join((field.choice_text(value) for value in _many(own)), ", ")
    if kind == "list" or (kind == "post_custom_field" and field.inputType == "list"):
        return _list_rows(own)
    if kind in ("fileupload", "post_image"):
        return _join(_many(own), " ")
    if field.inputs and (joined := _join(input_value(entry, item.id) for item in field.inputs)):
        return joined
    # Time, date and email-confirmation inputs exist on the page only: the entry keeps one value under the field id.
    text = text_of(own)
    if text is None:
        return None
    if kind in ("select", "radio", "product", "option", "shipping", "quiz"):
        return _choice_and_price(field, text)
    return text


def _repeater(field: FormField, entry: Mapping[str, Any]) -> str | None:
    lines = []
    for number, item in enumerate(repeater_items(entry, field), start=1):
        parts = [f"{sub.title}: {value}" for sub in field.fields or () if (value := render(sub, item))]
        if parts:
            lines.append(f"#{number}: " + ", ".join(parts))
    return "; ".join(lines) or None


def answers(fields: Iterable[FormField], entry: Mapping[str, Any], skip: frozenset[int] = frozenset()
            ) -> Iterator[Answer]:
    """The answered fields in form order, but those in `skip` (read elsewhere: contact fields, the message)."""
    for field in fields:
        if field.id in skip:
            continue
        value = render(field, entry)
        if value is not None:
            yield Answer(field.id, field.title, value)
