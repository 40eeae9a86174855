"""Keeping faith with the people whose data this is: the audit trail, retention purges, key rotation.

Imports `leads/`, `intake/`, `store/` and `config/`.
"""
