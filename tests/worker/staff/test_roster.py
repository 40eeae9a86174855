from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from config.settings import Settings, get_settings
from worker.cli import main
from worker.staff.roster import RosterError, load_roster

EXAMPLE_ROSTER = Path(__file__).resolve().parents[3] / "config" / "roster.example.toml"
NEW_YORK = ZoneInfo("America/New_York")


def local(year: int, month: int, day: int, hour: int, minute: int = 0, zone: ZoneInfo = NEW_YORK) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


# 2026-11-23 is a Monday.
MONDAY_10AM = local(2026, 11, 23, 10)
TUESDAY_3AM = local(2026, 11, 24, 3)
SATURDAY_NOON = local(2026, 11, 28, 12)

STAFF = """
[[staff]]
id = "avery"
name = "Avery Example"
phone = "+16175550101"
hubspot_owner_id = "1001"

[[staff]]
id = "blake"
name = "Blake Example"
phone = "+16175550102"

[[staff]]
id = "dana"
name = "Dana Example"
phone = "+16175550104"
"""


def shift(days: str, start: str, end: str, on_call: str, extra: str = "") -> str:
    return f'\n[[shifts]]\ndays = {days}\nstart = "{start}"\nend = "{end}"\non_call = "{on_call}"\n{extra}\n'


ALL_WEEK = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
DAY_AND_NIGHT = shift(ALL_WEEK, "08:00", "20:00", "avery", 'second = "blake"') + shift(
    ALL_WEEK, "20:00", "08:00", "blake", 'second = "avery"'
)


def roster_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "roster.toml"
    path.write_text(body, encoding="utf-8")
    return path


def ladder_ids(path: Path, at: datetime, zone: ZoneInfo = NEW_YORK) -> list[str]:
    return [member.id for member in load_roster(path, zone).on_call_staff(at)]


def test_the_example_roster_loads_with_its_shifts_and_fictional_numbers() -> None:
    roster = load_roster(EXAMPLE_ROSTER)

    assert [m.id for m in roster.staff] == ["avery", "blake", "casey", "dana"]
    assert all(m.phone.startswith("+161755501") for m in roster.staff)
    assert [m.id for m in roster.on_call_staff(MONDAY_10AM)] == ["avery", "blake", "dana"]
    assert [m.id for m in roster.on_call_staff(TUESDAY_3AM)] == ["blake", "casey", "dana"]
    assert [m.id for m in roster.on_call_staff(SATURDAY_NOON)] == ["casey", "avery", "dana"]


def test_the_ladder_names_each_role(tmp_path: Path) -> None:
    roster = load_roster(roster_file(tmp_path, 'supervisor = "dana"\n' + STAFF + DAY_AND_NIGHT))

    assert [(rung.role, rung.member.name) for rung in roster.ladder(MONDAY_10AM)] == [
        ("on call", "Avery Example"), ("second", "Blake Example"), ("supervisor", "Dana Example"),
    ]


def test_shifts_are_wall_clock_times_in_the_center_time_zone_across_daylight_saving(tmp_path: Path) -> None:
    path = roster_file(tmp_path, STAFF + DAY_AND_NIGHT)
    summer, winter = datetime(2026, 7, 6, 12, 30, tzinfo=UTC), datetime(2026, 1, 5, 12, 30, tzinfo=UTC)

    assert ladder_ids(path, summer)[0] == "avery"  # 08:30 EDT
    assert ladder_ids(path, winter)[0] == "blake"  # 07:30 EST
    assert ladder_ids(path, winter, ZoneInfo("America/Los_Angeles"))[0] == "blake"  # 04:30 PST
    assert ladder_ids(path, datetime(2026, 1, 5, 17, 0, tzinfo=UTC), ZoneInfo("America/Los_Angeles"))[0] == "avery"


