"""How much the evidence says two requests are one person: probabilistic record linkage (Fellegi-Sunter).

Each field of a request and a candidate lead is compared into an agreement level; each level carries a weight,
log2(m/u), where m is how often the level is seen when the two are one person and u when they are two people
who could be candidates for each other (they share a phone, an email or a device, so: relatives, housemates,
colleagues behind one office router). The weights add up to a score; a score of at least THRESHOLD (2^10, about
a thousand to one) is one person. The weights are set by hand from the reasoning beside each one, then checked
on the generated corpus (docs/architecture.md#dedup): none was fitted to it.

One rule stands outside the sum, because the fields it weighs are not independent: the household guard. A
couple, or a parent and child, share a phone, a last name, a device and often an inbox, so all of those agree at
once, and adding them up would outvote the one field that tells them apart. When the first names clearly differ
(not one name written twice: not a typo, a nickname, an initial, nor two names one letter apart), no evidence
merges them. Two real names one letter apart (Paul and Paula, or Michael and a slip to Micheal) are kept apart
too unless something personal agrees, the email: then they are weighed. A slip one letter from two such names
(Paull: Paul or Paula?) is kept apart when the inboxes differ: what a household shares (phone, last name, laptop,
the same evening) cannot say which relative wrote it, and adding those up would decide it anyway.

Levels and scores are not PHI: they are stored with each decision and shown by `admitflow leads why`.
"""

from __future__ import annotations

import enum
import importlib
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from nicknames import NickNamer
from rapidfuzz.distance import OSA, JaroWinkler

THRESHOLD = 10.0


