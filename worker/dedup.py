"""Which lead a submission belongs to.

Precision comes first: merging two people means one of them is never called. So:
- A submission joins the most recent lead, active within the dedup window, that shares its normalized phone or
  email, unless the first names disagree: a couple or a parent and child can share a phone or an inbox.
  First names agree when equal, when one is an initial of the other, when one is a known nickname of the other
  (Bob and Robert), or when a longer name differs by a single typo (Jordan and Jordna).
- A person who resubmits within minutes to correct a mistyped phone or email shares neither with their first
  submission, so the device (IP and browser) and the full name are the evidence: same device, same full name,
  moments apart, is the same lead, and the corrected contact replaces the mistyped one.
- Names alone never merge anyone.
"""

from __future__ import annotations

import logging
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from nicknames import NickNamer
from rapidfuzz.distance import DamerauLevenshtein
from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worker.models import Lead, LeadKey, LeadStatus, OutboxMessage, OutboxState, Submission
from worker.phi import PhiVault

log = logging.getLogger(__name__)

REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U to misread in an SMS
REF_LENGTH = 5
# A typo is only forgiven in names this long: "Maria" and "Mario" are two people.
TYPO_MIN_LENGTH = 6
# A second request this soon after the last one marks the lead high priority: the person is waiting.
URGENT_WITHIN = timedelta(hours=6)


@dataclass(frozen=True)
class Applicant:
    """A submitter after normalization. PHI: never log."""

    first_name: str | None
    last_name: str | None
    phone: str | None  # E.164
    email: str | None  # normalized
    consent_to_text: bool | None = None
    consent: bool | None = None
    device: str | None = None  # "ip|user agent", only as evidence for corrections


@dataclass(frozen=True)
class Assignment:
    lead: Lead
    created: bool
    corrected: bool = False  # joined on device evidence, with a corrected phone or email


def name_key(name: str | None) -> str:
    """Lower-case letters and digits only, accents removed: how two spellings of a name are compared."""
    if not name:
        return ""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    return NickNamer()


def _nicknames_agree(a: str, b: str) -> bool:
    """One is a nickname of the other (Bob, Robert), or both shorten one longer name (Liz, Beth: Elizabeth).
    The dataset also links full names through shared nicknames (Robert and William both via "Bill"), which
    must not count: that is two people."""
    namer = _nicknamer()
    if b in namer.nicknames_of(a) or a in namer.nicknames_of(b):
        return True
    longest = max(len(a), len(b))
    return any(len(common) > longest for common in namer.canonicals_of(a) & namer.canonicals_of(b))


def first_names_agree(a: str | None, b: str | None) -> bool:
    """Could these first names be one person's? Unknown names agree with anything."""
    key_a, key_b = name_key(a), name_key(b)
    if not key_a or not key_b or key_a == key_b:
        return True
    short, long = sorted((key_a, key_b), key=len)
    if len(short) == 1:
        return long.startswith(short)
    if _nicknames_agree(key_a, key_b):
        return True
    return (
        len(short) >= TYPO_MIN_LENGTH and key_a[0] == key_b[0] and DamerauLevenshtein.distance(key_a, key_b) <= 1
    )


def full_names_match(a_first: str | None, a_last: str | None, b_first: str | None, b_last: str | None) -> bool:
    """Both full names known and the same person's: the bar for merging on device evidence alone."""
    if not all((name_key(a_first), name_key(a_last), name_key(b_first), name_key(b_last))):
        return False
    return first_names_agree(a_first, b_first) and _last_names_agree(a_last, b_last)


def _last_names_agree(a: str | None, b: str | None) -> bool:
    key_a, key_b = name_key(a), name_key(b)
    if key_a == key_b:
        return True
    return min(len(key_a), len(key_b)) >= TYPO_MIN_LENGTH and DamerauLevenshtein.distance(key_a, key_b) <= 1


def lookup_digests(applicant: Applicant, vault: PhiVault) -> dict[str, tuple[str, ...]]:
    """The applicant's phone, email and device digests under every configured blind-index key, newest first:
    during a key rotation a stored digest may still be under an older key."""
    values = {"phone": applicant.phone, "email": applicant.email, "device": applicant.device}
    return {kind: vault.blind_indexes(kind, value) for kind, value in values.items() if value}


def lock_identity(session: Session, lookups: dict[str, tuple[str, ...]]) -> None:
    """Serialize every transaction that is deciding about the same phone, email or device, in the database.
    Locks the digests under every configured key, so a process still on the old key list serializes too."""
    keys = sorted((kind, digest) for kind, digests in lookups.items() for digest in digests)
    rows = [{"kind": kind, "digest": digest} for kind, digest in keys]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        locked = 0
        # `admitflow keys rotate` deletes lock rows; one deleted between the insert and the lock is inserted again.
        while locked < len(rows):
            session.execute(pg_insert(LeadKey).values(rows).on_conflict_do_nothing())
            locked = len(session.execute(
                select(LeadKey.kind)
                .where(tuple_(LeadKey.kind, LeadKey.digest).in_(keys))
                .order_by(LeadKey.kind, LeadKey.digest)
                .with_for_update()
            ).all())
    else:
        # SQLite has one writer at a time: this INSERT makes the transaction that writer until it commits.
        session.execute(sqlite_insert(LeadKey).values(rows).on_conflict_do_nothing())


