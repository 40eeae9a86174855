"""The words staff hear and read, as templates that can only name facts that are not PHI.

A template is a Python format string. It may name the lead reference, how many times the person asked, how old
the request is and the time of day, and nothing else: a template naming any other field is refused when the
process starts, so no setting can put a name, a number or a message into a text or a call.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from config.settings import Settings

ALLOWED_FIELDS = ("ref", "ref_spoken", "repeat_count", "age_minutes", "time_of_day")

DEFAULT_ALERT_SMS = (
    'admitflow: New confidential callback request {ref}. Reply 1 to claim it, then call back now '
    '(CRM task "Callback {ref}").'
)
DEFAULT_REPEAT_SMS = (
    "admitflow: REPEAT confidential callback request {ref} ({repeat_count} repeat request(s)). "
    "Reply 1 to claim it, then call back now."
)
DEFAULT_ESCALATION_SMS = (
    "admitflow: UNCLAIMED for {age_minutes} min: confidential callback request {ref}. "
    "Reply 1 to claim it, then call back now."
)
DEFAULT_VOICE_REMINDER = (
    "There is an unclaimed confidential callback request, reference {ref_spoken}. "
    "Press 1 to claim it and connect now."
)
DEFAULT_VOICE_CALLBACK = "Time to try the callback for reference {ref_spoken} again. Press 1 to connect now."
DEFAULT_MISSED_CALL_SMS = (
    'admitflow: MISSED CALL to the admissions line: callback request {ref}. Reply 1 to claim it, then call back '
    'now (CRM task "Callback {ref}").'
)
DEFAULT_WITHHELD_CALL_SMS = (
    "admitflow: Missed call to the admissions line, number withheld ({ref}): there is no number to call back. "
    "Any voicemail is in the CRM under {ref}."
)
DEFAULT_INBOUND_TEXT_SMS = (
    'admitflow: New TEXT to the admissions line: callback request {ref}. Reply 1 to claim it, then call back now '
    '(CRM task "Callback {ref}").'
)

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class TemplateError(ValueError):
    """A template setting names a field it may not, or is not a valid template; says which setting to fix."""


@dataclass(frozen=True)
class AlertFacts:
    """Everything a template may say about a lead. None of it identifies the person."""

    ref: str
    repeat_count: int
    requested_at: datetime
    now: datetime
    timezone: ZoneInfo

    def values(self) -> dict[str, object]:
        hour = self.now.astimezone(self.timezone).hour
        if hour < 5 or hour >= 22:
            time_of_day = "night"
        else:
            time_of_day = "morning" if hour < 12 else "afternoon" if hour < 17 else "evening"
        return {
            "ref": self.ref,
            "ref_spoken": spoken_ref(self.ref),
            "repeat_count": self.repeat_count,
            "age_minutes": max(0, int((self.now - self.requested_at).total_seconds() // 60)),
            "time_of_day": time_of_day,
        }


def spoken_ref(ref: str) -> str:
    """'R-7K2QX' as text-to-speech should say it: 'R seven K two Q X'."""
    return " ".join(_DIGIT_WORDS[int(char)] if char.isdigit() else char for char in ref if char.isalnum())


def check_template(setting: str, template: str) -> str:
    """Return `template` if it names only allowed fields; raise `TemplateError` naming `setting` otherwise."""
    allowed = ", ".join("{" + name + "}" for name in ALLOWED_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{setting} is not a valid template ({exc}): write fields as {{ref}}, and "
                            "literal braces as {{ and }}") from None
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        if field not in ALLOWED_FIELDS:
            raise TemplateError(f"{setting} names {{{field}}}, which a staff alert may not carry: use only "
                                f"{allowed}")
        if spec and "{" in spec:
            raise TemplateError(f"{setting} nests a field inside {{{field}:...}}: use only {allowed}, unformatted")
    return template


@dataclass(frozen=True)
class AlertTemplates:
    """The checked templates, one per kind of text or call."""

    alert_sms: str = DEFAULT_ALERT_SMS
    repeat_sms: str = DEFAULT_REPEAT_SMS
    escalation_sms: str = DEFAULT_ESCALATION_SMS
    voice_reminder: str = DEFAULT_VOICE_REMINDER
    voice_callback: str = DEFAULT_VOICE_CALLBACK
    missed_call_sms: str = DEFAULT_MISSED_CALL_SMS
    withheld_call_sms: str = DEFAULT_WITHHELD_CALL_SMS
    inbound_text_sms: str = DEFAULT_INBOUND_TEXT_SMS

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertTemplates:
        """The templates the settings choose, checked; raises `TemplateError` at start-up for a bad one."""
        return cls(
            alert_sms=check_template("ALERT_SMS_TEMPLATE", settings.alert_sms_template or DEFAULT_ALERT_SMS),
            repeat_sms=check_template(
                "ALERT_REPEAT_SMS_TEMPLATE", settings.alert_repeat_sms_template or DEFAULT_REPEAT_SMS
            ),
            escalation_sms=check_template(
                "ALERT_ESCALATION_SMS_TEMPLATE", settings.alert_escalation_sms_template or DEFAULT_ESCALATION_SMS
            ),
            voice_reminder=check_template(
                "VOICE_REMINDER_TEMPLATE", settings.voice_reminder_template or DEFAULT_VOICE_REMINDER
            ),
            voice_callback=check_template(
                "VOICE_CALLBACK_TEMPLATE", settings.voice_callback_template or DEFAULT_VOICE_CALLBACK
            ),
            missed_call_sms=check_template(
                "ALERT_MISSED_CALL_SMS_TEMPLATE", settings.alert_missed_call_sms_template or DEFAULT_MISSED_CALL_SMS
            ),
            withheld_call_sms=check_template(
                "ALERT_WITHHELD_CALL_SMS_TEMPLATE",
                settings.alert_withheld_call_sms_template or DEFAULT_WITHHELD_CALL_SMS,
            ),
            inbound_text_sms=check_template(
                "ALERT_INBOUND_TEXT_SMS_TEMPLATE",
                settings.alert_inbound_text_sms_template or DEFAULT_INBOUND_TEXT_SMS,
            ),
        )

    def render(self, template: str, facts: AlertFacts) -> str:
        return template.format(**facts.values())
