"""The WordPress sites admitflow serves: where to poll, with which credentials, which forms, which CRM.

From SITES_FILE (TOML, see config/sites.example.toml) when set; otherwise one site from the GRAVITYFORMS_*
variables. Credentials are never in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import os
import tomllib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from config.settings import Settings

FieldRole = Literal[
    "first_name", "last_name", "email", "phone", "message", "consent", "consent_to_text", "best_time", "for_whom",
    "honeypot", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "fbclid", "msclkid",
    "referrer", "landing_page",
]


class SitesError(ValueError):
    """SITES_FILE or a variable it names is missing or invalid; the message says which."""


class FormConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    # Role -> Gravity Forms field or input id ("7", "1.3"): pins a role that `admitflow forms show` shows read from
    # another field, or that no field's type, label, admin label, input name or CSS class tells.
    fields: dict[FieldRole, str] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _text(cls, value: object) -> str:
        text = str(value)
        if not text.isascii() or not text.isdigit():
            raise ValueError("must be a Gravity Forms form id (digits)")
        return text


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    base_url: str | None = None  # the WordPress site, e.g. https://clinic.example.org
    consumer_key: str | None = Field(None, repr=False)
    consumer_secret: str | None = Field(None, repr=False)
    webhook_secret: str | None = Field(None, repr=False)
    # Standard Webhooks secret ("whsec_<base64>"): set, webhooks must be signed and the static header is not used.
    signing_secret: str | None = Field(None, repr=False)
    forms: list[FormConfig] = Field(default_factory=list)
    poll: bool = True
    crm: Literal["auto", "hubspot", "salesforce", "log"] = "auto"  # auto: CRM_BACKEND

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local = value.startswith(("http://127.0.0.1", "http://localhost"))
        if not (value.startswith("https://") or local):
            raise ValueError("must be an https:// URL: the API key pair is sent with every request")
        return value.rstrip("/")

    @field_validator("signing_secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        import base64
        import binascii

        if not value:
            return None
        try:
            key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            key = b""
        if not value.startswith("whsec_") or len(key) < 16:
            raise ValueError("a signing secret is 'whsec_' followed by the base64 of at least 16 random bytes")
        return value

    @model_validator(mode="after")
    def _pollable(self) -> SiteConfig:
        if self.poll and self.forms and not (self.base_url and self.consumer_key and self.consumer_secret):
            raise ValueError("polling needs base_url and the consumer key and secret (or set poll = false)")
        return self

    @property
    def can_poll(self) -> bool:
        return bool(self.poll and self.forms and self.base_url and self.consumer_key and self.consumer_secret)

    def form(self, form_id: str) -> FormConfig | None:
        return next((form for form in self.forms if form.id == form_id), None)


def _from_environment(name: str | None, label: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise SitesError(f"{label} names the variable {name}, which is not set")
    return value


def _site_from_file(raw: dict[str, object], index: int) -> SiteConfig:
    label = f"site #{index + 1}"
    values = dict(raw)
    for secret in ("consumer_key", "consumer_secret", "webhook_secret", "signing_secret"):
        env_name = values.pop(f"{secret}_env", None)
        values[secret] = _from_environment(str(env_name) if env_name else None, f"{label} {secret}_env")
    forms = values.get("forms", [])
    if isinstance(forms, list):
        values["forms"] = [form if isinstance(form, dict) else {"id": form} for form in forms]
    return SiteConfig.model_validate(values)


def load_sites(settings: Settings) -> list[SiteConfig]:
    """Every configured site; the first is the one `/hooks/gravityforms` (no site in the path) belongs to."""
    if settings.sites_file is None:
        return [_site_from_settings(settings)]
    path = settings.sites_file
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SitesError(f"SITES_FILE {path} cannot be read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SitesError(f"SITES_FILE {path} is not valid TOML: {exc}") from None
    entries = raw.get("site", [])
    if not isinstance(entries, list) or not entries:
        raise SitesError(f"SITES_FILE {path} has no [[site]] entries")
    try:
        sites = [_site_from_file(entry, index) for index, entry in enumerate(entries)]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SitesError(f"SITES_FILE {path} is invalid: {problems}") from None
    names = [site.name for site in sites]
    if len(set(names)) != len(names):
        raise SitesError(f"SITES_FILE {path} names a site twice")
    return sites


def _site_from_settings(settings: Settings) -> SiteConfig:
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() or None if value is not None else None

    forms = [{"id": form_id.strip()} for form_id in settings.gravityforms_form_ids.split(",") if form_id.strip()]
    try:
        return SiteConfig.model_validate(
            {
                "name": settings.site,
                "base_url": settings.gravityforms_base_url,
                "consumer_key": settings.gravityforms_consumer_key,
                "consumer_secret": secret(settings.gravityforms_consumer_secret),
                "webhook_secret": secret(settings.webhook_secret),
                "signing_secret": secret(settings.gravityforms_signing_secret),
                "forms": forms,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SitesError(f"the GRAVITYFORMS_* settings are invalid: {problems}") from None


def site_named(sites: list[SiteConfig], name: str) -> SiteConfig | None:
    return next((site for site in sites if site.name == name), None)