def _new_ref(session: Session) -> str:
    while True:
        ref = "R-" + "".join(secrets.choice(REF_ALPHABET) for _ in range(REF_LENGTH))
        if session.scalar(select(Lead.id).where(Lead.ref == ref)) is None:
            return ref


def lead_first_names(lead: Lead) -> list[str | None]:
    return list(lead.known_first_names or []) or [lead.first_name]


def _agrees_with_lead(lead: Lead, first_name: str | None) -> bool:
    return any(first_names_agree(known, first_name) for known in lead_first_names(lead))


def _same_person(a: Lead, b: Lead, applicant: Applicant) -> bool:
    """May two leads that one submission matched be merged? Only if their last names do not disagree, and
    their first names agree with each other, or the submission's own full first name bridges them (Uliess and
    Ulsies are both one typo from Ulises): what processing in time order would have concluded. An initial or
    a missing name bridges nothing."""
    if not _last_names_consistent(a, b):
        return False
    if any(_agrees_with_lead(a, name) for name in lead_first_names(b)):
        return True
    return len(name_key(applicant.first_name)) > 1


def find_contact_matches(
    session: Session, applicant: Applicant, lookups: dict[str, tuple[str, ...]], *, at: datetime, window: timedelta
) -> list[Lead]:
    """Leads active within the window either side of `at` sharing the phone or email, whose names agree."""
    conditions = []
    if "phone" in lookups:
        conditions.append(Lead.phone_index.in_(lookups["phone"]))
    if "email" in lookups:
        conditions.append(Lead.email_index.in_(lookups["email"]))
    if not conditions:
        return []
    candidates = session.scalars(
        select(Lead).where(
            or_(*conditions),
            Lead.status != LeadStatus.MERGED,
            Lead.last_request_at >= at - window,
            Lead.created_at <= at + window,
        )
    )
    return [lead for lead in candidates if _agrees_with_lead(lead, applicant.first_name)]


def find_correction_matches(
    session: Session, applicant: Applicant, lookups: dict[str, tuple[str, ...]], *, at: datetime, window: timedelta
) -> list[Lead]:
    """Leads that the same device submitted for the same full name within `window` of `at`, either side."""
    device = lookups.get("device")
    if device is None:
        return []
    candidates = session.scalars(
        select(Lead)
        .join(Submission, Submission.lead_id == Lead.id)
        .where(
            Submission.device_index.in_(device),
            Submission.requested_at >= at - window,
            Submission.requested_at <= at + window,
            Lead.status != LeadStatus.MERGED,
        )
        .distinct()
    )
    return [
        lead for lead in candidates
        if any(full_names_match(known, lead.last_name, applicant.first_name, applicant.last_name)
               for known in lead_first_names(lead))
    ]


def _best_first(contact: list[Lead], corrections: list[Lead], lookups: dict[str, tuple[str, ...]]) -> list[Lead]:
    """Every matching lead once, the strongest match first: more shared identifiers, then the latest request."""
    def strength(lead: Lead) -> tuple[int, datetime, int]:
        shared = sum(
            1 for kind, column in (("phone", lead.phone_index), ("email", lead.email_index))
            if column is not None and column in lookups.get(kind, ())
        )
        return (shared, lead.last_request_at, -lead.id)

    unique = {lead.id: lead for lead in [*contact, *corrections]}
    return sorted(unique.values(), key=strength, reverse=True)


def assign_lead(
    session: Session,
    applicant: Applicant,
    vault: PhiVault,
    *,
    at: datetime,
    window: timedelta,
    correction_window: timedelta,
) -> Assignment:
    """The lead this applicant belongs to, created if none. The caller commits.

    When the submission links leads that were created apart (entries processed out of order), those that are
    the same person are merged into the strongest match, so the result does not depend on arrival order.
    """
    lookups = lookup_digests(applicant, vault)
    digests = {kind: under_each_key[0] for kind, under_each_key in lookups.items()}  # what is stored: the newest key
    lock_identity(session, lookups)
    contact = find_contact_matches(session, applicant, lookups, at=at, window=window)
    corrections = find_correction_matches(session, applicant, lookups, at=at, window=correction_window)
    matches = _best_first(contact, corrections, lookups)
    if matches:
        lead = matches[0]
        for other in matches[1:]:
            if _same_person(lead, other, applicant):
                absorb(session, lead, other)
        corrected = lead not in contact
        _join(lead, applicant, digests, at, corrected=corrected)
        _absorb_now_agreeing(session, lead, vault, at=at, window=window)
        return Assignment(lead, created=False, corrected=corrected)
    lead = Lead(
        ref=_new_ref(session),
        first_name=applicant.first_name,
        last_name=applicant.last_name,
        known_first_names=[applicant.first_name] if applicant.first_name else [],
        phone=applicant.phone,
        email=applicant.email,
        phone_index=digests.get("phone"),
        email_index=digests.get("email"),
        consent_to_text=applicant.consent_to_text,
        consent=applicant.consent,
        created_at=at,
        last_request_at=at,
        priority="normal",
        repeat_count=0,
    )
    session.add(lead)
    session.flush()
    return Assignment(lead, created=True)


