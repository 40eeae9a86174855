"""Normalizers that make one person's phone and email compare equal however they typed them."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_FIELD_CHARS = 200
# A message is never cut here: the CRM note says where a message too long for it continues (worker/delivery/).
MAX_MESSAGE_CHARS = 1_000_000
# Fewer digits than this is not a phone number someone could dial, typed or not.
MIN_PHONE_DIGITS = 5

# Format characters (zero-width space/joiners, bidi overrides) survive NFKC and would defeat equality.
_INVISIBLE = re.compile(r"[\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_UNDIALLABLE = frozenset(
    {phonenumbers.PhoneNumberType.PREMIUM_RATE, phonenumbers.PhoneNumberType.SHARED_COST}
)


def clean_text(value: str | None, *, limit: int = MAX_FIELD_CHARS) -> str | None:
    """NFKC, without invisible and control characters, whitespace collapsed, cut to `limit` characters."""
    if value is None:
        return None
    # Invisible characters go first: between a letter and its accent they would stop NFKC composing them.
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", value))
    text = _CONTROL.sub(" ", text)
    if limit <= MAX_FIELD_CHARS:
        text = " ".join(text.split())
    text = text.strip()[:limit].rstrip()
    return text or None


def normalize_phone(raw: str | None, region: str = "US") -> str | None:
    """E.164 for a valid, diallable number; None for anything else (including premium-rate numbers).

    Mexican mobiles written the old way, with a 1 after +52 (dropped in August 2019), are read without it:
    libphonenumber no longer accepts them.
    """
    text = clean_text(raw, limit=40)
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    national = str(number.national_number)
    if number.country_code == 52 and len(national) == 11 and national.startswith("1"):
        number = phonenumbers.parse(f"+52{national[1:]}", None)
    # number_type is UNKNOWN for a number that is not valid: one look at the metadata answers both questions
    # (is_valid_number, then number_type, would match the number against it twice).
    kind = phonenumbers.number_type(number)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN or kind in _UNDIALLABLE:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str | None) -> str | None:
    """A lower-case address, or None when it is not an address.

    Conservative: only Gmail, which documents that dots and "+tags" do not matter, loses them.
    """
    text = clean_text(raw, limit=254)
    if not text:
        return None
    try:
        parsed = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    local, domain = parsed.local_part.lower(), parsed.domain.lower()
    if domain in _GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
        if not local:  # "+tag@gmail.com" is no mailbox
            return None
    return f"{local}@{domain}"


def looks_like_a_phone(raw: str | None) -> bool:
    """Enough digits to be a number someone meant to give, even when it cannot be read as one."""
    return sum(ch.isdigit() for ch in raw or "") >= MIN_PHONE_DIGITS
