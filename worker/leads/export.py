"""What `admitflow leads export` writes for a lead, safe to open in a spreadsheet.

A value a person typed that starts with `=`, `+`, `-`, `@` (or a tab or carriage return) would run as a formula
when the export is opened in Excel or Sheets (CSV injection:
https://owasp.org/www-community/attacks/CSV_Injection), so such values get a leading `'`. Plain signed numbers,
such as an E.164 phone number, are left as they are: a spreadsheet reads them as numbers, not formulas.
"""

from __future__ import annotations

import re
from typing import Any

from worker.store.models import Lead

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-]\d+(?:\.\d+)?")


def neutralize_formula(value: str) -> str:
    """`value` with a leading `'` when a spreadsheet would read it as a formula."""
    if value.startswith(FORMULA_STARTS) and not _SIGNED_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _safe(value: Any) -> Any:
    return neutralize_formula(value) if isinstance(value, str) else value


def lead_record(lead: Lead) -> dict[str, Any]:
    """One lead as an export line: its reference, contact details (PHI), CRM ids and submissions."""
    record = {
        "id": lead.id,
        "ref": lead.ref,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "phone": lead.phone,
        "email": lead.email,
        "repeat_count": lead.repeat_count,
        "status": lead.status,
        "crm_id": lead.crm_contact_id,
        "crm_task_id": lead.crm_task_id,
        "submissions": [{"form_id": s.form_id, "entry_id": s.entry_id} for s in lead.submissions],
    }
    return {key: _safe(value) for key, value in record.items()}
