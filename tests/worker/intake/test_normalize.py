from __future__ import annotations

import unicodedata

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.intake.normalize import MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, clean_text, normalize_email, normalize_phone

# deadline=None: the first phonenumbers call loads its metadata; database=None: nothing written to the tree.
PROPERTY = settings(max_examples=300, deadline=None, database=None)

FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
# Unicode's Bidi_Control characters: the marks and the embeddings, overrides and isolates ("Trojan Source").
BIDI_CONTROLS = ["\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
INVISIBLE = ZERO_WIDTH + BIDI_CONTROLS
# 555-0100 to 555-0199 are reserved for fiction in every NANP area code.
AREA_CODES = ["617", "212", "415", "312", "202", "718", "857"]


# --- phone numbers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "(617) 555-0142",
        "617.555.0142",
        "617-555-0142",
        "617 555 0142",
        "+1 617 555 0142",
        "+1-617-555-0142",
        "+1 (617) 555-0142",
        "1 (617) 555-0142",
        "1-617-555-0142",
        "16175550142",
        "6175550142",
        " 617 555 0142 ",
        "\t(617)555-0142\n",
        "617\u200b555\u200b0142",
        "\ufeff617-555-0142",
        "６１７５５５０１４２",
        "（６１７）５５５－０１４２",
        "Tel: 617-555-0142",
    ],
)
def test_it_gives_one_e164_for_every_way_of_writing_a_number(typed: str) -> None:
    assert normalize_phone(typed) == "+16175550142"


