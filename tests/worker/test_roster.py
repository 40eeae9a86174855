from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.roster import RosterError, load_roster

EXAMPLE_ROSTER = Path(__file__).resolve().parents[2] / "config" / "roster.example.toml"
NIGHT_SHIFT = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def staff(name: str, phone: str, order: int, extra: str = "") -> str:
    return f'[[staff]]\nname = "{name}"\nphone = "{phone}"\norder = {order}\n{extra}\n'


def roster_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "roster.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_the_example_roster_loads() -> None:
    roster = load_roster(EXAMPLE_ROSTER)
    assert [(m.name, m.phone, m.crm_owner_id, m.order) for m in roster.staff] == [
        ("Avery Example", "+16175550101", "1001", 1),
        ("Blake Example", "+16175550102", "1002", 2),
    ]


def test_on_call_staff_are_in_alert_order_not_file_order(tmp_path: Path) -> None:
    path = roster_file(
        tmp_path,
        staff("Casey Example", "+12125550103", 3)
        + staff("Avery Example", "+16175550101", 1)
        + staff("Blake Example", "+14155550102", 2),
    )
    on_call = load_roster(path).on_call_staff(NIGHT_SHIFT)
    assert [member.name for member in on_call] == ["Avery Example", "Blake Example", "Casey Example"]


def test_a_staff_phone_written_with_spaces_is_stored_as_e164(tmp_path: Path) -> None:
    roster = load_roster(roster_file(tmp_path, staff("Avery Example", "+1 (617) 555-0101", 1)))
    assert roster.staff[0].phone == "+16175550101"


def test_a_staff_member_needs_no_crm_owner(tmp_path: Path) -> None:
    assert load_roster(roster_file(tmp_path, staff("Avery Example", "+16175550101", 1))).staff[0].crm_owner_id is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (staff("Avery Example", "617-555-0101", 1), "staff.0.phone: Value error, must be an E.164 number"),
        (
            staff("Avery Example", "+16175550101", 1) + staff("Blake Example", "+15555550102", 2),
            "staff.1.phone: Value error, is not a valid phone number",
        ),
        (staff("Avery Example", "call the desk", 1), "staff.0.phone"),
        (staff("Avery Example", "+16175550101", 1, extra='pager = "+16175550109"'), "staff.0.pager: Extra inputs"),
        ('shift = "nights"\n' + staff("Avery Example", "+16175550101", 1), "shift: Extra inputs"),
        (staff("Avery Example", "+16175550101", 1, extra='crm_owner_id = "1001"'), "staff.0.crm_owner_id"),
        ("staff = []\n", "staff: List should have at least 1 item"),
        ("", "staff: Field required"),
        (staff("Avery Example", "+16175550101", 0), "staff.0.order: Input should be greater than or equal to 1"),
        (staff("", "+16175550101", 1), "staff.0.name"),
        ('[[staff]]\nname = "Avery Example"\nphone = 6175550101\norder = 1\n', "staff.0.phone"),
    ],
)
def test_an_invalid_roster_is_refused_with_the_file_and_the_entry_to_fix(
    tmp_path: Path, body: str, problem: str
) -> None:
    path = roster_file(tmp_path, body)
    with pytest.raises(RosterError) as refused:
        load_roster(path)
    assert str(path) in str(refused.value)
    assert problem in str(refused.value)


def test_a_roster_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = roster_file(tmp_path, '[[staff]\nname = "Avery Example"\n')
    with pytest.raises(RosterError, match="is not valid TOML") as refused:
        load_roster(path)
    assert str(path) in str(refused.value)
    assert "line 1" in str(refused.value)


def test_a_missing_roster_file_says_to_set_roster_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "roster.toml"
    with pytest.raises(RosterError, match="does not exist: set ROSTER_FILE") as refused:
        load_roster(path)
    assert str(path) in str(refused.value)


def test_a_roster_path_that_is_a_directory_is_refused_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="cannot be read") as refused:
        load_roster(tmp_path)
    assert str(tmp_path) in str(refused.value)


def test_a_roster_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_bytes(staff("Zoë Example", "+16175550101", 1).encode("utf-16"))
    with pytest.raises(RosterError, match="is not UTF-8 text") as refused:
        load_roster(path)
    assert str(path) in str(refused.value)
