"""The outbox: every CRM sync and staff alert delivered at least once, retried with backoff, swept when lost, and
handed to the broker (or run inline on the embedded default) only after its rows are committed.

Imports `staff/` and every room below it.
"""
