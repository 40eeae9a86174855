"""Why a lead holds the requests it holds: `admitflow leads why R-XXXXX`.

Reads the evidence dedup stored with each decision (`Submission.match_evidence`): for each request of the lead,
the candidates it was weighed against, their agreement levels, score and verdict; then the near misses, requests
of other leads that were weighed against this one and kept apart. Names, phones and emails are masked unless the
caller asks to show them (and audits that it did).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from config.settings import Settings
from worker.leads.dedup import Applicant
from worker.leads.processing import FormReader, stored_applicant
from worker.store.models import Lead, Submission

VERDICTS = {
    "joined": "joined",
    "merged": "merged into it (the request linked two leads of one person)",
    "below": "kept apart: score below the threshold",
    "guard": "kept apart: household guard",
    "leads_disagree": "kept apart: the two leads' own names or a split by hand keep them apart",
}
GUARDS = {
    "two_names": "two different first names",
    "close_names": "first names one letter apart (Paul, Paula) and no shared email",
    "different": "first names that are not one name written twice",
    "typo": "a slip one letter from the names of two people on this phone, and no shared email",
    "typo_between_names": "a slip one letter from two names one letter apart (Paull: Paul or Paula), another email",
}


class UnknownLead(LookupError):
    """No lead has this reference."""


def explain(session: Session, ref: str, settings: Settings, *, show: bool = False) -> list[str]:
    """The lines `leads why` prints. With `show`, the requests' names, phones and emails in full (PHI)."""
    lead = session.scalar(select(Lead).where(Lead.ref == ref.strip().upper()))
    if lead is None:
        raise UnknownLead(f"no lead {ref}")
    forms = FormReader(session, settings)
    lines = [_heading(session, lead)]
    for submission in sorted(lead.submissions, key=_when):
        lines.append(_request_line(submission, forms, settings, show))
        lines.extend(_decision_lines(submission.match_evidence))
    near = _near_misses(session, lead)
    lines.append(f"near misses: {len(near)} request(s) of other leads weighed against {lead.ref} and kept apart"
                 if near else "near misses: none")
    for submission, candidate in near:
        owner = submission.lead.ref if submission.lead else "no lead"
        lines.append(f"  {_request_line(submission, forms, settings, show).strip()} (now {owner})")
        lines.append(f"    {_candidate_line(candidate)}")
    return lines


def _heading(session: Session, lead: Lead) -> str:
    parts = [f"{lead.ref}: {lead.status}, {len(lead.submissions)} request(s)"]
    if lead.merged_into_id:
        parts.append(f"merged into {session.get_one(Lead, lead.merged_into_id).ref}")
    if lead.split_from_id:
        parts.append(f"split by hand from {session.get_one(Lead, lead.split_from_id).ref}")
    return "; ".join(parts)


def _when(submission: Submission) -> tuple[Any, int]:
    return (submission.requested_at or submission.received_at, submission.id)


def _request_line(submission: Submission, forms: FormReader, settings: Settings, show: bool) -> str:
    at = (submission.requested_at or submission.received_at).strftime("%Y-%m-%d %H:%M")
    applicant = stored_applicant(forms, submission, settings.phone_default_region)
    who = _person(applicant, show) if applicant else "(entry unreadable or purged)"
    return f"  submission {submission.id}, {at} UTC: {who}"


def _decision_lines(evidence: Any) -> list[str]:
    if not isinstance(evidence, dict):
        return ["    decided before dedup recorded its evidence"]
    if evidence.get("outcome") == "split":
        return [f"    split by hand from {evidence.get('from')} into {evidence.get('lead')}"]
    candidates = evidence.get("candidates") or []
    if not candidates:
        return ["    a new lead: no lead shared its phone, email or device"]
    outcome = {"new": "a new lead", "joined": "joined", "corrected": "joined on device evidence (a correction)"}
    lines = [f"    {outcome.get(evidence.get('outcome', ''), evidence.get('outcome'))}; threshold "
             f"{evidence.get('threshold')}"]
    return lines + [f"    {_candidate_line(candidate)}" for candidate in candidates]


def _candidate_line(candidate: dict[str, Any]) -> str:
    levels = candidate.get("levels") or {}
    said = ", ".join(f"{name.replace('_', ' ')} {level.replace('_', ' ')}" for name, level in levels.items())
    verdict = VERDICTS.get(candidate.get("verdict", ""), candidate.get("verdict"))
    guard = GUARDS.get(candidate.get("guard") or "")
    return f"{candidate.get('lead')}: score {candidate.get('score')}, {verdict}{f' ({guard})' if guard else ''}: {said}"


def _near_misses(session: Session, lead: Lead) -> list[tuple[Submission, dict[str, Any]]]:
    """Requests of other leads whose recorded evidence weighed this lead and kept it apart. The leads that could
    have weighed it share its phone, email or a device, or were split from it."""
    own = [submission.id for submission in lead.submissions]
    devices = {submission.device_index for submission in lead.submissions if submission.device_index}
    linked = [Lead.split_from_id == lead.id]
    linked += [Lead.phone_index == lead.phone_index] if lead.phone_index else []
    linked += [Lead.email_index == lead.email_index] if lead.email_index else []
    neighbours = set(session.scalars(select(Lead.id).where(or_(*linked), Lead.id != lead.id)))
    if devices:
        neighbours |= {lead_id for lead_id in session.scalars(
            select(Submission.lead_id).where(Submission.device_index.in_(devices))) if lead_id is not None}
    neighbours.discard(lead.id)
    found = []
    for submission in session.scalars(select(Submission).where(Submission.lead_id.in_(neighbours),
                                                               Submission.id.not_in(own)).order_by(Submission.id)):
        evidence = submission.match_evidence
        for candidate in evidence.get("candidates", []) if isinstance(evidence, dict) else []:
            if candidate.get("lead") == lead.ref and candidate.get("verdict") != "joined":
                found.append((submission, candidate))
    return found


def _person(applicant: Applicant, show: bool) -> str:
    if show:
        values = (applicant.first_name, applicant.last_name, applicant.phone, applicant.email)
        return " ".join(value for value in values if value) or "(no details)"
    name = " ".join(f"{word[0]}." for word in (applicant.first_name, applicant.last_name) if word)
    phone = f"phone …{applicant.phone[-2:]}" if applicant.phone else "no phone"
    email = "an email" if applicant.email else "no email"
    return f"{name or '(no name)'}, {phone}, {email}"