def test_a_night_shift_runs_past_midnight_and_from_sunday_into_monday(tmp_path: Path) -> None:
    body = STAFF + shift('["mon", "tue", "wed", "thu", "fri", "sat"]', "08:00", "08:00", "avery") + shift(
        '["sun"]', "08:00", "08:00", "blake"
    )
    path = roster_file(tmp_path, body)

    assert ladder_ids(path, local(2026, 11, 29, 23)) == ["blake"]  # Sunday night
    assert ladder_ids(path, local(2026, 11, 30, 7, 59)) == ["blake"]  # Monday before 08:00
    assert ladder_ids(path, local(2026, 11, 30, 8)) == ["avery"]


def test_a_shift_supervisor_replaces_the_roster_supervisor_and_nobody_is_alerted_twice(tmp_path: Path) -> None:
    body = 'supervisor = "dana"\n' + STAFF + shift(ALL_WEEK, "08:00", "20:00", "avery", 'supervisor = "blake"') + \
        shift(ALL_WEEK, "20:00", "08:00", "dana", 'second = "blake"')
    path = roster_file(tmp_path, body)

    assert ladder_ids(path, MONDAY_10AM) == ["avery", "blake"]
    assert ladder_ids(path, TUESDAY_3AM) == ["dana", "blake"]


def test_hours_no_shift_covers_go_to_the_supervisor(tmp_path: Path) -> None:
    path = roster_file(tmp_path, 'supervisor = "dana"\n' + STAFF + shift(ALL_WEEK, "08:00", "20:00", "avery"))

    assert ladder_ids(path, MONDAY_10AM) == ["avery", "dana"]
    assert ladder_ids(path, TUESDAY_3AM) == ["dana"]


def test_the_next_handover_is_the_next_change_of_ladder_in_local_time(tmp_path: Path) -> None:
    roster = load_roster(EXAMPLE_ROSTER)

    assert roster.next_handover(MONDAY_10AM) == local(2026, 11, 23, 20)
    assert roster.next_handover(local(2026, 11, 27, 21, 15)) == local(2026, 11, 28, 8)  # Friday night -> Saturday


def test_a_roster_with_one_ladder_all_week_has_no_handover(tmp_path: Path) -> None:
    roster = load_roster(roster_file(tmp_path, STAFF + shift(ALL_WEEK, "00:00", "00:00", "avery")))

    assert roster.next_handover(MONDAY_10AM) is None


def test_a_staff_member_is_found_by_phone(tmp_path: Path) -> None:
    roster = load_roster(roster_file(tmp_path, STAFF + DAY_AND_NIGHT))

    found = roster.staff_with_phone("+16175550102")
    assert found is not None and found.id == "blake"
    assert roster.staff_with_phone("+16175550199") is None


def test_a_staff_phone_written_with_spaces_is_stored_as_e164(tmp_path: Path) -> None:
    body = STAFF.replace('"+16175550101"', '"+1 (617) 555-0101"') + DAY_AND_NIGHT
    assert load_roster(roster_file(tmp_path, body)).staff[0].phone == "+16175550101"


