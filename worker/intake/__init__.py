"""Entries coming in: each stored once, durably, whichever door it came through (webhook, poll, backfill, file, or
a call or text to the center's number, keyed by Twilio's id: phone_entries).

Also the webhook's signature check, spam screening and the normalizers that make one person's phone and email
compare equal. Imports `store/`, `integrations/` and `config/`.
"""
