"""The admissions team: who is on call (roster), the words they read and hear (templates), alerts, claims,
escalation, reminder calls and call-backs to the person, and the center's number as a door: inbound calls ring the
team and a missed one becomes a lead (phone_line), texts from the public become leads (inbound_texts).

`services` bundles what a workflow talks to (the CRM per site, the messenger, the roster and the templates),
built and validated once per process. Imports `trust/`, `leads/`, `intake/`, `store/`, `integrations/`, `config/`.
"""
