"""The reference for bench/backfill_scale.py: the least a correct backfill could do, on the same tables.

Storing: each page's payloads encrypted and inserted in one statement, committed. Processing, a page of
`HISTORY_PAGE_SIZE` in one transaction, with psycopg and no ORM: the rows claimed `FOR UPDATE` and decrypted; each
phone read as admitflow reads it (`normalize_phone`), each email trimmed and lower-cased; their blind indexes (the
newest key only); the lock rows taken; the leads sharing a phone or email read; each entry joined to the lead of its
phone or email, else a new lead with its PHI encrypted; then one statement each for the new leads, the joined leads,
the outbox rows (CRM sync and staff alert) and the submissions. What it leaves out is what admitflow adds to that:
screening, the form's field mapping, email validation, weighing evidence (names, device, time), merges, floods and
the checks for a recent alert.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Json

from worker.intake.normalize import normalize_phone
from worker.leads.dedup import random_ref
from worker.store.phi import current_vault

STORE = """
INSERT INTO submissions (site, form_id, entry_id, source, received_at, payload, state, is_repeat)
SELECT %(site)s, page.form_id, page.entry_id, 'backfill', now(), page.payload, 'received', false
FROM json_to_recordset(%(rows)s) AS page(form_id text, entry_id text, payload text)
ON CONFLICT DO NOTHING RETURNING id
"""
# By id alone, the state sifted after: with the state in the query PostgreSQL may scan every waiting submission
# (worker/leads/page_writes.py, `claim`).
CLAIM = """
SELECT id, state, payload FROM submissions WHERE id = ANY(%s) ORDER BY id FOR UPDATE
"""
TAKE_LOCKS = """
INSERT INTO lead_keys (kind, digest)
SELECT kind, digest FROM json_to_recordset(%s) AS page(kind text, digest text) ORDER BY kind, digest
ON CONFLICT DO NOTHING RETURNING kind, digest
"""
LOCK_EXISTING = """
SELECT kind, digest FROM lead_keys
WHERE (kind, digest) IN (SELECT kind, digest FROM json_to_recordset(%s) AS page(kind text, digest text))
ORDER BY kind, digest FOR UPDATE
"""
CANDIDATES = """
SELECT id, phone_index, email_index FROM leads
WHERE status <> 'merged' AND (phone_index = ANY(%(phones)s) OR email_index = ANY(%(emails)s))
"""
NEW_LEADS = """
INSERT INTO leads (ref, first_name, last_name, phone, email, phone_index, email_index, priority,
                   status, repeat_count, created_at, last_request_at)
SELECT ref, first_name, last_name, phone, email, phone_index, email_index, 'normal', 'new', 0,
       at, at
FROM json_to_recordset(%s) AS page(ref text, first_name text, last_name text, phone text, email text,
                                   phone_index text, email_index text, at timestamptz)
RETURNING id, ref
"""
JOINED_LEADS = """
UPDATE leads SET repeat_count = leads.repeat_count + page.repeats,
                 last_request_at = greatest(leads.last_request_at, page.at)
FROM json_to_recordset(%s) AS page(id bigint, repeats int, at timestamptz) WHERE leads.id = page.id
"""
OUTBOX = """
INSERT INTO outbox (kind, lead_id, submission_id, state, attempts, next_attempt_at, created_at)
SELECT kind, lead_id, submission_id, 'pending', 0, now(), now()
FROM json_to_recordset(%s) AS page(kind text, lead_id bigint, submission_id bigint)
"""
SUBMISSIONS = """
UPDATE submissions SET state = 'processed', processed_at = now(), lead_id = page.lead_id,
                       device_index = page.device_index, requested_at = page.at, is_repeat = page.is_repeat
