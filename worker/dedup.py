"""Which lead a submission belongs to.

A submission joins the most recent lead, active within the dedup window, that shares its normalized phone or
email — unless the first names disagree, because two people (a couple, a parent and child) can share a phone or
an inbox, and merging them would leave one of them uncalled. Names alone never merge anyone.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worker.models import Lead, LeadKey
from worker.phi import PhiVault

REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U to misread in an SMS
REF_LENGTH = 5


@dataclass(frozen=True)
class Applicant:
    """A submitter after normalization. PHI: never log."""

    first_name: str | None
    last_name: str | None
    phone: str | None  # E.164
    email: str | None  # normalized
    consent_to_text: bool | None = None


def _name_key(name: str | None) -> str:
    if not name:
        return ""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())


def first_names_conflict(a: str | None, b: str | None) -> bool:
    """True when both first names are known and cannot be the same person's (an initial matches its name)."""
    key_a, key_b = _name_key(a), _name_key(b)
    if not key_a or not key_b:
        return False
    return not (key_a.startswith(key_b) or key_b.startswith(key_a))


def identity_digests(applicant: Applicant, vault: PhiVault) -> dict[str, str]:
    digests: dict[str, str] = {}
    if applicant.phone:
        digests["phone"] = vault.blind_index("phone", applicant.phone)
    if applicant.email:
        digests["email"] = vault.blind_index("email", applicant.email)
    return digests


def lock_identity(session: Session, digests: dict[str, str]) -> None:
    """Serialize every transaction that is deciding about the same phone or email, in the database."""
    rows = [{"kind": kind, "digest": digest} for kind, digest in sorted(digests.items())]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(pg_insert(LeadKey).values(rows).on_conflict_do_nothing())
        keys = [(row["kind"], row["digest"]) for row in rows]
        session.execute(
            select(LeadKey.kind)
            .where(tuple_(LeadKey.kind, LeadKey.digest).in_(keys))
            .order_by(LeadKey.kind, LeadKey.digest)
            .with_for_update()
        )
    else:
        # SQLite has one writer at a time: this INSERT makes the transaction that writer until it commits.
        session.execute(sqlite_insert(LeadKey).values(rows).on_conflict_do_nothing())


def _new_ref(session: Session) -> str:
    while True:
        ref = "R-" + "".join(secrets.choice(REF_ALPHABET) for _ in range(REF_LENGTH))
        if session.scalar(select(Lead.id).where(Lead.ref == ref)) is None:
            return ref


def find_matching_lead(
    session: Session, applicant: Applicant, digests: dict[str, str], *, at: datetime, window: timedelta
) -> Lead | None:
    conditions = []
    if "phone" in digests:
        conditions.append(Lead.phone_index == digests["phone"])
    if "email" in digests:
        conditions.append(Lead.email_index == digests["email"])
    if not conditions:
        return None
    candidates = session.scalars(
        select(Lead)
        .where(or_(*conditions), Lead.last_request_at >= at - window)
        .order_by(Lead.last_request_at.desc(), Lead.id.desc())
    )
    for lead in candidates:
        if not first_names_conflict(lead.first_name, applicant.first_name):
            return lead
    return None


def assign_lead(
    session: Session, applicant: Applicant, vault: PhiVault, *, at: datetime, window: timedelta
) -> tuple[Lead, bool]:
    """The lead this applicant belongs to, and whether it was created now. The caller commits."""
    digests = identity_digests(applicant, vault)
    lock_identity(session, digests)
    lead = find_matching_lead(session, applicant, digests, at=at, window=window)
    if lead is not None:
        _join(lead, applicant, digests, at)
        return lead, False
    lead = Lead(
        ref=_new_ref(session),
        first_name=applicant.first_name,
        last_name=applicant.last_name,
        phone=applicant.phone,
        email=applicant.email,
        phone_index=digests.get("phone"),
        email_index=digests.get("email"),
        consent_to_text=applicant.consent_to_text,
        created_at=at,
        last_request_at=at,
    )
    session.add(lead)
    session.flush()
    return lead, True


def _join(lead: Lead, applicant: Applicant, digests: dict[str, str], at: datetime) -> None:
    """A repeat request: count it, and fill in what the lead was missing."""
    lead.repeat_count += 1
    lead.last_request_at = max(lead.last_request_at, at)
    if lead.phone is None and applicant.phone:
        lead.phone, lead.phone_index = applicant.phone, digests["phone"]
    if lead.email is None and applicant.email:
        lead.email, lead.email_index = applicant.email, digests["email"]
    lead.first_name = lead.first_name or applicant.first_name
    lead.last_name = lead.last_name or applicant.last_name
    if applicant.consent_to_text is not None:
        lead.consent_to_text = applicant.consent_to_text
