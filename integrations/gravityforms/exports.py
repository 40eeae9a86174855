"""The form objects in a file, whichever way it was saved: a form object, an "Export Forms" file, or a list.

Shapes:
- `GET /wp-json/gf/v2/forms/{id}` answers one form object (https://docs.gravityforms.com/form-object/).
- Forms > Import/Export > Export Forms writes PHP's `json_encode` of the list of forms with a `version` key added,
  so the list becomes an object `{"0": {form}, "1": {form}, "version": "2.8.3"}` (GFExport::export_forms in the
  plugin's export.php; the same shape since 1.9, https://docs.gravityforms.com/wp-config-options/ "Creating a Form
  Import JSON File"). The export drops each field's `pageNumber`.
- Tools that save forms one by one (the CLI add-on, version-control plugins) write a JSON list of form objects.
"""

from __future__ import annotations

from typing import Any


class FormDocumentError(ValueError):
    """The file holds no usable form object; the message says what was expected (no entry data in it)."""


def _is_form(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("fields"), list)


def forms_in(document: Any) -> list[dict[str, Any]]:
    """Every form object the document holds, in its order. Raises `FormDocumentError` when it holds none, or when
    a form in it has no id (a form is registered under its id)."""
    if _is_form(document):
        forms = [document]
    elif isinstance(document, list):
        forms = [item for item in document if _is_form(item)]
    elif isinstance(document, dict):
        numbered = sorted((key for key in document if isinstance(key, str) and key.isdigit()), key=int)
        forms = [document[key] for key in numbered if _is_form(document[key])]
    else:
        forms = []
    if not forms:
        raise FormDocumentError(
            "no Gravity Forms form object in this file: expected what GET /wp-json/gf/v2/forms/{id} returns, or a "
            "file from Forms > Import/Export > Export Forms ({\"0\": {form}, \"version\": ...}), or a list of forms"
        )
    for position, form in enumerate(forms, start=1):
        form_id = form.get("id")
        if isinstance(form_id, bool) or not str(form_id if form_id is not None else "").strip().isdigit():
            raise FormDocumentError(
                f"form #{position} in this file ({_title(form)}) has no numeric 'id': export it again from the site "
                "(Export Forms keeps the ids), or fetch it with `admitflow forms fetch SITE ID`"
            )
    return forms


def pick_form(forms: list[dict[str, Any]], form_id: str | None) -> list[dict[str, Any]]:
    """The forms to register: all of them, or the one with `form_id` (a `FormDocumentError` names the ids there)."""
    if form_id is None:
        return forms
    chosen = [form for form in forms if str(form.get("id")).strip() == form_id.strip()]
    if not chosen:
        ids = ", ".join(str(form.get("id")) for form in forms)
        raise FormDocumentError(f"this file has no form {form_id}; its forms are {ids}")
    return chosen[:1]


def _title(form: dict[str, Any]) -> str:
    title = form.get("title")
    return f'"{" ".join(title.split())[:60]}"' if isinstance(title, str) and title.strip() else "untitled"
