"""Screening submissions that are probably not a person asking for help.

A screened submission is kept and flagged, never dropped: an operator reviews it and can release it
(`admitflow submissions release`). Rules are deliberately narrow: a real person wrongly held back is worse
than a bot let through.
"""

from __future__ import annotations

import re

from integrations.gravityforms.mapping import ApplicantFields

_LINK = re.compile(r"(https?://|www\.|\b[a-z0-9-]+\.(com|net|org|ru|cn|xyz|top|info|biz|io)\b)", re.IGNORECASE)
_MARKUP = re.compile(r"[<>{}\[\]]|&#?\w+;")
_ASCII_LETTERS = re.compile(r"^[A-Za-z]+$")
_VOWELS = re.compile(r"[aeiouy]", re.IGNORECASE)
MAX_LINKS_IN_MESSAGE = 3


def _gibberish(name: str) -> bool:
    """A long Latin-letter name with no vowel at all, or digits in a name. Non-Latin names are never judged."""
    if any(ch.isdigit() for ch in name):
        return True
    return any(
        len(part) >= 6 and _ASCII_LETTERS.match(part) is not None and _VOWELS.search(part) is None
        for part in name.split()
    )


def screen(fields: ApplicantFields) -> str | None:
    """A short reason code when the submission looks automated or junk, else None. The code holds no PHI."""
    if fields.honeypot:
        return "honeypot"
    names = [name for name in (fields.first_name, fields.last_name) if name]
    if any(_LINK.search(name) for name in names):
        return "link_in_name"
    if any(_MARKUP.search(name) for name in names):
        return "markup_in_name"
    if any(_gibberish(name) for name in names):
        return "gibberish_name"
    if fields.message and len(_LINK.findall(fields.message)) >= MAX_LINKS_IN_MESSAGE:
        return "links_in_message"
    return None
