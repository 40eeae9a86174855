"""The admissions domain: submissions, leads, dedup, outbox, CRM sync and staff alerts."""