class Field(enum.StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    LAST_NAME = "last_name"
    FIRST_NAME = "first_name"
    DEVICE = "device"
    TIME_GAP = "time_gap"


class Level(enum.StrEnum):
    """Agreement levels; a field uses the ones listed for it in WEIGHTS."""

    SAME = "same"
    ONLY_PHONE = "only_phone"  # the same phone, and one side is known by nothing else (a call or text to the line)
    ONE_OFF = "one_off"  # a phone one digit off, an address one character off: a typo, or a neighbour's
    PART = "part"  # one last name is part of the other (Garcia, Garcia Lopez)
    TYPO = "typo"  # one edit apart, and not two names (Sauah for Sarah)
    TYPO_BETWEEN_NAMES = "typo_between_names"  # a slip one edit from two names one edit apart (Paull: Paul, Paula)
    NICKNAME = "nickname"
    NICKNAME_TYPO = "nickname_typo"  # one edit from a nickname of the other (Jne: Jen, for Jennifer)
    INITIAL = "initial"
    NEAR = "near"  # two edits apart in a long name, Jaro-Winkler at least 0.9
    CLOSE_NAMES = "close_names"  # two real first names one letter apart (Paul, Paula; Michael, Micheal)
    TWO_NAMES = "two_names"  # two real first names further apart (Daniel, Danielle)
    DIFFERENT = "different"
    MISSING = "missing"  # one side does not say
    SOON = "soon"  # the same device within the correction window, the first name one person's: no slip between names
    SOON_OTHER_NAME = "soon_other_name"  # the same device within the window, the first name an initial or further
    WITHIN_HOUR = "within_hour"
    WITHIN_TWO_DAYS = "within_two_days"
    LATER = "later"


# log2(m/u). m and u are estimates per request pair, reasoned from how people fill in a form twice.
WEIGHTS: dict[Field, dict[Level, float]] = {
    Field.EMAIL: {
        Level.SAME: 8.5,  # m 0.8 (most give the address again); u 0.002 (a shared family inbox)
        Level.ONE_OFF: 0.0,  # m 0.02 (a mistyped address); u 0.02 (name.12@ and name.13@): no evidence either way
        Level.DIFFERENT: -3.0,  # m 0.12 (a second address); u ~1
        Level.MISSING: 0.0,
    },
    Field.PHONE: {
        Level.SAME: 7.5,  # m 0.9; u 0.005 (households share a phone more often than an inbox)
        # A call or text to the center's number carries only its caller ID: the number is all there is to weigh,
        # and whoever rang from it is called back on it. m 0.95; u 0.0005 (another of the household calling about
        # the same request, which staff want on the same lead anyway). Enough alone.
        Level.ONLY_PHONE: 10.5,
        Level.ONE_OFF: 0.0,  # m 0.02 (a mistyped digit); u 0.02 (consecutive numbers in one exchange)
        Level.DIFFERENT: -3.5,  # m 0.08 (a work and a mobile number); u ~1
        Level.MISSING: 0.0,
    },
    Field.LAST_NAME: {
        Level.SAME: 3.0,  # m 0.95; u 0.1 (candidates are often family)
        Level.TYPO: 1.5,  # m 0.03; u 0.01
        Level.PART: 1.5,  # m 0.03 (one or both surnames); u 0.01
        Level.DIFFERENT: -5.5,  # m 0.02 (a married name); u 0.9
        Level.MISSING: 0.0,
    },
    Field.FIRST_NAME: {
        Level.SAME: 4.0,  # m 0.85; u 0.05 (a Jr. and a Sr. on one phone)
        Level.TYPO: 3.5,  # m 0.08; u 0.007: a non-name one edit from a name is almost always that name mistyped
        # m 0.08; u 0.03: a slip between two names one letter apart, which relatives often bear (Eriac: Eric or
        # Erica?). With a shared phone and last name it joins unless the inbox differs (then the guard holds); it
        # is no device evidence (Paull, Paul's hand on the family laptop, beside Paula's correction minutes later).
        Level.TYPO_BETWEEN_NAMES: 1.5,
        Level.NICKNAME: 2.5,  # m 0.06; u 0.01
        Level.NICKNAME_TYPO: 1.5,  # m 0.01; u 0.004
        Level.INITIAL: 0.5,  # m 0.01; u 0.007 (J could be anyone in a house of Js)
        Level.NEAR: -1.0,  # m 0.01; u 0.02: two slips in one name, or two names; needs more than a phone
        # m 0.01 (a slip that lands on another name, or a second spelling); u 0.16 (Paul and Paula on one phone).
        # Guarded unless the email agrees.
        Level.CLOSE_NAMES: -4.0,
        Level.MISSING: 0.0,
        # TWO_NAMES and DIFFERENT: the household guard, outside the sum.
    },
    Field.DEVICE: {
        # m 0.1 (a correction minutes later from the same browser); u 0.0001 (a colleague behind the same office
        # router with the same browser build, within the same half hour). The name weighed is that of the requests
        # sent from the device, not the best of the lead's: a lead gathers names, and which it has gathered
        # depends on the order its requests arrived in.
        Level.SOON: 10.0,
        # m 0.01; u 0.005: an initial, two slips or a slip between two relatives' names on top of a correction,
        # or a relative on the family laptop
        Level.SOON_OTHER_NAME: 1.0,
        Level.MISSING: 0.0,  # no device evidence either way: people use several, and offices share one
    },
    Field.TIME_GAP: {
        Level.WITHIN_HOUR: 1.0,  # m 0.15 (a second try soon after); u 0.07 (a relative asking the same evening)
        Level.WITHIN_TWO_DAYS: 0.5,  # m 0.6; u 0.4
        Level.LATER: 0.0,
    },
}


@dataclass(frozen=True)
class Profile:
    """What is known of one side of a comparison: a request, or a lead built from several. PHI: never log."""

    first_names: tuple[str, ...]
    last_name: str | None
    phone: str | None
    email: str | None
    earliest: datetime
    latest: datetime

    @property
    def only_phone(self) -> bool:
        """Known by its phone alone: a call or text to the center's number, or a lead made only of those."""
        return bool(self.phone) and not self.first_names and not self.last_name and not self.email


@dataclass(frozen=True)
class Evidence:
    """The comparison of a request (or lead) with a candidate lead: levels, their score and the verdict."""

    levels: dict[Field, Level]
    score: float
    # The household guard, when it holds: TWO_NAMES or CLOSE_NAMES when two real first names differ (any pair of
    # the two sides' names), DIFFERENT when no name of one side is a spelling of a name of the other,
    # TYPO_BETWEEN_NAMES when the best is a slip between two names and the inboxes differ.
    guard: Level | None = None

    @property
    def guarded(self) -> bool:
        return self.guard is not None

    @property
    def same_person(self) -> bool:
        return not self.guarded and self.score >= THRESHOLD

    def record(self) -> dict[str, Any]:
        """The stored, PHI-free form."""
        levels = {str(name): str(level) for name, level in self.levels.items()}
        return {"score": round(self.score, 2), "levels": levels, "guard": str(self.guard) if self.guard else None}


def compare(a: Profile, b: Profile, *, same_device_soon: bool = False, device_names: tuple[str, ...] | None = None,
            context: tuple[str, ...] = ()) -> Evidence:
    """Weigh the evidence that `a` and `b` are one person. `same_device_soon`: some of `b`'s requests came from
    `a`'s device within the correction window; `device_names` are the first names those requests bore (all of
    `b`'s when not given). `context` names a third request's first name that may reconcile two names of theirs
    (Elizabeth, for a Liz and a Beth)."""
    pairs = {(x, y): first_name_level(x, y) for x in a.first_names or ("",) for y in b.first_names or ("",)}
    found = set(pairs.values())
    levels = {
        Field.EMAIL: contact_level(a.email, b.email),
        Field.PHONE: contact_level(a.phone, b.phone),
        Field.LAST_NAME: last_name_level(a.last_name, b.last_name),
        Field.FIRST_NAME: next(level for level in _FIRST_NAME_ORDER if level in found),
        Field.DEVICE: Level.MISSING,
        Field.TIME_GAP: time_gap_level(a, b),
    }
    if levels[Field.PHONE] == Level.SAME and (a.only_phone or b.only_phone):
        levels[Field.PHONE] = Level.ONLY_PHONE
    if same_device_soon:
        sent = b.first_names if device_names is None else device_names
        found_on_device = {first_name_level(x, y) for x in a.first_names or ("",) for y in sent or ("",)}
        named = bool(found_on_device & {Level.SAME, Level.NICKNAME, Level.TYPO, Level.NICKNAME_TYPO})
        levels[Field.DEVICE] = Level.SOON if named else Level.SOON_OTHER_NAME
    score = sum(WEIGHTS[name].get(level, 0.0) for name, level in levels.items())
    names = (*a.first_names, *b.first_names, *context)
    conflicts: set[Level] = {level for (x, y), level in pairs.items()
                 if (level == Level.TWO_NAMES or (level == Level.CLOSE_NAMES and levels[Field.EMAIL] != Level.SAME))
                 and not _reconciled(x, y, names, (a.first_names, b.first_names))}
    guard: Level | None = min(conflicts, key=_FIRST_NAME_ORDER.index) if conflicts else None
    if guard is None and levels[Field.FIRST_NAME] == Level.DIFFERENT:
        guard = Level.DIFFERENT
    slip_between = levels[Field.FIRST_NAME] == Level.TYPO_BETWEEN_NAMES
    if guard is None and slip_between and levels[Field.EMAIL] == Level.DIFFERENT:
        guard = Level.TYPO_BETWEEN_NAMES
    return Evidence(levels, score, guard)


def _reconciled(x: str, y: str, names: tuple[str, ...], sides: tuple[tuple[str, ...], ...]) -> bool:
    """Two real names are one person's when both are that person's name or a nickname of it (Liz and Beth, known
    along with Elizabeth), or when one side already holds both as one person's (Ana and Anna, joined on a shared
    inbox). Real names that differ otherwise keep two sides apart even when a misspelling links them (Ericc is
    one slip from both Eric and Erica)."""
    pair = {name_key(x), name_key(y)}
    if any(pair <= {name_key(name) for name in side} for side in sides):
        return True
    agreeing = (Level.SAME, Level.NICKNAME)
    return any(first_name_level(x, z) in agreeing and first_name_level(y, z) in agreeing
               for z in names if name_key(z) not in (name_key(x), name_key(y)))


def name_key(name: str | None) -> str:
    """Lower-case letters and digits only, accents removed: how two spellings of a name are compared."""
    if not name:
        return ""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())


