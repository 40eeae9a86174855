"""The Gravity Forms corpus in tests/fakes/gravityforms_corpus/: forms in every shape people save them, entries as
the REST API and the Webhooks add-on send them, and what each entry must become. Each file says where its shape
comes from (its `_source`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from integrations.gravityforms.exports import forms_in

CORPUS = Path(__file__).resolve().parents[1] / "fakes" / "gravityforms_corpus"
FORM_FILES = ("rest_form_intake.json", "export_single_repeater.json", "export_two_forms.json", "forms_list.json")
ENTRY_FILES = ("rest_entries_intake.json", "webhook_entries.json")


def read(name: str) -> Any:
    return json.loads((CORPUS / name).read_text(encoding="utf-8"))


def corpus_forms() -> dict[str, dict[str, Any]]:
    """Every form object of the corpus, by form id."""
    return {str(form["id"]): form for name in FORM_FILES for form in forms_in(read(name))}


def corpus_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name in ENTRY_FILES:
        entries.extend(read(name)["entries"])
    return entries


def expected() -> dict[str, dict[str, Any]]:
    """What each entry must become, by entry id."""
    found: dict[str, dict[str, Any]] = read("expected.json")["entries"]
    return found


def answered_field_ids(form: dict[str, Any], entry: dict[str, Any]) -> set[str]:
    """The top-level field ids an entry answered: keys "7", "7.3", a repeater's "1001.3_0" or its items, with a
    value that is not empty."""
    repeater_of = {str(sub["id"]): str(field["id"]) for field in form["fields"] for sub in field.get("fields") or []}
    answered = set()
    for key, value in entry.items():
        if value in ("", None, [], {}) or not key[:1].isdigit():
            continue
        field_id = key.split("_", 1)[0].split(".", 1)[0]
        answered.add(repeater_of.get(field_id, field_id))
    return answered