def _absorb_now_agreeing(session: Session, lead: Lead, vault: PhiVault, *, at: datetime, window: timedelta) -> None:
    """A join can teach a lead a name (Elizabeth) that reconciles it with a lead kept apart earlier for the
    same phone or email (Liz): merge those now, as time-ordered processing would have. Neighbours are looked up
    under every blind-index key: during a rotation theirs may not be rewritten yet."""
    shared = [column.in_(vault.blind_indexes(kind, value)) for kind, column, value in (
        ("phone", Lead.phone_index, lead.phone), ("email", Lead.email_index, lead.email)) if value]
    if not shared:
        return
    neighbours = session.scalars(
        select(Lead).where(
            or_(*shared), Lead.id != lead.id, Lead.status != LeadStatus.MERGED,
            Lead.last_request_at >= at - window, Lead.created_at <= at + window,
        )
    ).all()
    for other in neighbours:
        if any(_agrees_with_lead(lead, name) for name in lead_first_names(other)) and _last_names_consistent(
            lead, other
        ):
            absorb(session, lead, other)


def _last_names_consistent(a: Lead, b: Lead) -> bool:
    return not (name_key(a.last_name) and name_key(b.last_name)) or _last_names_agree(a.last_name, b.last_name)


def absorb(session: Session, survivor: Lead, other: Lead) -> None:
    """Move `other`'s submissions and pending work to `survivor` and mark `other` merged."""
    session.execute(update(Submission).where(Submission.lead_id == other.id).values(lead_id=survivor.id))
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.lead_id == other.id, OutboxMessage.state == OutboxState.PENDING)
        .values(lead_id=survivor.id)
    )
    survivor.repeat_count += other.repeat_count + 1
    survivor.created_at = min(survivor.created_at, other.created_at)
    survivor.last_request_at = max(survivor.last_request_at, other.last_request_at)
    survivor.known_first_names = _union(lead_first_names(survivor), lead_first_names(other))
    survivor.phone, survivor.phone_index = survivor.phone or other.phone, survivor.phone_index or other.phone_index
    survivor.email, survivor.email_index = survivor.email or other.email, survivor.email_index or other.email_index
    if other.status == LeadStatus.CLAIMED:
        survivor.status = LeadStatus.CLAIMED
    if other.crm_contact_id and other.crm_contact_id != survivor.crm_contact_id:
        if survivor.crm_contact_id is None:
            survivor.crm_contact_id, survivor.crm_task_id = other.crm_contact_id, other.crm_task_id
        else:
            log.warning("lead %s merged into %s; both have a CRM contact: merge them in the CRM", other.ref,
                        survivor.ref)
    other.status, other.merged_into_id = LeadStatus.MERGED, survivor.id
    other.phone_index = other.email_index = None
    session.flush()


def _union(*lists: list[str | None]) -> list[str]:
    seen: dict[str, str] = {}
    for names in lists:
        for name in names:
            if name and name_key(name) not in seen:
                seen[name_key(name)] = name
    return list(seen.values())


def _join(lead: Lead, applicant: Applicant, digests: dict[str, str], at: datetime, *, corrected: bool) -> None:
    """A repeat request: count it, raise urgency if it came soon, fill in (or, for a correction, replace)
    the contact details."""
    if abs(at - lead.last_request_at) <= URGENT_WITHIN:
        lead.priority = "high"
    lead.repeat_count += 1
    lead.last_request_at = max(lead.last_request_at, at)
    lead.created_at = min(lead.created_at, at)
    newer = at >= lead.last_request_at
    if applicant.phone and (lead.phone is None or (corrected and newer)):
        lead.phone, lead.phone_index = applicant.phone, digests["phone"]
    if applicant.email and (lead.email is None or (corrected and newer)):
        lead.email, lead.email_index = applicant.email, digests["email"]
    lead.first_name = lead.first_name or applicant.first_name
    lead.last_name = lead.last_name or applicant.last_name
    lead.known_first_names = _union(lead_first_names(lead), [applicant.first_name])
    if applicant.consent_to_text is not None:
        lead.consent_to_text = applicant.consent_to_text
    if applicant.consent is not None:
        lead.consent = applicant.consent
