"""Every setting admitflow reads, typed, from the environment, in one place.

Values are read once per process (`get_settings()`); a malformed value fails start-up with the variable's name.
`.env.example` at the repository root documents each variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_CONFIG_DIR = Path(__file__).resolve().parent
SQLITE_FILE = "admitflow.db"
KEY_FILE = "phi-keys.json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "production"] = Field("development", alias="ADMITFLOW_ENV")

    # The embedded default's SQLite database and PHI key file live here, whatever the current directory; relative
    # paths in DATABASE_URL (sqlite) and ADMITFLOW_KEY_FILE are read from it. Unset: the per-user data directory.
    home: Path | None = Field(None, alias="ADMITFLOW_HOME")
    # Unset: a SQLite file in ADMITFLOW_HOME (the embedded default).
    database_url: str = Field("", alias="DATABASE_URL")
    # Empty means no broker: work runs inline in the process that received it (the embedded default).
    celery_broker_url: str = Field("", alias="CELERY_BROKER_URL")
    # Redis hands a task to another worker when it is not acknowledged this long after it was taken.
    celery_visibility_timeout_seconds: int = Field(3600, alias="CELERY_VISIBILITY_TIMEOUT_SECONDS", gt=0)

    site: str = Field("main", alias="ADMITFLOW_SITE", min_length=1, max_length=64)
    webhook_secret: SecretStr | None = Field(None, alias="GRAVITYFORMS_WEBHOOK_SECRET")
    webhook_secret_header: str = Field("X-Admitflow-Secret", alias="GRAVITYFORMS_WEBHOOK_HEADER")
    max_body_bytes: int = Field(256 * 1024, alias="ADMITFLOW_MAX_BODY_BYTES", gt=1024)

    # Several sites: a TOML file (config/sites.example.toml). Without it, one site from the variables below.
    sites_file: Path | None = Field(None, alias="SITES_FILE")
    gravityforms_base_url: str | None = Field(None, alias="GRAVITYFORMS_BASE_URL")
    gravityforms_consumer_key: str | None = Field(None, alias="GRAVITYFORMS_CONSUMER_KEY")
    gravityforms_consumer_secret: SecretStr | None = Field(None, alias="GRAVITYFORMS_CONSUMER_SECRET")
    gravityforms_form_ids: str = Field("", alias="GRAVITYFORMS_FORM_IDS")  # comma-separated, e.g. "1,3"
    poll_interval_seconds: float = Field(60.0, alias="POLL_INTERVAL_SECONDS", gt=0)
    # Each poll reads back this far behind the newest entry it has seen, for entries committed late.
    poll_overlap_minutes: int = Field(30, alias="POLL_OVERLAP_MINUTES", ge=1)
    # The first poll of a form reads this far back; older history is for `admitflow backfill`.
    poll_first_lookback_hours: int = Field(24, alias="POLL_FIRST_LOOKBACK_HOURS", ge=1)
    # Backfilled entries older than this are imported without texting staff.
    backfill_alert_max_age_hours: int = Field(24, alias="BACKFILL_ALERT_MAX_AGE_HOURS", ge=0)

    phone_default_region: str = Field("US", alias="PHONE_DEFAULT_REGION", min_length=2, max_length=2)
    dedup_window_days: int = Field(30, alias="DEDUP_WINDOW_DAYS", ge=1)
    # A resubmission from the same device and full name this soon is a correction of the same person's contact.
    correction_window_minutes: int = Field(30, alias="CORRECTION_WINDOW_MINUTES", ge=0)
    # Repeat requests from one lead within this many minutes of its last alert do not text staff again.
    alert_coalesce_minutes: int = Field(10, alias="ALERT_COALESCE_MINUTES", ge=0)
    # Past this many staff alerts in an hour from one device (IP and browser), its new leads are still stored and
    # synced but staff get one summary text instead of one per lead (0: no limit).
    alert_source_max_per_hour: int = Field(5, alias="ALERT_SOURCE_MAX_PER_HOUR", ge=0)

    # PHI at rest. Comma-separated Fernet keys, newest first; the blind-index keys (also comma-separated, newest
    # first) are for dedup digests.
    encryption_keys: SecretStr | None = Field(None, alias="ADMITFLOW_ENCRYPTION_KEYS")
    blind_index_key: SecretStr | None = Field(None, alias="ADMITFLOW_BLIND_INDEX_KEY")
    key_file: Path = Field(Path(KEY_FILE), alias="ADMITFLOW_KEY_FILE")

    # auto: HubSpot when HUBSPOT_TOKEN is set, else Salesforce when its credentials are set, else log-only.
    crm_backend: Literal["auto", "hubspot", "salesforce", "log"] = Field("auto", alias="CRM_BACKEND")
    salesforce_login_url: str = Field("https://login.salesforce.com", alias="SALESFORCE_LOGIN_URL")
    salesforce_client_id: str | None = Field(None, alias="SALESFORCE_CLIENT_ID")
    # Either a client secret (client credentials flow) or a username and private key file (JWT bearer flow).
    salesforce_client_secret: SecretStr | None = Field(None, alias="SALESFORCE_CLIENT_SECRET")
    salesforce_username: str | None = Field(None, alias="SALESFORCE_USERNAME")
    salesforce_private_key_file: Path | None = Field(None, alias="SALESFORCE_PRIVATE_KEY_FILE")
    salesforce_api_version: str = Field("60.0", alias="SALESFORCE_API_VERSION")
    salesforce_external_id_field: str = Field("Admitflow_Ref__c", alias="SALESFORCE_EXTERNAL_ID_FIELD")
    # Lead fields for where the person came from, "key=Field__c" comma-separated; keys: utm_source, utm_medium,
    # utm_campaign, utm_term, utm_content, gclid, fbclid, msclkid, referrer, landing_page, form_page.
    salesforce_lead_fields: str = Field("", alias="SALESFORCE_LEAD_FIELDS")
    # A Text (Unique, External ID) field on Task (Activity): notes, callback tasks and call logs are upserted by it,
    # so one whose answer was lost is updated, not created again.
    salesforce_task_external_id_field: str = Field("Admitflow_Key__c", alias="SALESFORCE_TASK_EXTERNAL_ID_FIELD")

    hubspot_token: SecretStr | None = Field(None, alias="HUBSPOT_TOKEN")
    hubspot_base_url: str = Field("https://api.hubapi.com", alias="HUBSPOT_BASE_URL")
    # --- CRM delivery under load ---
    # HubSpot's limits for a private app, counted in the Redis broker across all workers (0: not enforced).
    # https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines: 100 requests per 10 s on
    # Free/Starter (190 Professional/Enterprise, 250 with the API limit increase); CRM search 5 per second per
    # account, of which we leave one to other apps on the account.
    hubspot_requests_per_10_seconds: int = Field(100, alias="HUBSPOT_REQUESTS_PER_10_SECONDS", ge=0)
    hubspot_searches_per_second: int = Field(4, alias="HUBSPOT_SEARCHES_PER_SECOND", ge=0)
    # Send admitflow_lead_ref (unique value; new contacts are upserted by it), admitflow_source_form,
    # admitflow_repeat_count and admitflow_consent: create these contact properties in HubSpot first.
    hubspot_custom_properties: bool = Field(False, alias="HUBSPOT_CUSTOM_PROPERTIES")
    # Send where a new contact came from (admitflow_utm_source ... admitflow_form_page): create these contact
    # properties in HubSpot first (docs/configuration.md).
    hubspot_attribution_properties: bool = Field(False, alias="HUBSPOT_ATTRIBUTION_PROPERTIES")
    # With the custom properties on, leads waiting for HubSpot go in batches of up to this many per call (HubSpot
    # takes 100); 0 or 1 sends each lead on its own.
    hubspot_batch_size: int = Field(100, alias="HUBSPOT_BATCH_SIZE", ge=0, le=100)
    # HubSpot's search trails writes by seconds: a create whose answer was lost is looked for this long after.
    hubspot_search_lag_seconds: float = Field(10.0, alias="HUBSPOT_SEARCH_LAG_SECONDS", ge=0)
    # A new lead waits this long for others to share its CRM batch (the staff alert does not wait).
    crm_batch_linger_seconds: float = Field(2.0, alias="CRM_BATCH_LINGER_SECONDS", ge=0)
    # A failed delivery is retried after this many seconds, doubling while it keeps failing, up to the longest wait.
    retry_first_seconds: float = Field(5.0, alias="ADMITFLOW_RETRY_FIRST_SECONDS", gt=0)
    retry_max_seconds: float = Field(1800.0, alias="ADMITFLOW_RETRY_MAX_SECONDS", gt=0)

    twilio_account_sid: str | None = Field(None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(None, alias="TWILIO_AUTH_TOKEN")
    twilio_from_number: str | None = Field(None, alias="TWILIO_FROM_NUMBER")
    # Only for tests and local fakes; production leaves it unset.
    twilio_api_base_url: str | None = Field(None, alias="TWILIO_API_BASE_URL")

    roster_file: Path = Field(REPO_CONFIG_DIR / "roster.example.toml", alias="ROSTER_FILE")

    http_timeout_seconds: float = Field(10.0, alias="ADMITFLOW_HTTP_TIMEOUT", gt=0)
    max_delivery_attempts: int = Field(12, alias="ADMITFLOW_MAX_DELIVERY_ATTEMPTS", ge=1)
    # Once the work queue is empty, a submission or outbox row nobody holds and last handed to the broker this long
    # ago is handed on again by the sweeper (a lost task message); work a dead worker held, at its next pass.
    stale_after_seconds: int = Field(120, alias="ADMITFLOW_STALE_AFTER_SECONDS", ge=10)
    sweep_interval_seconds: float = Field(5.0, alias="ADMITFLOW_SWEEP_INTERVAL_SECONDS", gt=0)
    # Beat has a worker write a heartbeat row this often; /healthz and `admitflow health beat` call beat dead when
    # the row is older than the maximum age.
    heartbeat_seconds: float = Field(30.0, alias="ADMITFLOW_HEARTBEAT_SECONDS", gt=0)
    heartbeat_max_age_seconds: float = Field(90.0, alias="ADMITFLOW_HEARTBEAT_MAX_AGE_SECONDS", gt=0)

    web_host: str = Field("127.0.0.1", alias="ADMITFLOW_WEB_HOST")
    web_port: int = Field(8000, alias="ADMITFLOW_WEB_PORT", gt=0, lt=65536)
    # Web server processes sharing the port: one process accepts about 150 webhooks a second on one core.
    web_workers: int = Field(1, alias="ADMITFLOW_WEB_WORKERS", ge=1, le=64)
    # Worker pool processes. A lead costs a worker about 30 ms of CPU and most of a second of waiting on Twilio and
    # the CRM, so a process mostly waits: twice the cores of the benchmark machine. Each adds about 70 MB (Pss).
    worker_concurrency: int = Field(4, alias="ADMITFLOW_WORKER_CONCURRENCY", ge=1, le=64)
    log_level: str = Field("INFO", alias="ADMITFLOW_LOG_LEVEL")

    # --- admissions alerts: shifts, Twilio webhooks, reminders and escalation, PHI-free texts ---
    # Roster shifts are wall-clock times in this IANA time zone.
    center_timezone: str = Field("America/New_York", alias="CENTER_TIMEZONE")
    # The https address Twilio reaches admitflow at (with the path prefix a proxy adds, if any). Twilio signs each
    # webhook for the URL it called, so signatures are checked against this. Unset: Twilio webhooks get 403.
    public_url: str | None = Field(None, alias="ADMITFLOW_PUBLIC_URL")
    # Unclaimed this long after an alert: a voice reminder, then the next person on the ladder.
    alert_reminder_minutes: int = Field(5, alias="ALERT_REMINDER_MINUTES", ge=1)
    # Once the top of the ladder has been alerted, they are reminded this often until someone claims.
    alert_top_repeat_minutes: int = Field(10, alias="ALERT_TOP_REPEAT_MINUTES", ge=1)
    escalation_interval_seconds: float = Field(15.0, alias="ESCALATION_INTERVAL_SECONDS", gt=0)
    # Staff texts and the spoken reminder; unset: the built-in ones (worker/staff/templates.py lists allowed fields).
    alert_sms_template: str | None = Field(None, alias="ALERT_SMS_TEMPLATE")
    alert_repeat_sms_template: str | None = Field(None, alias="ALERT_REPEAT_SMS_TEMPLATE")
    alert_escalation_sms_template: str | None = Field(None, alias="ALERT_ESCALATION_SMS_TEMPLATE")
    voice_reminder_template: str | None = Field(None, alias="VOICE_REMINDER_TEMPLATE")
    voice_callback_template: str | None = Field(None, alias="VOICE_CALLBACK_TEMPLATE")
    # When a bridged call does not reach the person: when to call the claimer back to try again, comma-separated
    # waits ("15m", "2h") or "morning" (the next CALLBACK_MORNING_HOUR:00 in CENTER_TIMEZONE). Empty: no retries.
    callback_cadence: str = Field("15m,2h,morning", alias="CALLBACK_CADENCE")
    callback_morning_hour: int = Field(9, alias="CALLBACK_MORNING_HOUR", ge=0, le=23)
    # Texts per second from TWILIO_FROM_NUMBER across all workers (a Redis broker is shared); 0: no limit.
    twilio_sms_per_second: int = Field(3, alias="TWILIO_SMS_PER_SECOND", ge=0)
    # Text the person a short acknowledgement (no name, no mention of treatment) when they ticked "OK to text".
    person_ack_sms: bool = Field(False, alias="PERSON_ACK_SMS")

    # --- the center's number as a door: calls and texts from the public become leads ---
    # ring: an inbound call rings the staff on shift, each pressing 1 to take it; a call nobody takes, one the caller
    # hangs up on, or one after hours goes to voicemail and becomes a lead. voicemail: every call goes straight to
    # voicemail. off: the number's voice webhook should not point at admitflow (a call that arrives anyway is taken
    # as in voicemail, and logged as an error).
    voice_inbound: Literal["ring", "voicemail", "off"] = Field("off", alias="VOICE_INBOUND")
    # simultaneous: everyone on the ladder at once; ladder: on call, then second, then supervisor.
    voice_ring_order: Literal["simultaneous", "ladder"] = Field("simultaneous", alias="VOICE_RING_ORDER")
    voice_ring_seconds: int = Field(20, alias="VOICE_RING_SECONDS", ge=5, le=60)  # each rung, in ladder order
    voice_voicemail: bool = Field(True, alias="VOICE_VOICEMAIL")
    voice_voicemail_max_seconds: int = Field(120, alias="VOICE_VOICEMAIL_MAX_SECONDS", ge=10, le=3600)
    # Twilio transcribes voicemails of up to 2 minutes; the text goes to the CRM note, never to staff texts or logs.
    voice_transcribe: bool = Field(False, alias="VOICE_TRANSCRIBE")
    # What a caller hears before the tone; unset: the built-in words (worker/staff/phone_line.py).
    voice_missed_prompt: str | None = Field(None, alias="VOICE_MISSED_PROMPT", max_length=600)
    voice_after_hours_prompt: str | None = Field(None, alias="VOICE_AFTER_HOURS_PROMPT", max_length=600)
    # A text from a number that is not staff creates or joins a lead.
    sms_inbound_leads: bool = Field(True, alias="SMS_INBOUND_LEADS")
    # Sent once to a person whose text starts a conversation (unset: no reply). Fixed words: never what they wrote.
    sms_auto_reply: str | None = Field(None, alias="SMS_AUTO_REPLY", max_length=320)
    sms_help_reply: str | None = Field(None, alias="SMS_HELP_REPLY", max_length=320)
    alert_missed_call_sms_template: str | None = Field(None, alias="ALERT_MISSED_CALL_SMS_TEMPLATE")
    alert_withheld_call_sms_template: str | None = Field(None, alias="ALERT_WITHHELD_CALL_SMS_TEMPLATE")
    alert_inbound_text_sms_template: str | None = Field(None, alias="ALERT_INBOUND_TEXT_SMS_TEMPLATE")

    # --- trust: log format, signed webhooks, retention ---
    # auto: text on a terminal, JSON lines otherwise (for log shippers); json or text to choose. Both mask PHI.
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="ADMITFLOW_LOG_FORMAT")
    # Standard Webhooks signing secret ("whsec_<base64>") for the default site; set, it replaces the static header.
    gravityforms_signing_secret: SecretStr | None = Field(None, alias="GRAVITYFORMS_SIGNING_SECRET")
    # Raw entries and messages of leads the CRM holds are purged this many days after they arrived.
    retention_days: int = Field(90, alias="RETENTION_DAYS", ge=1)

    # --- observability: the admissions manager's status page (GET /status, HTTP Basic) ---
    # Unset username or password: /status answers 503. Prefer the hash (`admitflow report hash-password`).
    status_username: str | None = Field(None, alias="STATUS_USERNAME")
    status_password_hash: SecretStr | None = Field(None, alias="STATUS_PASSWORD_HASH")
    status_password: SecretStr | None = Field(None, alias="STATUS_PASSWORD")

    @field_validator("status_username", "status_password_hash", "status_password", mode="before")
    @classmethod
    def _blank_status_login_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("center_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone; use a name such as America/New_York") from None
        return value

    @field_validator("public_url", "alert_sms_template", "alert_repeat_sms_template",
                     "alert_escalation_sms_template", "voice_reminder_template", "voice_callback_template",
                     "voice_missed_prompt", "voice_after_hours_prompt", "sms_auto_reply", "sms_help_reply",
                     "alert_missed_call_sms_template", "alert_withheld_call_sms_template",
                     "alert_inbound_text_sms_template", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_the_default(cls, value: object, info: ValidationInfo) -> object:
        """A variable set but blank means its default: compose passes every variable .env.example lists, so one a
        newer release added arrives blank in an older .env."""
        if isinstance(value, str) and not value.strip() and info.field_name is not None:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @field_validator("callback_cadence")
    @classmethod
    def _cadence(cls, value: str) -> str:
        import re

        if value.strip().lower() == "none":
            return ""
        steps = [step.strip().lower() for step in value.split(",") if step.strip()]
        for step in steps:
            if step != "morning" and not re.fullmatch(r"[1-9]\d{0,3}[mh]", step):
                raise ValueError(f"{step!r} is not a wait: write waits such as 15m, 2h or morning, separated by commas")
        return ",".join(steps)

    @field_validator("public_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be the https address Twilio reaches admitflow at, e.g. https://admitflow.example.org")
        return value.rstrip("/")

    @field_validator(
        "home", "sites_file", "salesforce_private_key_file", "twilio_api_base_url", "gravityforms_base_url",
        "gravityforms_consumer_key", "gravityforms_consumer_secret", "webhook_secret", "encryption_keys",
        "blind_index_key", "hubspot_token", "twilio_account_sid", "twilio_auth_token", "twilio_from_number",
        "salesforce_client_id", "salesforce_client_secret", "salesforce_username", "gravityforms_signing_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `NAME=` in an .env file (as .env.example has it) means "not set", not "the current directory".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("salesforce_lead_fields")
    @classmethod
    def _lead_field_pairs(cls, value: str) -> str:
        for pair in (part.strip() for part in value.split(",") if part.strip()):
            key, _, name = pair.partition("=")
            if not key.strip() or not name.strip():
                raise ValueError(f"{pair!r} is not key=Field__c: write pairs such as utm_source=UTM_Source__c, "
                                 "separated by commas")
        return value

    @property
    def salesforce_lead_field_map(self) -> dict[str, str]:
        pairs = (part.partition("=") for part in self.salesforce_lead_fields.split(",") if part.strip())
        return {key.strip(): name.strip() for key, _, name in pairs}

    @field_validator("phone_default_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _psycopg3_driver(cls, value: str) -> str:
        # Accept the plain URLs ops paste from their provider; we ship psycopg 3, not psycopg2.
        value = value.strip()
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @model_validator(mode="after")
    def _local_state_in_home(self) -> Settings:
        """The SQLite database and the key file in the data directory, never wherever the command was run."""
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / SQLITE_FILE}"
        elif self.database_url.startswith("sqlite:///") and not self.database_url.startswith("sqlite:///:memory:"):
            path, _, query = self.database_url.removeprefix("sqlite:///").partition("?")
            if path and not Path(path).is_absolute():
                self.database_url = f"sqlite:///{self.data_dir / path}" + (f"?{query}" if query else "")
        if not self.key_file.is_absolute():
            self.key_file = self.data_dir / self.key_file
        return self

    @property
    def data_dir(self) -> Path:
        """Where the embedded default keeps its state: ADMITFLOW_HOME, else the per-user data directory."""
        if self.home is not None:
            return self.home.expanduser().resolve()
        from platformdirs import user_data_path

        return user_data_path("admitflow", appauthor=False)

    @property
    def uses_broker(self) -> bool:
        return bool(self.celery_broker_url)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def hubspot_configured(self) -> bool:
        return self.hubspot_token is not None and bool(self.hubspot_token.get_secret_value())

    @property
    def salesforce_configured(self) -> bool:
        secret = self.salesforce_client_secret is not None and bool(self.salesforce_client_secret.get_secret_value())
        jwt = bool(self.salesforce_username and self.salesforce_private_key_file)
        return bool(self.salesforce_client_id) and (secret or jwt)

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from_number)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
