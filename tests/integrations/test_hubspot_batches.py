"""HubSpot's batch endpoints: many leads in a few calls, each result matched back to its lead, and every failure
shape (207 partial, 400, 401, 409, 429 with Retry-After, 5xx) turned into the error the worker acts on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import responses
from responses import matchers

from integrations.crm import CallbackTaskSpec, LookupFailed, NoteSpec
from integrations.errors import Conflict, InvalidRequest, RateLimited, ServiceUnavailable, Unauthorized
from integrations.hubspot.client import HubSpotCRM
from tests.integrations.test_hubspot import (
    AUTHORIZED,
    CONTACTS,
    NOTES,
    TASKS,
    TOKEN,
    assert_phi_free,
    card,
    hubspot_error,
)
from worker.store.unanswered import refused_before_writing

NEW_LEAD = {"hs_lead_status": "NEW", "lifecyclestage": "lead"}
AT = datetime(2025, 3, 4, 15, 30, tzinfo=UTC)


@pytest.fixture
def hubspot() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def crm() -> HubSpotCRM:
    return HubSpotCRM(TOKEN, custom_properties=True)


def person(n: int, *, email: bool = True, phone: bool = True) -> Any:
    return card(lead_ref=f"L-{n:03d}", first_name=f"Canary{n}", last_name="Testperson",
                email=f"person{n}@example.org" if email else None,
                phone=f"+1617555{n:04d}" if phone else None)


def ours(n: int) -> dict[str, str]:
    return {"admitflow_lead_ref": f"L-{n:03d}", "admitflow_source_form": "main/form 3", "admitflow_repeat_count": "0"}


def contact_properties(n: int, *, email: bool = True, phone: bool = True) -> dict[str, str]:
    values = {"firstname": f"Canary{n}", "lastname": "Testperson"}
    if email:
        values["email"] = f"person{n}@example.org"
    if phone:
        values["phone"] = f"+1617555{n:04d}"
    return values | ours(n)


def traces(*expected: str) -> Any:
    """A matcher: the batch's inputs carry exactly these trace ids, in order."""
    def match(request: Any) -> tuple[bool, str]:
        sent = [item.get("objectWriteTraceId") for item in json.loads(request.body)["inputs"]]
        return sent == list(expected), f"trace ids {sent} != {list(expected)}"
    return match


def batch_answer(*results: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"status": "COMPLETE", "results": list(results), "startedAt": "2025-03-04T15:30:00Z",
                              "completedAt": "2025-03-04T15:30:01Z"}
    if errors:
        answer |= {"errors": errors, "numErrors": len(errors)}
    return answer


def test_the_contacts_of_many_leads_take_one_read_one_search_one_update_and_one_upsert(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    # 1 known contact, 2 and 3 by email (2 already in HubSpot), 4 by phone only (in HubSpot), 5 phone only (new).
    read = {"idProperty": "email", "properties": ["email"],
            "inputs": [{"id": "person2@example.org"}, {"id": "person3@example.org"}]}
    hubspot.post(f"{CONTACTS}/batch/read", status=207, match=[AUTHORIZED, matchers.json_params_matcher(read)],
                 json=batch_answer({"id": "702", "properties": {"email": "person2@example.org"}},
                                   errors=[{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "x"}]))
    phones = ["+16175550004", "+16175550005"]
    search = {"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "IN", "values": phones}]},
                               {"filters": [{"propertyName": "mobilephone", "operator": "IN", "values": phones}]}],
              "properties": ["phone", "mobilephone"], "limit": 100}
    hubspot.post(f"{CONTACTS}/search", match=[AUTHORIZED, matchers.json_params_matcher(search)],
                 json={"total": 1, "results": [{"id": "704", "properties": {"mobilephone": "+16175550004"}}]})
    update = {"inputs": [
        {"id": "701", "properties": contact_properties(1), "objectWriteTraceId": "L-001"},
        {"id": "702", "properties": contact_properties(2), "objectWriteTraceId": "L-002"},
        {"id": "704", "properties": contact_properties(4, email=False), "objectWriteTraceId": "L-004"},
    ]}
    hubspot.post(f"{CONTACTS}/batch/update", match=[AUTHORIZED, matchers.json_params_matcher(update)],
                 json=batch_answer({"id": "704", "objectWriteTraceId": "L-004"}, {"id": "701"}, {"id": "702"}))
    upsert = {"inputs": [
        {"id": ref, "idProperty": "admitflow_lead_ref", "properties": properties | NEW_LEAD, "objectWriteTraceId": ref}
        for ref, properties in [("L-003", contact_properties(3)), ("L-005", contact_properties(5, email=False))]
    ]}
    hubspot.post(f"{CONTACTS}/batch/upsert", match=[AUTHORIZED, matchers.json_params_matcher(upsert)],
                 json=batch_answer({"id": "705", "new": True, "properties": {"admitflow_lead_ref": "L-005"}},
                                   {"id": "703", "new": True, "objectWriteTraceId": "L-003"}))

    result = crm.upsert_contacts([(person(1), "701"), (person(2), None), (person(3), None),
                                  (person(4, email=False), None), (person(5, email=False), None)])

    assert result.ids == {"L-001": "701", "L-002": "702", "L-003": "703", "L-004": "704", "L-005": "705"}
    assert result.errors == {}


