"""The vendors' faults on the real stack (tests/support/fault_stack.py), shared by tests/integration/ and the fault
bench: creates at HubSpot and Twilio that are stored and then lose their answer, HubSpot's search trailing writes,
and a HubSpot storm of 429s, 502s and answers held past our timeout.

`lost_answers` takes every lead through the whole desk, so every kind of create is exposed: contact, note and
callback task; the acknowledgement text; the staff text; a reminder call (escalation step 0); an escalation text
and call to the supervisor (step 1); a claim by key press, a completed bridge, and its call log. Exactly one of
each must exist per lead. `crm_storm` is the storm of issue 19: every lead's note and task must arrive, none twice,
no row dead, with no waiting compressed, and it reports when the last note arrived.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import requests
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from tests.support.fault_stack import LEAD_REF, ON_CALL, FaultStack, contact_key
from tests.support.processes import wait_for

if TYPE_CHECKING:
    from tests.support.fault_scenarios import Scale

SUPERVISOR = "+16175550104"  # dana, the top of the ladder in fault_stack.ROSTER
CENTER = "+18555550100"
TWILIO_TOKEN = "fault-auth-token"  # fault_stack's TWILIO_AUTH_TOKEN
PUBLIC_URL = "https://admitflow.example.org"
HUBSPOT, TWILIO = "/crm/", "/2010-04-01/"
HOLD_SECONDS = 1.5  # longer than the stack's 1 s HTTP timeout

# The sweeper at fault_stack's 2 s / 10 s re-sent a backlog of 750 rows every 2 s (69,000 queued messages at 500
# people on a loaded machine): here it looks every 10 s for work untouched for a minute.
PATIENT_SWEEP = {"ADMITFLOW_SWEEP_INTERVAL_SECONDS": "10", "ADMITFLOW_STALE_AFTER_SECONDS": "60"}
VENDOR_ENV = {"ADMITFLOW_HTTP_TIMEOUT": "1", "PERSON_ACK_SMS": "true", "ADMITFLOW_PUBLIC_URL": PUBLIC_URL,
              "ESCALATION_INTERVAL_SECONDS": "1", "ADMITFLOW_RETRY_FIRST_SECONDS": "0.5", **PATIENT_SWEEP}


def lost_answers_env(lag: float) -> dict[str, str]:
    """The stack knows the search lag it runs against, as HUBSPOT_SEARCH_LAG_SECONDS says HubSpot's."""
    return {**VENDOR_ENV, "HUBSPOT_SEARCH_LAG_SECONDS": f"{lag:g}"}


def submit_all(stack: FaultStack, scale: Scale) -> None:
    """Every person submits once, at `scale.rate` a second."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for number in range(scale.submissions):
            time.sleep(max(0.0, started + number / scale.rate - time.monotonic()))
            pool.submit(stack.submit, number)


def lost_answers(lag: float, share: float = 0.35) -> Callable[[FaultStack, Scale], dict[str, int]]:
    """Every create may be stored and then lose its answer (held past our timeout, the connection reset, or a 5xx
    after the commit), with `share` the chance for each; HubSpot's search shows a new record `lag` s late."""

    def run(stack: FaultStack, scale: Scale) -> dict[str, int]:
        state, storm = stack.providers.state, stack.providers.storm
        state.search_lag, storm.hold_seconds = lag, HOLD_SECONDS
        storm.lost_answers = {HUBSPOT: share, TWILIO: share}
        stall = lag + 60  # a wait for the search index, or a backlog being worked through, is not a stall
        submit_all(stack, scale)
        stack.settle(scale.settle_seconds, stall_seconds=stall)
        late = sum(escalate_to(stack, step, scale.settle_seconds) for step in (1, 2))
        claimed = claim_and_bridge(stack)
        stack.settle(scale.settle_seconds, stall_seconds=stall)
        refused = len(state.refused)
        return {"answers lost": sum(storm.lost[kind] for kind in ("contacts", "notes", "tasks", "calls",
                                                                    "Messages", "Calls")),
                **{f"lost {how}": storm.lost[how] for how in ("held past the timeout", "connection reset",
                                                             "5xx after the commit")},
                "claims bridged": claimed, "escalation steps not taken in time": late,
                "HubSpot bodies refused by its models": refused}

    return run


def escalate_to(stack: FaultStack, step: int, timeout: float) -> int:
    """What minutes of nobody claiming would do: every unclaimed lead's escalation timer comes due, until each has
    taken step `step - 1` (0: the reminder call; 1: the supervisor's text and call). Returns how many timers had
    not taken it within `timeout` (a step that failed waits a minute before it is tried again)."""
    with stack.engine.begin() as connection:
        connection.execute(text("UPDATE escalation_timers SET due_at = now() WHERE state = 'pending' AND step < :step"),
                           {"step": step})

    def behind() -> int:
        with stack.engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM escalation_timers WHERE step < :step"),
                                          {"step": step}).scalar_one())

    try:
        wait_for(lambda: behind() == 0, timeout=timeout, what=f"every escalation timer to reach step {step}")
    except AssertionError:
        return behind()
    return 0


def _signed_post(stack: FaultStack, path_and_query: str, params: dict[str, str]) -> requests.Response:
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path_and_query, params)
    return requests.post(stack.web_url + path_and_query, data=params, timeout=30,
                         headers={"X-Twilio-Signature": signature})


