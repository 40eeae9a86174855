"""A stored entry becoming a lead: processing a page of submissions, dedup, the best time to call, export.

Imports `intake/`, `store/`, `integrations/` and `config/`.
"""
