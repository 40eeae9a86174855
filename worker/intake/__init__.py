"""Entries coming in: each stored once, durably, whichever door it came through (webhook, poll, backfill, file).

Also the webhook's signature check, spam screening and the normalizers that make one person's phone and email
compare equal. Imports `store/`, `integrations/` and `config/`.
"""