def claim_and_bridge(stack: FaultStack) -> int:
    """The supervisor presses 1 on each lead's step-1 reminder call, which claims it and bridges the call to the
    person (who has a phone); Twilio reports the bridge completed. Returns how many bridges completed."""
    with stack.engine.connect() as connection:
        calls = connection.execute(text(
            "SELECT DISTINCT ON (lead_id) id, provider_id FROM staff_alerts WHERE channel = 'voice' AND "
            "staff_phone = :supervisor AND provider_id IS NOT NULL ORDER BY lead_id, id"),
            {"supervisor": SUPERVISOR}).all()

    def claim(alert_id: int, call_sid: str) -> int:
        pressed = _signed_post(stack, f"/hooks/twilio/voice/keypress?alert={alert_id}",
                               {"CallSid": call_sid, "Digits": "1", "From": CENTER, "To": SUPERVISOR})
        action = re.search(r'<Dial action="([^"]+)"', pressed.text)
        if action is None:
            return 0  # no phone to connect: the claim stands, nothing to log
        path = html.unescape(action.group(1)).removeprefix(PUBLIC_URL)
        ended = _signed_post(stack, path, {"CallSid": call_sid, "DialCallStatus": "completed",
                                           "DialCallDuration": "42", "DialCallSid": f"CA{alert_id:032d}"})
        return int(ended.status_code == 200)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(lambda row: claim(int(row[0]), str(row[1])), calls))


def desk_tally(stack: FaultStack) -> tuple[Counter[str], Counter[str]]:
    """Lost and doubled per lead beyond fault_stack's tally: acknowledgements, the supervisor's escalation text,
    reminder calls per step, and call logs."""
    with stack.engine.connect() as connection:
        refs = dict(connection.execute(text(
            "SELECT s.entry_id, l.ref FROM submissions s JOIN leads l ON l.id = s.lead_id")).all())
        alert_leads = dict(connection.execute(text(
            "SELECT a.id, l.ref FROM staff_alerts a JOIN leads l ON l.id = a.lead_id")).all())
    state = stack.providers.state
    with state.lock:
        texts, placed = list(state.sms), list(state.voice_calls)
        call_logs = Counter(record["properties"].get("hs_call_title", "") for record in state.call_logs.values())
    acks = Counter(sms["To"] for sms in texts if sms["To"] not in (ON_CALL, SUPERVISOR))
    escalations = Counter(match.group(0) for sms in texts if sms["To"] == SUPERVISOR
                          for match in [LEAD_REF.search(sms["Body"])] if match)
    rings: Counter[tuple[str, str]] = Counter()
    for call in placed:
        alert = re.search(r"alert=(\d+)", call.get("Url", ""))
        rings[(call["To"], alert_leads.get(int(alert.group(1)), "") if alert else "")] += 1
    lost: Counter[str] = Counter()
    doubled: Counter[str] = Counter()
    for entry_id, entry in stack.entries.items():
        ref = refs.get(entry_id, "")
        has_phone = not entry["2"]
        expected: dict[str, tuple[int, int]] = {
            "acknowledgements": (acks[contact_key(entry)] if has_phone else 0, int(has_phone)),
            "escalation texts": (escalations[ref], 1),
            "reminder calls, step 0": (rings[(ON_CALL, ref)], 1),
            "reminder calls, step 1": (rings[(SUPERVISOR, ref)], 1),
            "call logs": (call_logs[f"Callback {ref}"], int(has_phone)),
        }
        for kind, (count, wanted) in expected.items():
            lost[kind] += max(0, wanted - count)
            doubled[kind] += max(0, count - wanted)
    return +lost, +doubled


def crm_storm(batched: bool) -> Callable[[FaultStack, Scale], dict[str, int]]:
    """HubSpot answers a third of calls with a 429, a 502, or an answer held past our timeout after the write, in
    equal shares, and its search trails writes by 2 s. Nothing compressed: backoffs are waited out."""

    def run(stack: FaultStack, scale: Scale) -> dict[str, int]:
        state, storm = stack.providers.state, stack.providers.storm
        # 2/9 refused (429 or 502, half each), then 1/7 of the rest held after the work: a ninth each.
        state.failure_rate, state.retry_after, state.search_lag = 2 / 9, "0.2", 2.0
        storm.hold_seconds, storm.after_work = HOLD_SECONDS, {HUBSPOT: 1 / 7}
        started = time.time()
        submit_all(stack, scale)
        stack.settle(scale.settle_seconds, stall_seconds=scale.settle_seconds)
        with state.lock:
            arrivals = [record["_at"] for record in state.notes.values()]
            calls = sum(1 for call in state.calls if call.path.startswith(HUBSPOT))
        return {"HubSpot calls": calls, "answers held past the timeout": storm.held,
                "seconds to the last note": round(max(arrivals, default=started) - started)}

    return run


STORM_ENV = {"ADMITFLOW_HTTP_TIMEOUT": "1", "ADMITFLOW_RETRY_FIRST_SECONDS": "0.25", "HUBSPOT_SEARCH_LAG_SECONDS": "2",
             **PATIENT_SWEEP,
             # The production default; fault_stack's fast recovery shortens other waits, never this one.
             "ADMITFLOW_RETRY_MAX_SECONDS": "1800"}


def storm_env(batched: bool) -> dict[str, Any]:
    mode = {"HUBSPOT_CUSTOM_PROPERTIES": "true", "HUBSPOT_BATCH_SIZE": "100"} if batched else {}
    return {**STORM_ENV, **mode}