def contact_level(a: str | None, b: str | None) -> Level:
    """Phones (E.164) and emails (normalized) are compared as written after normalizing."""
    if not a or not b:
        return Level.MISSING
    if a == b:
        return Level.SAME
    return Level.ONE_OFF if len(a) == len(b) and OSA.distance(a, b) <= 1 else Level.DIFFERENT


def last_name_level(a: str | None, b: str | None) -> Level:
    key_a, key_b = name_key(a), name_key(b)
    if not key_a or not key_b:
        return Level.MISSING
    if key_a == key_b:
        return Level.SAME
    if min(len(key_a), len(key_b)) >= 4 and OSA.distance(key_a, key_b) <= 1:
        return Level.TYPO
    if set(_words(a)) & set(_words(b)):
        return Level.PART
    return Level.DIFFERENT


def first_name_level(a: str | None, b: str | None) -> Level:
    key_a, key_b = name_key(a), name_key(b)
    if not key_a or not key_b:
        return Level.MISSING
    if key_a == key_b:
        return Level.SAME
    short, long = sorted((key_a, key_b), key=len)
    if len(short) == 1:
        return Level.INITIAL if long.startswith(short) else Level.DIFFERENT
    if nicknames_agree(key_a, key_b):
        return Level.NICKNAME
    distance = OSA.distance(key_a, key_b)
    known = known_first_names()
    if key_a in known and key_b in known:
        return Level.CLOSE_NAMES if distance <= 1 else Level.TWO_NAMES
    typed = key_b if key_a in known else key_a
    if distance <= 1:
        return Level.TYPO_BETWEEN_NAMES if _between_names(typed) else Level.TYPO
    if distance <= 2 and len(short) >= 5 and JaroWinkler.similarity(key_a, key_b) >= 0.9:
        # Two slips from this name, unless one slip from another (Julin: Julian, not Juliana).
        return Level.DIFFERENT if _names_one_edit_from(typed) else Level.NEAR
    if _typo_of_nickname(key_a, key_b) or _typo_of_nickname(key_b, key_a):
        return Level.NICKNAME_TYPO
    return Level.DIFFERENT


