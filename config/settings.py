"""Every setting admitflow reads, typed, from the environment, in one place.

Values are read once per process (`get_settings()`); a malformed value fails start-up with the variable's name.
`.env.example` at the repository root documents each variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_CONFIG_DIR = Path(__file__).resolve().parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "production"] = Field("development", alias="ADMITFLOW_ENV")

    database_url: str = Field("sqlite:///admitflow.db", alias="DATABASE_URL")
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
    key_file: Path = Field(Path(".admitflow-keys.json"), alias="ADMITFLOW_KEY_FILE")

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
    # A submission or outbox row untouched this long is handed to a worker again by the sweeper.
    stale_after_seconds: int = Field(120, alias="ADMITFLOW_STALE_AFTER_SECONDS", ge=10)
    sweep_interval_seconds: float = Field(30.0, alias="ADMITFLOW_SWEEP_INTERVAL_SECONDS", gt=0)

    web_host: str = Field("127.0.0.1", alias="ADMITFLOW_WEB_HOST")
    web_port: int = Field(8000, alias="ADMITFLOW_WEB_PORT", gt=0, lt=65536)
    # Web server processes sharing the port: one process accepts about 150 webhooks a second on one core.
    web_workers: int = Field(1, alias="ADMITFLOW_WEB_WORKERS", ge=1, le=64)
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

    # --- trust: log format, signed webhooks, retention ---
    # json: one JSON object per line (for log shippers); text: for humans at a terminal. Both mask PHI.
    log_format: Literal["json", "text"] = Field("json", alias="ADMITFLOW_LOG_FORMAT")
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
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("callback_cadence")
    @classmethod
    def _cadence(cls, value: str) -> str:
        import re

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
        "sites_file", "salesforce_private_key_file", "twilio_api_base_url", "gravityforms_base_url",
        "gravityforms_consumer_key", "gravityforms_consumer_secret", "webhook_secret", "encryption_keys",
        "blind_index_key", "hubspot_token", "twilio_account_sid", "twilio_auth_token", "twilio_from_number",
        "salesforce_client_id", "salesforce_client_secret", "salesforce_username", "gravityforms_signing_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `NAME=` in an .env file (as .env.example has it) means "not set", not "the current directory".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("salesforce_external_id_field", "salesforce_task_external_id_field", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object, info: ValidationInfo) -> object:
        # docker-compose passes an unset variable as "": the field's default stands.
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name or ""].default
        return value

    @field_validator("phone_default_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _psycopg3_driver(cls, value: str) -> str:
        # Accept the plain URLs ops paste from their provider; we ship psycopg 3, not psycopg2.
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

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
