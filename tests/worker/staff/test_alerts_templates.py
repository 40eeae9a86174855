from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings, get_settings
from worker.leads.dedup import REF_ALPHABET
from worker.staff.services import build_services, default_services
from worker.staff.templates import ALLOWED_FIELDS, AlertFacts, AlertTemplates, TemplateError, check_template, spoken_ref

NEW_YORK = ZoneInfo("America/New_York")


def facts(hour_utc: int = 15, age_minutes: int = 12) -> AlertFacts:
    now = datetime(2026, 11, 23, hour_utc, 0, tzinfo=UTC)
    return AlertFacts(ref="R-7K2QX", repeat_count=2, requested_at=now - timedelta(minutes=age_minutes), now=now,
                      timezone=NEW_YORK)


def test_a_reference_is_spelled_out_for_text_to_speech() -> None:
    assert spoken_ref("R-7K2QX") == "R seven K two Q X"
    assert spoken_ref("R-00A19") == "R zero zero A one nine"


@given(st.text(alphabet=REF_ALPHABET, min_size=5, max_size=5))
def test_every_reference_is_spoken_as_single_letters_and_digit_words(code: str) -> None:
    words = spoken_ref(f"R-{code}").split()
    assert words[0] == "R" and len(words) == 6
    digits = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert all((len(word) == 1 and word.isupper()) or word in digits for word in words[1:])


def test_templates_can_say_the_reference_repeats_age_and_time_of_day() -> None:
    template = check_template("ALERT_SMS_TEMPLATE",
                              "{ref} ({ref_spoken}) asked {repeat_count}x, {age_minutes} min ago, this {time_of_day}")

    assert AlertTemplates().render(template, facts()) == (
        "R-7K2QX (R seven K two Q X) asked 2x, 12 min ago, this morning"
    )


@pytest.mark.parametrize(("hour_utc", "time_of_day"), [(3, "night"), (15, "morning"), (19, "afternoon"),
                                                       (23, "evening")])
def test_the_time_of_day_is_the_centers(hour_utc: int, time_of_day: str) -> None:
    assert facts(hour_utc).values()["time_of_day"] == time_of_day


@pytest.mark.parametrize("field", ["first_name", "phone", "email", "message", "name", "lead", "staff_name"])
def test_a_template_naming_anything_else_is_refused_with_the_setting_and_the_allowed_fields(field: str) -> None:
    with pytest.raises(TemplateError) as refused:
        check_template("ALERT_SMS_TEMPLATE", f"New request {{ref}} from {{{field}}}")

    message = str(refused.value)
    assert message.startswith(f"ALERT_SMS_TEMPLATE names {{{field}}}, which a staff alert may not carry")
    assert all("{" + name + "}" in message for name in ALLOWED_FIELDS)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{ref.__class__}", "names {ref.__class__}"),
        ("{ref[0]}", "names {ref[0]}"),
        ("{}", "names {}"),
        ("{0}", "names {0}"),
        ("{ref:{first_name}}", "nests a field"),
        ("{ref", "is not a valid template"),
        ("ref}", "is not a valid template"),
    ],
)
def test_templates_that_could_reach_other_data_or_do_not_parse_are_refused(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(problem)):
        check_template("VOICE_REMINDER_TEMPLATE", template)


def test_literal_braces_are_allowed() -> None:
    assert AlertTemplates().render(check_template("X", "{{ref}} is {ref}"), facts()) == "{ref} is R-7K2QX"


def test_start_up_refuses_a_template_setting_that_names_a_phi_field(settings: Settings) -> None:
    bad = settings.model_copy(update={"voice_reminder_template": "Call {first_name} about {ref}"})

    with pytest.raises(TemplateError, match=r"VOICE_REMINDER_TEMPLATE names \{first_name\}"):
        build_services(bad)


def test_start_up_uses_the_template_settings(settings: Settings) -> None:
    custom = settings.model_copy(update={"alert_sms_template": "Callback {ref}: reply 1"})

    assert build_services(custom).templates.alert_sms == "Callback {ref}: reply 1"
    assert build_services(settings).templates == AlertTemplates()


@pytest.mark.parametrize("setting", ["ALERT_MISSED_CALL_SMS_TEMPLATE", "ALERT_WITHHELD_CALL_SMS_TEMPLATE",
                                     "ALERT_INBOUND_TEXT_SMS_TEMPLATE"])
def test_start_up_refuses_a_phone_line_template_that_names_a_phi_field(settings: Settings, setting: str) -> None:
    bad = settings.model_copy(update={setting.lower(): "Call {phone} back about {ref}"})

    with pytest.raises(TemplateError, match=rf"{setting} names \{{phone\}}"):
        build_services(bad)


def test_a_blank_phone_line_setting_from_an_older_env_file_is_its_default_and_a_wrong_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("VOICE_INBOUND", "VOICE_RING_SECONDS", "VOICE_VOICEMAIL", "SMS_INBOUND_LEADS"):
        monkeypatch.setenv(name, "")
    loaded = Settings()
    assert (loaded.voice_inbound, loaded.voice_ring_seconds, loaded.voice_voicemail, loaded.sms_inbound_leads) == (
        "off", 20, True, True)
    monkeypatch.setenv("VOICE_INBOUND", "always")
    with pytest.raises(ValueError, match="VOICE_INBOUND"):
        Settings()


def test_an_unknown_center_time_zone_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CENTER_TIMEZONE", "Eastern")
    with pytest.raises(ValueError, match="'Eastern' is not an IANA time zone; use a name such as America/New_York"):
        Settings()


@pytest.mark.parametrize("value", ["admitflow.example.org", "https://admitflow.example.org/?x=1"])
def test_a_public_url_that_is_not_a_plain_https_address_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ADMITFLOW_PUBLIC_URL", value)
    with pytest.raises(ValueError, match="ADMITFLOW_PUBLIC_URL"):
        Settings()


def test_the_public_url_loses_its_trailing_slash_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMITFLOW_PUBLIC_URL", "https://admitflow.example.org/")
    assert Settings().public_url == "https://admitflow.example.org"
    monkeypatch.setenv("ADMITFLOW_PUBLIC_URL", "")
    assert Settings().public_url is None


def test_a_worker_refuses_to_start_with_a_template_naming_a_phi_field(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.tasks import _refuse_invalid_alert_configuration

    monkeypatch.setenv("ALERT_SMS_TEMPLATE", "Call {phone} now")
    get_settings.cache_clear()
    default_services.cache_clear()

    with pytest.raises(SystemExit, match=r"admitflow worker cannot start: ALERT_SMS_TEMPLATE names \{phone\}"):
        _refuse_invalid_alert_configuration()
