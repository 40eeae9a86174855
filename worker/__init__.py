"""admitflow's worker: a submission's way from the website to a callback, one room per part of the admissions desk.

Doors (they take requests in and call the rooms; nothing imports a door but another door):
    web/    the HTTP door: Gravity Forms webhooks, Twilio's webhooks, health, metrics, the status page
    cli/    the terminal door: the `admitflow` command
    tasks   the broker's door: thin Celery tasks that take ids and call one workflow function

Rooms, lowest first; a room imports only rooms below it, then `integrations/` and `config/`:
    store/     engine and sessions, the typed models, PHI encryption at rest, the schema and its migrations
    intake/    every entry stored once (webhook, poll, backfill, file), webhook signatures, screening, normalizing
    leads/     a stored entry becomes a lead: processing, dedup, the best time to call, export
    trust/     the audit trail, retention purges and key rotation
    staff/     the admissions team: roster, alert words, alerts, claims, escalation, reminder calls, call-backs,
               and the CRM and messenger a workflow is handed (services)
    delivery/  the outbox: CRM sync and staff alerts delivered at least once, handed to the broker, swept
    ops/       what managers and operators read: metrics, speed-to-lead reports, the status page, and whether the
               stack can run: start-up checks and /healthz, heartbeats, refused webhooks, `admitflow doctor`

tests/test_architecture.py holds these rules.
"""