def test_a_lead_left_out_of_a_207_answer_is_retried_and_one_refused_for_its_data_is_marked_invalid(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    hubspot.post(f"{CONTACTS}/batch/update", status=207,
                 json=batch_answer({"id": "701", "objectWriteTraceId": "L-001"},
                                   errors=[{"status": "error", "category": "INTERNAL_ERROR", "message": "x"}]))
    hubspot.post(f"{CONTACTS}/batch/update", status=207,
                 json=batch_answer({"id": "701", "objectWriteTraceId": "L-001"},
                                   errors=[{"status": "error", "category": "VALIDATION_ERROR",
                                            "message": "Property values were not valid: person2@example.org"}]))

    first = crm.upsert_contacts([(person(1), "701"), (person(2), "702")])
    second = crm.upsert_contacts([(person(1), "701"), (person(2), "702")])

    assert first.ids == {"L-001": "701"} and isinstance(first.errors["L-002"], ServiceUnavailable)
    assert not first.errors["L-002"].permanent
    assert isinstance(second.errors["L-002"], InvalidRequest)
    assert "VALIDATION_ERROR" in second.errors["L-002"].message
    assert_phi_free(second.errors["L-002"])


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (400, hubspot_error("VALIDATION_ERROR", "Property values were not valid"), {}, InvalidRequest),
        (401, hubspot_error("INVALID_AUTHENTICATION", "expired"), {}, Unauthorized),
        (409, hubspot_error("CONFLICT", "Contact already exists. Existing ID: 9001"), {}, Conflict),
        (429, hubspot_error("RATE_LIMITS", "You have reached your ten_secondly_rolling limit."),
         {"Retry-After": "7"}, RateLimited),
        (502, {"status": "error", "message": "Bad gateway"}, {}, ServiceUnavailable),
    ],
    ids=["400", "401", "409", "429", "502"],
)
def test_a_failed_batch_call_raises_the_error_the_worker_acts_on_without_phi(
    hubspot: responses.RequestsMock, crm: HubSpotCRM, status: int, body: dict[str, Any], headers: dict[str, str],
    expected: type[Exception],
) -> None:
    hubspot.post(f"{CONTACTS}/batch/upsert", status=status, json=body, headers=headers)

    with pytest.raises(expected) as raised:
        crm.upsert_contacts([(person(1, email=False, phone=False), None)])

    assert_phi_free(raised.value)
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == 7


def note(n: int, contact_id: str) -> NoteSpec:
    header = f"Website request L-{n:03d} (form 3, entry {n}):"
    return NoteSpec(f"note-{n}", contact_id, f"{header}\n\nPlease call <after> 5 & soon", AT, header)