# Best first: the level a lead's several names reach is the best any of them reaches.
_FIRST_NAME_ORDER = (Level.SAME, Level.TYPO, Level.TYPO_BETWEEN_NAMES, Level.NICKNAME, Level.NICKNAME_TYPO,
                     Level.INITIAL, Level.NEAR, Level.MISSING, Level.CLOSE_NAMES, Level.TWO_NAMES, Level.DIFFERENT)


def time_gap_level(a: Profile, b: Profile) -> Level:
    """The gap between the nearest requests of the two sides."""
    gap = max(a.earliest - b.latest, b.earliest - a.latest, timedelta(0))
    if gap <= timedelta(hours=1):
        return Level.WITHIN_HOUR
    if gap <= timedelta(days=2):
        return Level.WITHIN_TWO_DAYS
    return Level.LATER


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    return NickNamer()


def nicknames_agree(a: str, b: str) -> bool:
    """One is a nickname of the other in the dataset (Bob, Robert). Two names that only shorten one longer name
    (Rosa and Linda, both from Rosalinda; Robert and William, both "Bill") are not one person's by themselves."""
    namer = _nicknamer()
    return b in namer.nicknames_of(a) or a in namer.nicknames_of(b)


@lru_cache(maxsize=4096)
def _names_one_edit_from(typed: str) -> frozenset[str]:
    """The real first names one slip from `typed`: a letter dropped, added, changed, or two swapped."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(typed[:at], typed[at:]) for at in range(len(typed) + 1)]
    edits = {head + tail[1:] for head, tail in splits if tail}
    edits |= {head + tail[1] + tail[0] + tail[2:] for head, tail in splits if len(tail) > 1}
    edits |= {head + letter + tail[1:] for head, tail in splits if tail for letter in letters}
    edits |= {head + letter + tail for head, tail in splits for letter in letters}
    return frozenset(edits & known_first_names())


@lru_cache(maxsize=4096)
def _between_names(typed: str) -> bool:
    """Is this slip one edit from two real names that are themselves one edit apart (Paull: Paul and Paula)?
    Then it may be either relative's, and the names of a household are often that close."""
    near = sorted(_names_one_edit_from(typed))
    return any(OSA.distance(x, y) <= 1 for at, x in enumerate(near) for y in near[at + 1:])


def _typo_of_nickname(typed: str, name: str) -> bool:
    namer = _nicknamer()
    return any(OSA.distance(typed, form) <= 1 for form in namer.nicknames_of(name) | namer.canonicals_of(name))


# Faker's given-name lists for the languages the center's callers write in: the common first names, so that
# Paula is known as a name in its own right and not as a typo of Paul.
_NAME_LOCALES = ("en", "en_US", "en_GB", "en_IN", "es_MX", "es_ES", "pt_BR", "fr_FR", "it_IT", "de_DE")


@lru_cache(maxsize=1)
def known_first_names() -> frozenset[str]:
    names: set[str] = set()
    for locale in _NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attribute in ("first_names_male", "first_names_female", "first_names"):
            listed = vars(provider).get(attribute, ())  # some locales derive `first_names` in a property
            names.update(name_key(name) for name in listed if isinstance(name, str))
    return frozenset(names)


def _words(name: str | None) -> list[str]:
    return [word for word in (name_key(part) for part in (name or "").replace("-", " ").split()) if len(word) > 1]


@dataclass
class Decision:
    """What dedup decided for one request, with the evidence for each candidate it weighed. PHI-free."""

    outcome: str = "new"  # new, joined, corrected (joined on device evidence with a new phone or email)
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def weigh(self, lead_ref: str, evidence: Evidence, verdict: str) -> None:
        self.candidates.append({"lead": lead_ref, **evidence.record(), "verdict": verdict})

    def record(self, lead_ref: str) -> dict[str, Any]:
        return {"v": 1, "threshold": THRESHOLD, "outcome": self.outcome, "lead": lead_ref,
                "candidates": self.candidates}