FROM json_to_recordset(%s) AS page(id bigint, lead_id bigint, device_index text, at timestamptz, is_repeat boolean)
WHERE submissions.id = page.id
"""


def store_page(connection: psycopg.Connection[Any], site: str, entries: list[dict[str, Any]]) -> list[int]:
    vault = current_vault()
    rows = [{"form_id": entry["form_id"], "entry_id": entry["id"],
             "payload": vault.encrypt(json.dumps(entry, separators=(",", ":")))} for entry in entries]
    ids = [row[0] for row in connection.execute(STORE, {"site": site, "rows": Json(rows)})]
    connection.commit()
    return ids


def _fresh_refs(connection: psycopg.Connection[Any], count: int) -> list[str]:
    refs: set[str] = set()
    while len(refs) < count:
        drawn = {random_ref() for _ in range(count - len(refs))}
        taken = {ref for ref, in connection.execute("SELECT ref FROM leads WHERE ref = ANY(%s)", (list(drawn),))}
        refs |= drawn - taken
    return list(refs)


_CONNECTIONS: dict[str, psycopg.Connection[Any]] = {}


def process_page(url: str, submission_ids: list[int]) -> tuple[int, int]:
    """Process stored submissions in one transaction, on this process's connection; (new leads, joined)."""
    vault = current_vault()
    if url not in _CONNECTIONS or _CONNECTIONS[url].closed:
        _CONNECTIONS[url] = psycopg.connect(url, autocommit=True)
    connection = _CONNECTIONS[url]
    with connection.transaction():
        read = []
        for submission_id, state, payload in connection.execute(CLAIM, (submission_ids,)):
            if state != "received":
                continue
            entry = json.loads(vault.decrypt(payload))
            phone, email = normalize_phone(entry.get("3")), (entry.get("2") or "").strip().lower() or None
            at = datetime.strptime(entry["date_created"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            digests = {kind: vault.blind_index(kind, value) for kind, value in
                       (("phone", phone), ("email", email), ("device", f"{entry['ip']}|{entry['user_agent']}"))
                       if value}
            read.append((at, submission_id, entry, phone, email, digests))
        read.sort(key=lambda item: (item[0], item[1]))
        wanted = sorted({(kind, digest) for *_, digests in read for kind, digest in digests.items()})
        locks = Json([{"kind": kind, "digest": digest} for kind, digest in wanted])
        if len(connection.execute(TAKE_LOCKS, (locks,)).fetchall()) < len(wanted):
            connection.execute(LOCK_EXISTING, (locks,)).fetchall()
        leads: dict[str, Any] = {}  # a digest -> a lead id, or the new lead's row
        for lead_id, phone_index, email_index in connection.execute(CANDIDATES, {
            "phones": [digest for kind, digest in wanted if kind == "phone"],
            "emails": [digest for kind, digest in wanted if kind == "email"],
        }):
            for digest in (phone_index, email_index):
                if digest is not None:
                    leads.setdefault(digest, lead_id)
        new: list[dict[str, Any]] = []
        joined: dict[int, dict[str, Any]] = {}
        decided = []
        for at, submission_id, entry, phone, email, digests in read:
            contact = [digests[kind] for kind in ("phone", "email") if kind in digests]
            lead = next((leads[digest] for digest in contact if digest in leads), None)
            created = lead is None
            if lead is None:
                lead = {"first_name": vault.encrypt(entry.get("1.3", "")),
                        "last_name": vault.encrypt(entry.get("1.6", "")),
                        "phone": vault.encrypt(phone) if phone else None,
                        "email": vault.encrypt(email) if email else None,
                        "phone_index": digests.get("phone"), "email_index": digests.get("email"),
                        "at": at.isoformat()}
                new.append(lead)
                for digest in contact:
                    leads[digest] = lead
            elif isinstance(lead, int):
                stored = joined.setdefault(lead, {"id": lead, "repeats": 0, "at": at.isoformat()})
                stored["repeats"] += 1
                stored["at"] = max(stored["at"], at.isoformat())
            decided.append((submission_id, lead, digests.get("device"), at, not created))
        refs = _fresh_refs(connection, len(new))
        for lead in new:
            lead["ref"] = refs.pop()
        ids = {ref: lead_id for lead_id, ref in connection.execute(NEW_LEADS, (Json(new),))} if new else {}
        if joined:
            connection.execute(JOINED_LEADS, (Json(list(joined.values())),))

        def lead_id_of(lead: Any) -> int:
            return ids[lead["ref"]] if isinstance(lead, dict) else int(lead)

        connection.execute(OUTBOX, (Json([
            {"kind": kind, "lead_id": lead_id_of(lead), "submission_id": submission_id}
            for submission_id, lead, *_ in decided for kind in ("crm_sync", "staff_alert")
        ]),))
        connection.execute(SUBMISSIONS, (Json([
            {"id": submission_id, "lead_id": lead_id_of(lead), "device_index": device, "at": at.isoformat(),
             "is_repeat": repeat}
            for submission_id, lead, device, at, repeat in decided
        ]),))
    return len(new), len(decided) - len(new)
