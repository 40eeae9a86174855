from __future__ import annotations

import pytest

from worker.leads.export import lead_record, neutralize_formula
from worker.store.models import Lead


@pytest.mark.parametrize(
    "hostile",
    ['=HYPERLINK("http://example.org","click")', "+SUM(1,2)", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"],
)
def test_a_value_a_spreadsheet_would_run_as_a_formula_is_exported_as_text(hostile: str) -> None:
    assert neutralize_formula(hostile) == "'" + hostile


@pytest.mark.parametrize("plain", ["+16175550142", "-12", "Jordan", "jordan.sample@example.org", "R-7K2QX", ""])
def test_ordinary_values_and_phone_numbers_are_exported_unchanged(plain: str) -> None:
    assert neutralize_formula(plain) == plain


def test_every_text_field_of_an_exported_lead_is_neutralised() -> None:
    lead = Lead(id=1, ref="R-7K2QX", first_name="=cmd|' /C calc'!A0", last_name="@Sample", phone="+16175550142",
                email="=x@example.org", repeat_count=0, status="new", submissions=[])

    record = lead_record(lead)

    assert (record["first_name"], record["last_name"], record["email"]) == (
        "'=cmd|' /C calc'!A0", "'@Sample", "'=x@example.org")
    assert (record["phone"], record["ref"], record["id"]) == ("+16175550142", "R-7K2QX", 1)