@st.composite
def written_nanp_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A fictional US number as a person might type it, and the E.164 it must become."""
    area = draw(st.sampled_from(AREA_CODES))
    line = f"{draw(st.integers(min_value=100, max_value=199)):04d}"
    separator = st.sampled_from(["", " ", "-", ".", " - ", "  "])
    prefix = draw(st.sampled_from(["", "1", "1 ", "1-", "+1", "+1 ", "+1-", "+1."]))
    area_part = f"({area})" if draw(st.booleans()) else area
    text = f"{prefix}{area_part}{draw(separator)}555{draw(separator)}{line}"
    if draw(st.booleans()):
        text = text.translate(FULLWIDTH)
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(st.sampled_from(ZERO_WIDTH)) + text[at:]
    padding = st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u3000"])
    return f"{draw(padding)}{text}{draw(padding)}", f"+1{area}555{line}"


@PROPERTY
@given(written_nanp_numbers())
def test_any_way_of_typing_a_valid_us_number_gives_its_e164(case: tuple[str, str]) -> None:
    typed, e164 = case
    assert normalize_phone(typed) == e164


@pytest.mark.parametrize(
    "typed",
    [
        None,
        "",
        "   ",
        "\u200b",
        "12",
        "555-0142",
        "617-555-014",
        "617-555-01422",
        "call me",
        "n/a",
        "no phone, email me",
        "555-555-0142",  # 555 is not an area code
        "(617) 055-0142",  # exchanges never start with 0
        "+0 617 555 0142",
    ],
)
def test_it_gives_none_for_what_is_not_a_valid_number(typed: str | None) -> None:
    assert normalize_phone(typed) is None


@pytest.mark.parametrize("typed", ["+1 900 555 0142", "1-900-555-0100", "(900) 555-0199"])
def test_it_refuses_premium_rate_numbers(typed: str) -> None:
    assert normalize_phone(typed) is None


def test_it_keeps_toll_free_numbers() -> None:
    assert normalize_phone("1-800-555-0142") == "+18005550142"


def test_the_default_region_decides_how_a_national_number_is_read() -> None:
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"
    assert normalize_phone("020 7946 0018", "US") is None
    assert normalize_phone("617-555-0142", "GB") is None


def test_a_number_with_its_country_code_is_read_the_same_in_any_region() -> None:
    assert normalize_phone("+1 617 555 0142", "GB") == "+16175550142"
    assert normalize_phone("+44 20 7946 0018", "US") == "+442079460018"


typed_phones = st.one_of(
    written_nanp_numbers().map(lambda case: case[0]),
    st.from_regex(r"\+?[0-9 ()\-.]{7,20}", fullmatch=True),
    st.text(max_size=60),
)


@PROPERTY
@given(typed_phones, st.sampled_from(["US", "GB", "CA"]))
def test_any_phone_it_returns_is_e164_and_reads_back_as_itself(typed: str, region: str) -> None:
    e164 = normalize_phone(typed, region)
    if e164 is not None:
        assert e164.startswith("+")
        assert e164[1:].isascii() and e164[1:].isdigit()
        assert normalize_phone(e164, "US") == e164


# --- email addresses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "jordan.sample@example.org",
        "Jordan.Sample@Example.org",
        "JORDAN.SAMPLE@EXAMPLE.ORG",
        "  jordan.sample@example.org \n",
        "jordan.\u200bsample@example.org\u200b",
        "\ufeffjordan.sample@example.org",
        "ｊｏｒｄａｎ.ｓａｍｐｌｅ＠ｅｘａｍｐｌｅ.ｏｒｇ",
    ],
)
def test_case_whitespace_and_invisible_characters_do_not_change_an_email(typed: str) -> None:
    assert normalize_email(typed) == "jordan.sample@example.org"


@pytest.mark.parametrize(
    "typed",
    [
        "jordansample@gmail.com",
        "Jordan.Sample@gmail.com",
        "j.o.r.d.a.n.s.a.m.p.l.e@gmail.com",
        "jordan.sample+admissions@gmail.com",
        "JordanSample+a+b@GMAIL.COM",
        "jordan.sample@googlemail.com",
        "Jordan.Sample+intake@GoogleMail.com",
    ],
)
def test_gmail_dots_tags_and_googlemail_all_reach_one_inbox(typed: str) -> None:
    assert normalize_email(typed) == "jordansample@gmail.com"


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("jordan.sample@example.org", "jordan.sample@example.org"),
        ("jordan.sample+intake@example.org", "jordan.sample+intake@example.org"),
        ("Jordan.Sample+Intake@Mail.Example.org", "jordan.sample+intake@mail.example.org"),
        ("jordan.sample@gmail.example.org", "jordan.sample@gmail.example.org"),
    ],
)
def test_other_providers_keep_dots_and_tags_because_they_may_matter_there(typed: str, normalized: str) -> None:
    assert normalize_email(typed) == normalized


@pytest.mark.parametrize(
    "typed",
    [
        None,
        "",
        "   ",
        "not-an-email",
        "jordan.sample",
        "@example.org",
        "jordan@",
        "jordan@@example.org",
        "jordan sample@example.org",
        "jordan..sample@example.org",
        "jordan@example",
        "jordan@example..org",
        "jordan@-example.org",
        "+admissions@gmail.com",  # Gmail drops the tag and leaves no mailbox
        "+@googlemail.com",
    ],
)
def test_it_gives_none_for_what_is_not_an_email(typed: str | None) -> None:
    assert normalize_email(typed) is None


@st.composite
def written_gmail_addresses(draw: st.DrawFn) -> tuple[str, str]:
    """One Gmail inbox written with random dots, case, +tag, domain and padding, and the address it must become."""
    mailbox = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=30))
    local = ""
    for index, char in enumerate(mailbox):
        if 0 < index and draw(st.booleans()):
            local += "."
        local += char.upper() if draw(st.booleans()) else char
    tag = draw(st.one_of(st.just(""), st.from_regex(r"\+[a-z0-9+]{0,10}", fullmatch=True)))
    domain = draw(st.sampled_from(["gmail.com", "googlemail.com", "GMail.com", "GOOGLEMAIL.COM"]))
    padding = st.sampled_from(["", " ", "\t", "\u200b", "\ufeff"])
    return f"{draw(padding)}{local}{tag}@{domain}{draw(padding)}", f"{mailbox}@gmail.com"


@PROPERTY
@given(written_gmail_addresses())
def test_any_way_of_writing_a_gmail_address_gives_one_address(case: tuple[str, str]) -> None:
    typed, normalized = case
    assert normalize_email(typed) == normalized


local_parts = st.text(alphabet="abcXYZ019.+-_'\u200b", max_size=12)
domains = st.sampled_from(["gmail.com", "googlemail.com", "example.org", "mail.example.org", "EXAMPLE.ORG", "x"])
typed_emails = st.one_of(st.builds("{}@{}".format, local_parts, domains), st.emails(), st.text(max_size=40))


@PROPERTY
@given(typed_emails)
def test_any_email_it_returns_is_a_valid_lower_case_address_that_normalizes_to_itself(typed: str) -> None:
    email = normalize_email(typed)
    if email is not None:
        assert email == email.lower()
        assert validate_email(email, check_deliverability=False).normalized.lower() == email
        assert normalize_email(email) == email


# --- free text -----------------------------------------------------------------------------------------------------


def test_clean_text_folds_compatibility_characters_with_nfkc() -> None:
    assert clean_text("Ｊｏｒｄａｎ") == "Jordan"
    assert clean_text("ﬁnn") == "finn"
    assert clean_text("Jose\u0301") == "Jos\u00e9"


@pytest.mark.parametrize("invisible", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_clean_text_removes_zero_width_and_bidi_control_characters(invisible: str) -> None:
    assert clean_text(f"Jor{invisible}dan") == "Jordan"
    assert clean_text(f"Jordan{invisible}", limit=MAX_MESSAGE_CHARS) == "Jordan"


def test_a_right_to_left_override_cannot_disguise_a_name() -> None:
    assert clean_text("Jordan \u202eelpmaS\u202c") == "Jordan elpmaS"


def test_an_invisible_character_between_a_letter_and_its_accent_does_not_stop_them_comparing_equal() -> None:
    assert clean_text("Jose\u200b\u0301") == clean_text("Jos\u00e9") == "Jos\u00e9"


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x80", "\x9b", "\x9d"])
def test_clean_text_replaces_control_characters_with_a_space(control: str) -> None:
    assert clean_text(f"Jordan{control}Sample") == "Jordan Sample"
    assert clean_text(f"Please call{control}after 5pm", limit=MAX_MESSAGE_CHARS) == "Please call after 5pm"


def test_a_name_has_its_whitespace_collapsed() -> None:
    assert clean_text("  Jordan \n\t  Sample\u00a0 ") == "Jordan Sample"


def test_a_message_keeps_its_line_breaks() -> None:
    message = "Please call me after 5pm.\n\nMy son is 17."
    assert clean_text(f"  {message}\n", limit=MAX_MESSAGE_CHARS) == message


def test_clean_text_cuts_to_the_limit() -> None:
    assert clean_text("x" * 1000) == "x" * MAX_FIELD_CHARS
    assert clean_text("x" * (MAX_MESSAGE_CHARS + 9), limit=MAX_MESSAGE_CHARS) == "x" * MAX_MESSAGE_CHARS
    assert clean_text("Jordan Sample", limit=3) == "Jor"


def test_a_cut_never_leaves_a_trailing_space() -> None:
    assert clean_text("Jordan Sample", limit=7) == "Jordan"


@pytest.mark.parametrize("typed", [None, "", "   ", "\u200b\u200d", "\x00\x01", "\u202e"])
def test_clean_text_gives_none_when_nothing_visible_is_left(typed: str | None) -> None:
    assert clean_text(typed) is None
    assert clean_text(typed, limit=MAX_MESSAGE_CHARS) is None


@PROPERTY
@given(st.text(max_size=300), st.sampled_from([5, 40, MAX_FIELD_CHARS, 254, MAX_MESSAGE_CHARS]))
def test_clean_text_output_is_short_visible_and_stable(typed: str, limit: int) -> None:
    text = clean_text(typed, limit=limit)
    if text is None:
        return
    assert 0 < len(text) <= limit
    assert text == text.strip()
    assert unicodedata.is_normalized("NFKC", text)
    assert not any(char in text for char in INVISIBLE)
    allowed_controls = "\t\n\r" if limit > MAX_FIELD_CHARS else ""
    assert all(unicodedata.category(char) != "Cc" or char in allowed_controls for char in text)
    if limit <= MAX_FIELD_CHARS:
        assert "  " not in text
    assert clean_text(text, limit=limit) == text


@pytest.mark.parametrize("typed", ["+52 1 55 5555 0123", "+521 55 5555 0123", "+52 (1) 55-5555-0123",
                                   "+52 55 5555 0123"])
def test_an_old_format_mexican_mobile_with_a_1_after_52_is_read_as_today(typed: str) -> None:
    # Mexico dropped the mobile "1" in 2019 and libphonenumber no longer accepts it; people still type it.
    assert normalize_phone(typed) == "+525555550123"


def test_a_local_number_of_another_country_is_not_read_in_the_default_region_and_looks_like_a_phone() -> None:
    from worker.intake.normalize import looks_like_a_phone

    assert normalize_phone("020 7946 0018", "US") is None
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"
    assert looks_like_a_phone("020 7946 0018")
    assert not looks_like_a_phone("n/a") and not looks_like_a_phone("ext 12")
