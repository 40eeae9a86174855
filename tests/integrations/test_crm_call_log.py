"""A bridged call that reached the person is logged in the CRM and closes the callback task."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import responses

from integrations.crm import CallRecord
from integrations.hubspot.client import HubSpotCRM
from integrations.salesforce.auth import ClientCredentialsFlow
from integrations.salesforce.client import SalesforceCRM
from tests.integrations.test_salesforce import CLIENT_ID, CLIENT_SECRET, DATA, LOGIN, TOKEN_URL, token_answer

CALL = CallRecord("R-7K2QX", datetime(2026, 11, 20, 22, 5, tzinfo=UTC), 95, "1002")
HUBSPOT = "https://api.hubapi.com"


@responses.activate
def test_hubspot_gets_a_completed_outbound_call_on_the_contact_and_the_task_is_completed() -> None:
    created = responses.post(f"{HUBSPOT}/crm/v3/objects/calls", json={"id": "901", "properties": {}}, status=201)
    completed = responses.patch(f"{HUBSPOT}/crm/v3/objects/tasks/701", json={"id": "701", "properties": {}})

    crm = HubSpotCRM("pat-test-token")
    call_id = crm.log_call("501", CALL)
    crm.complete_callback_task("701")

    assert call_id == "901"
    body = json.loads(created.calls[0].request.body or b"{}")
    assert body["properties"] == {
        "hs_timestamp": "2026-11-20T22:05:00.000Z",
        "hs_call_title": "Callback R-7K2QX",
        "hs_call_direction": "OUTBOUND",
        "hs_call_status": "COMPLETED",
        "hs_call_body": "Bridged by admitflow from the center's number (lead R-7K2QX).",
        "hs_call_duration": "95000",
        "hubspot_owner_id": "1002",
    }
    assert body["associations"] == [{"to": {"id": "501"}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]
    assert json.loads(completed.calls[0].request.body or b"{}") == {"properties": {"hs_task_status": "COMPLETED"}}


@responses.activate
def test_salesforce_gets_a_completed_call_task_on_the_lead_and_the_callback_task_is_completed() -> None:
    responses.post(TOKEN_URL, json=token_answer())
    created = responses.patch(f"{DATA}/sobjects/Task/Admitflow_Key__c/admitflow-call-R-7K2QX", status=201,
                              json={"id": "00T5e00000Call01AAA", "success": True, "created": True, "errors": []})
    completed = responses.patch(f"{DATA}/sobjects/Task/00T5e00000Task01AAA", status=204)
    crm = SalesforceCRM(ClientCredentialsFlow(LOGIN, CLIENT_ID, CLIENT_SECRET),
                        center_timezone=ZoneInfo("America/Los_Angeles"))

    call_id = crm.log_call("00Q5e00000Lead01AAA", CALL)
    crm.complete_callback_task("00T5e00000Task01AAA")

    assert call_id == "00T5e00000Call01AAA"
    assert json.loads(created.calls[0].request.body or b"{}") == {
        "Subject": "Call R-7K2QX", "TaskSubtype": "Call", "CallType": "Outbound", "Status": "Completed",
        "WhoId": "00Q5e00000Lead01AAA", "ActivityDate": "2026-11-20", "CallDurationInSeconds": 95,
        "OwnerId": "1002", "Description": "Bridged by admitflow from the center's number (lead R-7K2QX).",
    }
    assert json.loads(completed.calls[0].request.body or b"{}") == {"Status": "Completed"}


@responses.activate
def test_a_hubspot_call_log_whose_answer_was_lost_is_found_by_its_title_and_read_back_instead_of_logged_again() -> None:
    search = responses.post(f"{HUBSPOT}/crm/v3/objects/calls/search", json={"total": 1, "results": [
        {"id": "901", "properties": {"hs_call_title": "Callback R-7K2QX"}}]})
    responses.post(f"{HUBSPOT}/crm/v3/objects/calls/batch/read", json={"status": "COMPLETE", "results": [
        {"id": "901", "properties": {"hs_call_title": "Callback R-7K2QX"}}]})

    assert HubSpotCRM("pat-test-token").log_call("501", CALL, look_first=True) == "901"
    sent = json.loads(search.calls[0].request.body or b"{}")
    assert sent["filterGroups"] == [{"filters": [
        {"propertyName": "hs_call_title", "operator": "EQ", "value": "Callback R-7K2QX"},
        {"propertyName": "associations.contact", "operator": "EQ", "value": "501"}]}]
    assert [call.request.url.rsplit("/", 2)[-2:] for call in responses.calls] == [
        ["calls", "search"], ["batch", "read"]], "nothing created"
