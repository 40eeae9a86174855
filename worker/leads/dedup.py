"""Which lead a submission belongs to.

Precision comes first: merging two people means one of them is never called. Each lead that shares the
submission's normalized phone or email (active within the dedup window), or holds a submission sent from the same
device (IP and browser) within the correction window, is a candidate; the evidence for each is weighed
(`worker/leads/evidence.py`: email, phone, last name, first name, device, time gap) and the submission joins the
strongest that scores at least the threshold, unless the household guard keeps them apart (first names that
clearly differ: a couple or a parent and child share a phone, a last name, a device and often an inbox). A
person who resubmits within minutes to correct a mistyped phone or email shares neither with their first
submission: the device is the evidence then, and the corrected contact replaces the mistyped one. Names alone
never merge anyone: without a shared phone, email or device, a lead is not even a candidate.

Every decision is recorded with the submission (`Submission.match_evidence`): the levels and score of each
candidate and what came of it, never a name or a number. `admitflow leads why` reads it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict
from sqlalchemy.orm.instrumentation import manager_of_class

from worker.leads.evidence import (
    Decision,
    Evidence,
    Field,
    Level,
    Profile,
    compare,
    name_key,
)
from worker.leads.page_writes import UNSET_LEAD_COLUMNS, insert_leads
from worker.store.db import among, json_rows
from worker.store.models import (
    CrmCorrection,
    CrmCorrectionKind,
    Lead,
    LeadKey,
    LeadStatus,
    OutboxMessage,
    OutboxState,
    Submission,
)
from worker.store.phi import PhiVault

log = logging.getLogger(__name__)

REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U to misread in an SMS
REF_LENGTH = 5
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


# The first name a stored submission was read with: device evidence is weighed with the names of the requests
# that came from the device, not with every name their lead has gathered.
FirstNameOf = Callable[[Submission], str | None]


@dataclass(frozen=True)
class Assignment:
    lead: Lead
    created: bool
    corrected: bool = False  # joined on device evidence, with a corrected phone or email
    evidence: dict[str, Any] = field(default_factory=dict)  # the decision as stored: PHI-free
    crm_follow_up: bool = False  # a merge joined two leads that each have a CRM record


def applicant_profile(applicant: Applicant, at: datetime) -> Profile:
    names = (applicant.first_name,) if applicant.first_name else ()
    return Profile(names, applicant.last_name, applicant.phone, applicant.email, at, at)


def lead_profile(lead: Lead) -> Profile:
    names = tuple(name for name in lead_first_names(lead) if name)
    return Profile(names, lead.last_name, lead.phone, lead.email, lead.created_at, lead.last_request_at)


def lookup_digests(applicant: Applicant, vault: PhiVault) -> dict[str, tuple[str, ...]]:
    """The applicant's phone, email and device digests under every configured blind-index key, newest first:
    during a key rotation a stored digest may still be under an older key."""
    values = {"phone": applicant.phone, "email": applicant.email, "device": applicant.device}
    return {kind: vault.blind_indexes(kind, value) for kind, value in values.items() if value}


_LOCK_ROWS = json_rows(column("kind", String), column("digest", String))
_LEAD_KEYS = cast(Table, LeadKey.__table__)
_TAKE_LOCK_ROWS = (
    pg_insert(_LEAD_KEYS)
    .from_select(["kind", "digest"], select(_LOCK_ROWS.c.kind, _LOCK_ROWS.c.digest)
                 .order_by(_LOCK_ROWS.c.kind, _LOCK_ROWS.c.digest))
    .on_conflict_do_nothing()
    .returning(_LEAD_KEYS.c.kind, _LEAD_KEYS.c.digest)
)


def lock_identity(session: Session, lookups: dict[str, tuple[str, ...]]) -> None:
    """Serialize every transaction that is deciding about the same phone, email or device, in the database.
    Locks the digests under every configured key, so a process still on the old key list serializes too."""
    wanted = {(kind, digest) for kind, digests in lookups.items() for digest in digests}
    if not wanted:
        return
    if session.get_bind().dialect.name != "postgresql":
        # SQLite has one writer at a time: this INSERT makes the transaction that writer until it commits.
        rows = [{"kind": kind, "digest": digest} for kind, digest in sorted(wanted)]
        session.execute(sqlite_insert(LeadKey).values(rows).on_conflict_do_nothing())
        return
    # A row this transaction inserts is its own until it commits: another inserting the same key waits for it.
    # The rows that existed already are locked, in one sorted order so that two transactions cannot deadlock.
    # `admitflow keys rotate` deletes lock rows: one deleted between the insert and the lock is inserted again.
    while wanted:
        inserted = session.execute(_TAKE_LOCK_ROWS, {"rows": [{"kind": kind, "digest": digest}
                                                               for kind, digest in sorted(wanted)]}).all()
        wanted -= {(kind, digest) for kind, digest in inserted}
        if not wanted:
            return
        locked = session.execute(
            select(LeadKey.kind, LeadKey.digest)
            .where(
                among(session, LeadKey.kind, {kind for kind, _ in wanted}),
                among(session, LeadKey.digest, {digest for _, digest in wanted}),
            )
            .order_by(LeadKey.kind, LeadKey.digest)
            .with_for_update()
        ).all()
        wanted -= {(kind, digest) for kind, digest in locked}


def random_ref() -> str:
    """A lead reference drawn at random (whether a lead has it already is the caller's to check)."""
    bits = secrets.randbits(5 * REF_LENGTH)  # one letter of the 32 from each 5 bits
    return "R-" + "".join(REF_ALPHABET[bits >> shift & 31] for shift in range(0, 5 * REF_LENGTH, 5))


def fresh_refs(session: Session, count: int) -> list[str]:
    """`count` lead references that no lead has yet, checked in one query."""
    refs: set[str] = set()
    while len(refs) < count:
        drawn = {random_ref() for _ in range(count - len(refs))} - refs
        taken = set(session.scalars(select(Lead.ref).where(among(session, Lead.ref, drawn))))
        refs |= drawn - taken
    return sorted(refs)


def lead_first_names(lead: Lead) -> list[str | None]:
    return list(lead.known_first_names or []) or [lead.first_name]


def mergeable(a: Lead, b: Lead, applicant: Applicant | None = None) -> bool:
    """May two leads that both match a submission be merged? Not if an operator split one from the other, nor if
    their last names differ; and their first names must agree with each other, or the submission's own full
    first name must bridge them (Uliess and Ulsies are both one typo from Ulises): what processing in time order
    would have concluded. An initial or a missing name bridges nothing."""
    if a.split_from_id is not None and a.split_from_id == b.id:
        return False
    if b.split_from_id is not None and b.split_from_id == a.id:
        return False
    context = (applicant.first_name,) if applicant is not None and applicant.first_name else ()
    relation = compare(lead_profile(a), lead_profile(b), context=context)
    if relation.levels[Field.LAST_NAME] == Level.DIFFERENT:
        return False
    if not relation.guarded:
        return True
    # Two real names (Paul, Paula) are never bridged; a name and a misspelling of it can be (Malik, Mali).
    return (relation.guard in (Level.DIFFERENT, Level.TYPO_BETWEEN_NAMES) and applicant is not None
            and len(name_key(applicant.first_name)) > 1)


def _active_around(lead: Lead, at: datetime, window: timedelta) -> bool:
    return lead.status != LeadStatus.MERGED and lead.last_request_at >= at - window and lead.created_at <= at + window


class KnownLeads:
    """The leads one transaction can match, read from the database once per phone, email or device digest and
    kept current in memory from then on: these are the session's own objects, so a lead created, joined or merged
    earlier in the transaction is seen as it now is. A page of entries is deduplicated with a few queries this
    way instead of a few per entry.

    Only leads active within `window` of [earliest, latest] are read (and device evidence within
    `correction_window`): no entry of the transaction can match any other, and a lead only changes by matching.
    """

    def __init__(self, session: Session, *, earliest: datetime, latest: datetime, window: timedelta,
                 correction_window: timedelta, first_name_of: FirstNameOf) -> None:
        self.session, self.first_name_of = session, first_name_of
        self.earliest, self.latest = earliest, latest
        self.window, self.correction_window = window, correction_window
        self._leads: dict[Lead, int] = {}  # an ordered set: each lead's position
        # Every phone or email digest a known lead has held in this transaction, and the leads that held it: a
        # superset of those holding it now (`sharing` checks), kept by `add` whenever a lead's digests change.
        self._by_digest: dict[str, dict[Lead, None]] = {}
        self._read: set[tuple[str, str]] = set()
        # By device digest: (when, lead, first name) of each submission from it already assigned to a lead.
        self._devices: dict[str, list[tuple[datetime, Lead, str | None]]] = {}

    def read(self, lookups: list[dict[str, tuple[str, ...]]]) -> None:
        """Read the leads sharing any of these digests, unless read already."""
        wanted = {(kind, digest) for each in lookups for kind, digests in each.items() for digest in digests}
        wanted -= self._read
        if not wanted:
            return
        self._read |= wanted
        contacts = [among(self.session, column, {digest for kind, digest in wanted if kind == name})
                    for name, column in (("phone", Lead.phone_index), ("email", Lead.email_index))
                    if any(kind == name for kind, _ in wanted)]
        if contacts:
            for lead in self.session.scalars(select(Lead).where(
                or_(*contacts),
                Lead.status != LeadStatus.MERGED,
                Lead.last_request_at >= self.earliest - self.window,
                Lead.created_at <= self.latest + self.window,
            )):
                self.add(lead)
        devices = sorted(digest for kind, digest in wanted if kind == "device")
        if devices:
            for submission, lead in self.session.execute(
                select(Submission, Lead)
                .join(Lead, Submission.lead_id == Lead.id)
                .where(
                    among(self.session, Submission.device_index, devices),
                    Submission.requested_at >= self.earliest - self.correction_window,
                    Submission.requested_at <= self.latest + self.correction_window,
                )
            ):
                if submission.requested_at is not None:
                    self.add_submission(submission.device_index, submission.requested_at, lead,
                                        self.first_name_of(submission))
                    self.add(lead)

    def add(self, lead: Lead) -> None:
        """Know this lead, under its phone and email digests as they are now (call again after they change)."""
        self._leads.setdefault(lead, len(self._leads))
        for digest in (lead.phone_index, lead.email_index):
            if digest is not None:
                self._by_digest.setdefault(digest, {})[lead] = None

    def leads(self) -> list[Lead]:
        return list(self._leads)

    def add_submission(self, device: str | None, requested_at: datetime, lead: Lead, first_name: str | None) -> None:
        if device is not None:
            self._devices.setdefault(device, []).append((requested_at, lead, first_name))

    def sharing(self, phones: tuple[str, ...], emails: tuple[str, ...]) -> list[Lead]:
        """Unmerged leads whose phone or email digest is one of these (read first if need be)."""
        self.read([{"phone": phones, "email": emails}])
        held = {lead: None for digest in (*phones, *emails) for lead in self._by_digest.get(digest, ())}
        return [lead for lead in sorted(held, key=self._leads.__getitem__) if lead.status != LeadStatus.MERGED
                and ((lead.phone_index is not None and lead.phone_index in phones)
                     or (lead.email_index is not None and lead.email_index in emails))]

    def from_device(self, devices: tuple[str, ...], at: datetime) -> dict[Lead, tuple[str, ...]]:
        """Unmerged leads now holding a submission sent from this device within the correction window of `at`,
        each with the first names those submissions bore."""
        self.read([{"device": devices}])
        found: dict[Lead, tuple[str, ...]] = {}
        sent = (each for device in dict.fromkeys(devices) for each in self._devices.get(device, ()))
        for requested_at, lead, first_name in sent:
            if at - self.correction_window <= requested_at <= at + self.correction_window:
                survivor = self._survivor(lead)
                if survivor.status != LeadStatus.MERGED:
                    found[survivor] = (*found.get(survivor, ()), *([first_name] if first_name else []))
        return found

    def _survivor(self, lead: Lead) -> Lead:
        return survivor(self.session, lead)


def survivor(session: Session, lead: Lead) -> Lead:
    """The lead a merged lead's submissions moved to (the session's copy: no query)."""
    while lead.status == LeadStatus.MERGED and lead.merged_into_id is not None:
        lead = session.get_one(Lead, lead.merged_into_id)
    return lead


class Deduplicator:
    """Assigns applicants to leads within one transaction, which the caller commits.

    `prepare` locks every phone, email and device of the transaction's applicants at once and reads the leads
    they could match; `assign` then decides one applicant at a time, in the order the caller gives (time order),
    creating leads without a round trip each: a new lead stays out of the session until `save_new_leads` inserts
    the unsaved ones in one statement (at the end of the page, or first when a merge needs their ids). A batch of
    one is the webhook's case.
    """

    def __init__(self, session: Session, vault: PhiVault, *, window: timedelta, correction_window: timedelta,
                 earliest: datetime, latest: datetime, first_name_of: FirstNameOf) -> None:
        self.session, self.vault = session, vault
        self.window, self.correction_window = window, correction_window
        self.known = KnownLeads(session, earliest=earliest, latest=latest, window=window,
                                correction_window=correction_window, first_name_of=first_name_of)
        self._lookups: dict[Applicant, dict[str, tuple[str, ...]]] = {}
        self._refs: list[str] = []
        self._unsaved: list[Lead] = []

    def lookups(self, applicant: Applicant) -> dict[str, tuple[str, ...]]:
        if applicant not in self._lookups:
            self._lookups[applicant] = lookup_digests(applicant, self.vault)
        return self._lookups[applicant]

    def prepare(self, applicants: list[Applicant]) -> None:
        every: dict[str, tuple[str, ...]] = {}
        for applicant in applicants:
            for kind, digests in self.lookups(applicant).items():
                every[kind] = (*every.get(kind, ()), *digests)
        lock_identity(self.session, {kind: tuple(set(digests)) for kind, digests in every.items()})
        self.known.read([self.lookups(applicant) for applicant in applicants])
        # A join can make a matched lead's other phone or email matter (`_absorb_now_agreeing`): read those too.
        self.known.read([self._own_lookups(lead) for lead in self.known.leads()])
        self._refs = fresh_refs(self.session, len(applicants))

    def assign(self, applicant: Applicant, *, at: datetime) -> Assignment:
        """The lead this applicant belongs to, created if none, with the evidence that decided it.

        When the submission links leads that were created apart (entries processed out of order), those that
        are the same person are merged into the strongest match, so the result does not depend on arrival order.
        """
        lookups = self.lookups(applicant)
        digests = {kind: under_each_key[0] for kind, under_each_key in lookups.items()}  # stored: the newest key
        contact = [lead for lead in self.known.sharing(lookups.get("phone", ()), lookups.get("email", ()))
                   if _active_around(lead, at, self.window)]
        devices = self.known.from_device(lookups["device"], at) if "device" in lookups else {}
        candidates = list(dict.fromkeys([*contact, *devices]))
        me = applicant_profile(applicant, at)
        weighed = _ambiguity_guarded([(lead, compare(me, lead_profile(lead), same_device_soon=lead in devices,
                                                     device_names=devices.get(lead))) for lead in candidates])
        matches = [(lead, evidence) for lead, evidence in weighed if evidence.same_person]
        if len(matches) > 1 and any(lead.id is None for lead, _ in matches):
            self.save_new_leads()  # a lead created earlier in this transaction: ranking and merging need its id
        matches = _best_first(matches)
        decision = Decision()
        for lead, evidence in weighed:
            if not evidence.same_person:
                decision.weigh(lead.ref, evidence, "guard" if evidence.guarded else "below")
        if matches:
            (lead, evidence), follow_up = matches[0], False
            decision.weigh(lead.ref, evidence, "joined")
            for other, other_evidence in matches[1:]:
                if mergeable(lead, other, applicant):
                    follow_up |= absorb(self.session, lead, other)
                    decision.weigh(other.ref, other_evidence, "merged")
                else:
                    decision.weigh(other.ref, other_evidence, "leads_disagree")
            corrected = lead not in contact
            decision.outcome = "corrected" if corrected else "joined"
            _join(lead, applicant, digests, at, corrected=corrected)
            self.known.add(lead)  # its phone or email may be new, or taken from a lead merged into it
            follow_up |= self._absorb_now_agreeing(lead, at)
            self.known.add(lead)
            return Assignment(lead, created=False, corrected=corrected, evidence=decision.record(lead.ref),
                              crm_follow_up=follow_up)
        lead = new_lead(applicant, digests, at, self._refs.pop() if self._refs else self._one_more_ref())
        self._unsaved.append(lead)
        self.known.add(lead)
        return Assignment(lead, created=True, evidence=decision.record(lead.ref))

    def save_new_leads(self) -> None:
        """Insert the leads created since the last call, in one statement, and make them the session's own (their
        later changes are flushed as any loaded lead's)."""
        unsaved, self._unsaved = self._unsaved, []
        insert_leads(self.session, unsaved)
        for lead in unsaved:
            make_transient_to_detached(lead)
            self.session.add(lead)
        self.session.flush()

    def finish(self) -> None:
        """Write the transaction's decisions about leads: insert the leads still unsaved (each gets its id; they stay
        out of the session, nothing changes them any more) and flush the changes to the others."""
        unsaved, self._unsaved = self._unsaved, []
        insert_leads(self.session, unsaved)
        self.session.flush()

    def _one_more_ref(self) -> str:
        """A reference for a lead beyond those `prepare` drew (none of the unsaved leads' either)."""
        taken = {lead.ref for lead in self._unsaved}
        while (ref := fresh_refs(self.session, 1)[0]) in taken:
            pass
        return ref

    def assigned(self, applicant: Applicant, at: datetime, lead: Lead) -> str | None:
        """Record that a submission from this applicant now belongs to `lead` (device evidence for the rest of the
        transaction); returns the device digest to store with the submission (under the newest key)."""
        device = self.lookups(applicant).get("device", (None,))[0]
        self.known.add_submission(device, at, lead, applicant.first_name)
        return device

    def _own_lookups(self, lead: Lead) -> dict[str, tuple[str, ...]]:
        """The lead's phone and email digests under every blind-index key."""
        values = {"phone": lead.phone, "email": lead.email}
        return {kind: self.vault.blind_indexes(kind, value) for kind, value in values.items() if value}

    def _absorb_now_agreeing(self, lead: Lead, at: datetime) -> bool:
        """A join can teach a lead a name (Elizabeth) or a phone that reconciles it with a lead kept apart earlier
        for the same phone or email (Liz): merge those now, as time-ordered processing would have. Neighbours are
        looked up under every blind-index key: during a rotation theirs may not be rewritten yet. True when a
        merge left the CRM with two records to merge."""
        own = self._own_lookups(lead)
        if not own:
            return False
        neighbours = [other for other in self.known.sharing(own.get("phone", ()), own.get("email", ()))
                      if other is not lead and _active_around(other, at, self.window)]
        follow_up = False
        for other in neighbours:
            if compare(lead_profile(lead), lead_profile(other)).same_person and mergeable(lead, other):
                if other.id is None or lead.id is None:
                    self.save_new_leads()
                follow_up |= absorb(self.session, lead, other)
        return follow_up


def _ambiguity_guarded(weighed: list[tuple[Lead, Evidence]]) -> list[tuple[Lead, Evidence]]:
    """A slip one letter from the names of two people who share this phone (Danielw, beside a Daniel and a
    Daniela) says nothing about which of them wrote it: only a shared inbox joins it to one."""
    slipped = [lead for lead, evidence in weighed
               if evidence.levels[Field.FIRST_NAME] in (Level.TYPO, Level.TYPO_BETWEEN_NAMES)]
    if len(slipped) < 2 or not any(
        compare(lead_profile(a), lead_profile(b)).guard in (Level.TWO_NAMES, Level.CLOSE_NAMES)
        for at, a in enumerate(slipped) for b in slipped[at + 1:]
    ):
        return weighed
    return [(lead, replace(evidence, guard=Level.TYPO) if lead in slipped and not evidence.guarded
             and evidence.levels[Field.EMAIL] != Level.SAME else evidence) for lead, evidence in weighed]


def _best_first(matches: list[tuple[Lead, Evidence]]) -> list[tuple[Lead, Evidence]]:
    """The matching leads, the strongest evidence first, then the latest request."""
    if len(matches) < 2:
        return matches
    return sorted(matches, key=lambda match: (-match[1].score, -match[0].last_request_at.timestamp(), match[0].id))


def absorb(session: Session, survivor: Lead, other: Lead) -> bool:
    """Move `other`'s submissions and pending work to `survivor` and mark `other` merged. True when both have a
    CRM record: a correction is then recorded for the CRM to merge them (`worker/delivery/crm_correct.py`)."""
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
    follow_up = False
    if other.crm_contact_id and other.crm_contact_id != survivor.crm_contact_id:
        if survivor.crm_contact_id is None:
            survivor.crm_contact_id, survivor.crm_task_id = other.crm_contact_id, other.crm_task_id
        else:
            session.add(CrmCorrection(lead_id=survivor.id, kind=CrmCorrectionKind.MERGE, other_lead_id=other.id))
            follow_up = True
    other.status, other.merged_into_id = LeadStatus.MERGED, survivor.id
    other.phone_index = other.email_index = None
    session.flush()
    return follow_up


_LEADS_MANAGER = manager_of_class(Lead)


def new_lead(applicant: Applicant, digests: dict[str, str], at: datetime, ref: str) -> Lead:
    """A lead made from its first request; `digests` are the request's blind indexes under the newest key.

    Its columns are put in place as loaded values, not through the constructor's change events (24 µs a lead, for
    the thousands a history makes). Nothing is lost by it: a new lead is inserted from these values either way
    (`insert_leads`, or the session's flush)."""
    if not Lead.__mapper__.configured:  # a lead made before any query, in a new process
        configure_mappers()
    lead = _LEADS_MANAGER.new_instance()
    instance_dict(lead).update(
        ref=ref,
        first_name=applicant.first_name,
        last_name=applicant.last_name,
        known_first_names=None,  # the first name alone (`lead_first_names`): one ciphertext less
        phone=applicant.phone,
        email=applicant.email,
        phone_index=digests.get("phone"),
        email_index=digests.get("email"),
        consent_to_text=applicant.consent_to_text,
        consent=applicant.consent,
        created_at=at,
        last_request_at=at,
        priority="normal",
        status=LeadStatus.NEW,
        repeat_count=0,
        **dict.fromkeys(UNSET_LEAD_COLUMNS),
    )
    return lead


def rebuild(lead: Lead, requests: list[tuple[Applicant, dict[str, str], datetime, bool]]) -> None:
    """Recompute a lead's details from its requests (applicant, newest-key digests, when, joined as a correction),
    as processing them in time order would have left them: after a request was split off it."""
    first, *rest = sorted(requests, key=lambda request: request[2])
    fresh = new_lead(first[0], first[1], first[2], lead.ref)
    for name in ("first_name", "last_name", "known_first_names", "phone", "email", "phone_index", "email_index",
                 "consent_to_text", "consent", "created_at", "last_request_at", "priority", "repeat_count"):
        setattr(lead, name, getattr(fresh, name))
    for applicant, digests, at, corrected in rest:
        _join(lead, applicant, digests, at, corrected=corrected)


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