def test_a_staff_member_needs_no_crm_owner(tmp_path: Path) -> None:
    roster = load_roster(roster_file(tmp_path, STAFF + DAY_AND_NIGHT))
    assert roster.staff[1].crm_owner_id is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (STAFF.replace('"+16175550101"', '"617-555-0101"') + DAY_AND_NIGHT,
         "staff.0.phone: Value error, must be an E.164 number"),
        (STAFF.replace('"+16175550102"', '"+15555550102"') + DAY_AND_NIGHT,
         "staff.1.phone: Value error, is not a valid phone number"),
        (STAFF.replace('"+16175550102"', '"+16175550101"') + DAY_AND_NIGHT,
         "staff.1.phone: +16175550101 is also staff.0's phone"),
        (STAFF.replace('id = "blake"', 'id = "avery"') + DAY_AND_NIGHT, "staff.1.id: avery is also staff.0's id"),
        (STAFF.replace('id = "blake"', 'id = "Blake Example"') + DAY_AND_NIGHT, "staff.1.id: String should match"),
        (STAFF.replace('hubspot_owner_id = "1001"', 'order = 1') + DAY_AND_NIGHT,
         "staff.0: Value error, `order` is replaced by [[shifts]]"),
        (STAFF.replace('hubspot_owner_id = "1001"', 'pager = "+16175550109"') + DAY_AND_NIGHT,
         "staff.0.pager: Extra inputs"),
        (STAFF + shift(ALL_WEEK, "08:00", "20:00", "avery") + shift(ALL_WEEK, "20:00", "08:00", "blakey"),
         "shifts.1.on_call: no staff member has id 'blakey' (ids: avery, blake, dana)"),
        (STAFF + shift(ALL_WEEK, "00:00", "00:00", "avery", 'second = "casey"'),
         "shifts.0.second: no staff member has id 'casey'"),
        ('supervisor = "boss"\n' + STAFF + DAY_AND_NIGHT, "supervisor: no staff member has id 'boss'"),
        (STAFF + shift('["monday"]', "08:00", "20:00", "avery"), "shifts.0.days.0: Input should be 'mon'"),
        (STAFF + shift('["mon", "mon"]', "08:00", "20:00", "avery"), "shifts.0.days: Value error, names a day twice"),
        (STAFF + shift(ALL_WEEK, "8am", "20:00", "avery"), "shifts.0.start"),
        (STAFF + shift(ALL_WEEK, "08:00:30", "20:00", "avery"), "shifts.0.start: Value error, must be a wall-clock"),
        (STAFF + DAY_AND_NIGHT + shift('["wed"]', "19:00", "21:00", "dana"),
         "shifts.2 overlaps shifts.0 at Wed 19:00"),
        (STAFF + shift(ALL_WEEK, "08:00", "20:00", "avery") + shift('["mon", "tue"]', "20:00", "08:00", "blake"),
         "shifts: nobody is on call Wed 20:00-Thu 08:00; Thu 20:00-Fri 08:00; Fri 20:00-Sat 08:00 and more"),
        (STAFF, "shifts: Field required"),
        ("shifts = []\n" + STAFF, "shifts: List should have at least 1 item"),
        ("", "staff: Field required"),
        ('[[staff]]\nid = "avery"\nname = "Avery Example"\nphone = 6175550101\n' + DAY_AND_NIGHT, "staff.0.phone"),
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
    path.write_bytes((STAFF.replace("Avery", "Zoë") + DAY_AND_NIGHT).encode("utf-16"))
    with pytest.raises(RosterError, match="is not UTF-8 text") as refused:
        load_roster(path)
    assert str(path) in str(refused.value)


def test_roster_show_prints_who_is_on_call_then_and_who_takes_over_next(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["roster", "show", "--at", "2026-11-28T12:00"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith("roster.example.toml, times in America/New_York")
    assert lines[1] == "at Sat 28 Nov 2026 12:00 EST (shift weekend days):"
    assert lines[2].split()[:4] == ["on", "call", "Casey", "Example"]
    assert "+16175550103" in lines[2] and "HubSpot owner 1003" in lines[2]
    assert lines[3].split()[:3] == ["second", "Avery", "Example"]
    assert lines[4].split()[:3] == ["supervisor", "Dana", "Example"]
    assert lines[5] == "next, from Sat 28 Nov 2026 20:00 EST (shift nights):"
    assert lines[6].split()[2:4] == ["Blake", "Example"]


def test_roster_show_refuses_an_invalid_roster_with_the_fix(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROSTER_FILE", str(roster_file(tmp_path, STAFF)))
    get_settings.cache_clear()

    result = CliRunner().invoke(main, ["roster", "show"])

    assert result.exit_code == 2
    assert "shifts: Field required" in result.output