def test_notes_are_created_in_one_call_with_their_contact_association(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    association = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]
    body = {"inputs": [
        {"properties": {"hs_note_body": f"Website request L-00{n} (form 3, entry {n}):<br><br>Please call "
                                        "&lt;after&gt; 5 &amp; soon",
                        "hs_timestamp": "2025-03-04T15:30:00.000Z"},
         "associations": [{"to": {"id": f"70{n}"}, "types": association}],
         "objectWriteTraceId": f"note-{n}"}
        for n in (1, 2)
    ]}
    # The second result carries no trace id: it is matched by the request header in its body.
    hubspot.post(f"{NOTES}/batch/create", status=201, match=[AUTHORIZED, matchers.json_params_matcher(body)],
                 json=batch_answer({"id": "801", "objectWriteTraceId": "note-1"},
                                   {"id": "802", "properties": {"hs_note_body": body["inputs"][1]["properties"]
                                                                ["hs_note_body"]}}))

    result = crm.add_notes([note(1, "701"), note(2, "702")])

    assert result.ids == {"note-1": "801", "note-2": "802"}


def test_a_note_an_unanswered_attempt_made_is_found_on_its_contact_and_not_created_again(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    search = {"filterGroups": [{"filters": [{"propertyName": "associations.contact", "operator": "EQ",
                                             "value": "701"}]}],
              "properties": ["hs_note_body"], "limit": 100}
    hubspot.post(f"{NOTES}/search", match=[matchers.json_params_matcher(search)], json={"total": 2, "results": [
        {"id": "800", "properties": {"hs_note_body": "A note admissions wrote"}},
        {"id": "801", "properties": {"hs_note_body": "Website request L-001 (form 3, entry 1):<br><br>..."}},
    ]})
    read = {"properties": ["hs_note_body"], "propertiesWithHistory": [], "inputs": [{"id": "801"}]}
    hubspot.post(f"{NOTES}/batch/read", match=[matchers.json_params_matcher(read)], json=batch_answer(
        {"id": "801", "properties": {"hs_note_body": "Website request L-001 (form 3, entry 1):<br><br>..."}}))
    hubspot.post(f"{NOTES}/batch/create", status=201, match=[traces("note-2")],
                 json=batch_answer({"id": "802", "objectWriteTraceId": "note-2"}))

    result = crm.add_notes([note(1, "701"), note(2, "702")], look_first={"note-1"})

    assert result.ids == {"note-1": "801", "note-2": "802"}


def task(n: int) -> CallbackTaskSpec:
    return CallbackTaskSpec(f"L-{n:03d}", f"Callback L-{n:03d}", "Confidential callback requested", "4242", AT)


def test_tasks_are_created_in_one_call_and_searched_for_only_when_in_doubt(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    search = {"filterGroups": [{"filters": [{"propertyName": "hs_task_subject", "operator": "IN",
                                             "values": ["Callback L-001"]}]}],
              "properties": ["hs_task_subject"], "limit": 100}
    hubspot.post(f"{TASKS}/search", match=[matchers.json_params_matcher(search)],
                 json={"total": 1, "results": [{"id": "901", "properties": {"hs_task_subject": "Callback L-001"}}]})
    hubspot.post(f"{TASKS}/batch/read", json=batch_answer(
        {"id": "901", "properties": {"hs_task_subject": "Callback L-001"}}))
    association = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]
    create = {"inputs": [{
        "properties": {"hs_task_subject": "Callback L-002", "hs_task_body": "Confidential callback requested",
                       "hs_timestamp": "2025-03-04T15:30:00.000Z", "hs_task_status": "NOT_STARTED",
                       "hs_task_priority": "HIGH", "hs_task_type": "CALL", "hubspot_owner_id": "4242"},
        "associations": [{"to": {"id": "702"}, "types": association}],
        "objectWriteTraceId": "L-002",
    }]}
    hubspot.post(f"{TASKS}/batch/create", status=201, match=[matchers.json_params_matcher(create)],
                 json=batch_answer({"id": "902", "properties": {"hs_task_subject": "Callback L-002"}}))

    result = crm.ensure_callback_tasks([("701", task(1)), ("702", task(2))], look_first={"L-001"})

    assert result.ids == {"L-001": "901", "L-002": "902"}


def test_a_client_without_the_lead_reference_property_does_not_batch() -> None:
    assert HubSpotCRM(TOKEN).batch_size == 0
    assert HubSpotCRM(TOKEN, custom_properties=True).batch_size == 100
    assert HubSpotCRM(TOKEN, custom_properties=True, batch_size=500).batch_size == 100


def test_one_note_sent_again_after_a_lost_answer_is_found_by_its_first_line(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    found = {"id": "801", "properties": {"hs_note_body": "Website request L-001 (form 3, entry 1):<br><br>..."}}
    hubspot.post(f"{NOTES}/search", json={"total": 1, "results": [found]})
    hubspot.post(f"{NOTES}/batch/read", json=batch_answer(found))

    text = "Website request L-001 (form 3, entry 1):\n\nPlease call"
    assert crm.add_note("701", text, AT, look_first=True) == "801"
    assert [call.request.url for call in hubspot.calls] == [f"{NOTES}/search", f"{NOTES}/batch/read"], "no note created"


def test_a_note_the_search_index_still_shows_but_reading_it_back_does_not_is_created_again(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    found = {"id": "801", "properties": {"hs_note_body": "Website request L-001 (form 3, entry 1):<br><br>..."}}
    hubspot.post(f"{NOTES}/search", json={"total": 1, "results": [found]})
    hubspot.post(f"{NOTES}/batch/read", status=207, json={"status": "COMPLETE", "results": [], "errors": [
        {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"}]})
    hubspot.post(NOTES, status=201, json={"id": "805", "properties": {}})

    text = "Website request L-001 (form 3, entry 1):\n\nPlease call"
    assert crm.add_note("701", text, AT, look_first=True) == "805"


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [(429, {"Retry-After": "1"}, RateLimited), (502, {}, LookupFailed)],
    ids=["throttled: still a rate limit, its Retry-After obeyed", "failed"],
)
def test_a_look_for_earlier_notes_that_fails_holds_back_only_its_own_notes(
    hubspot: responses.RequestsMock, crm: HubSpotCRM, status: int, headers: dict[str, str],
    expected: type[Exception],
) -> None:
    doubtful = [note(n, f"70{n}") for n in range(1, 7)]  # two searches: five contacts, then one
    hubspot.post(f"{NOTES}/search", status=status, headers=headers, json={"category": "RATE_LIMITS"})
    hubspot.post(f"{NOTES}/search", json={"total": 0, "results": []})
    hubspot.post(f"{NOTES}/batch/create", status=201, match=[traces("note-6")],
                 json=batch_answer({"id": "806", "objectWriteTraceId": "note-6"}))

    result = crm.add_notes(doubtful, look_first={item.key for item in doubtful})

    assert result.ids == {"note-6": "806"} and result.absent == {"note-6"}
    assert set(result.errors) == {f"note-{n}" for n in range(1, 6)}
    assert all(type(error) is expected for error in result.errors.values())
    assert all(refused_before_writing(error) for error in result.errors.values()), "nothing created for them"


def test_a_contact_look_or_write_that_fails_holds_back_only_its_own_leads(
    hubspot: responses.RequestsMock, crm: HubSpotCRM
) -> None:
    # 1 and 2 by email (2 already in HubSpot, whose update fails), 3 by phone only (the search fails).
    hubspot.post(f"{CONTACTS}/batch/read", status=207,
                 json=batch_answer({"id": "702", "properties": {"email": "person2@example.org"}},
                                   errors=[{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "x"}]))
    hubspot.post(f"{CONTACTS}/search", status=502, json={"status": "error", "message": "Bad gateway"})
    hubspot.post(f"{CONTACTS}/batch/update", status=502, json={"status": "error", "message": "Bad gateway"})
    hubspot.post(f"{CONTACTS}/batch/upsert", match=[traces("L-001")],
                 json=batch_answer({"id": "701", "new": True, "objectWriteTraceId": "L-001"}))

    result = crm.upsert_contacts([(person(1), None), (person(2), None), (person(3, email=False), None)])

    assert result.ids == {"L-001": "701"}
    assert set(result.errors) == {"L-002", "L-003"}
    assert all(isinstance(error, ServiceUnavailable) for error in result.errors.values())
    assert result.found == {"L-002": "702"}, "the contact found is kept, so the retry need not look again"
    for error in result.errors.values():
        assert_phi_free(error)
