"""The PII detectors and the content filter behind the `pii-detector` and `content-filter`
policy steps: what they catch in ordinary sentences, what they must leave alone, and the
exact redacted text."""

from __future__ import annotations

import base64
import itertools
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.content_filter import (
    MAX_DENY_WORDS,
    MAX_ENTRY_CHARS,
    MAX_PATTERNS,
    ContentFilter,
    compile_content_filter,
)
from gateway.policy.detectors import (
    PII_KINDS,
    Finding,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
)

# Credentials are assembled from pieces so that no scanner mistakes this file for a leak.
OPENAI_KEY = "sk-" + "proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6h"
OPENAI_LEGACY_KEY = "sk-" + "T3BlbkFJ" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0"
ANTHROPIC_KEY = "sk-" + "ant-api03-" + "x9Y8w7V6u5T4s3R2q1P0o9N8m7L6k5J4i3H2g1F0e9D8c7B6a5Z4-AbCdEf"
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp" + "_" + "0123456789abcdefghijABCDEFGHIJ012345"
GITHUB_OAUTH = "gho" + "_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "github_pat" + "_11ABCDEFG0123456789_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
SLACK_TOKEN = "xoxb" + "-1234567890-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE_KEY = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
STRIPE_KEY = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_RESTRICTED = "rk_" + "live_" + "51H8x2pLkM3nQ4rS5tU6vW7x"
GATEWAY_KEY = "gk_" + "Zr2xVb9Qm4Lt7Hs1Kd8Pw3Nc6Yf0Ju5Ae2Ri9Go4Tk7"
JWT = (
    "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0In0" + ".dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
PEM = (
    "-----BEGIN " + "RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END " + "RSA PRIVATE KEY-----"
)


def found(text: str, kinds: frozenset[str] = PII_KINDS) -> list[tuple[str, str]]:
    """(kind, the text it covers) for each finding, in order."""
    return [(f.kind, text[f.start : f.end]) for f in find_pii(text, kinds)]


# --- each kind, in a sentence -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "item"),
    [
        ("Write to jane.doe@example.com about the renewal.", "jane.doe@example.com"),
        (
            "CC first.last+billing@mail.example.co.uk, thanks",
            "first.last+billing@mail.example.co.uk",
        ),
        ("mailto:ops_team@corp-mail.io", "ops_team@corp-mail.io"),
        ("<a.b@x.org>", "a.b@x.org"),
        ("Reach me at dana99@example.org.", "dana99@example.org"),
    ],
)
def test_email_addresses_are_found(sentence: str, item: str) -> None:
    assert found(sentence) == [("email", item)]


@pytest.mark.parametrize(
    "sentence",
    [
        "ping a@b when ready",
        "the @handle on the forum",
        "user@localhost is a local account",
        "foo@bar.c has a one-letter top level",
        "price: 3 @ $4.50",
        "x" * 70 + "@example.com is longer than any mailbox name may be",
    ],
)
def test_address_like_text_without_a_real_domain_is_not_an_email(sentence: str) -> None:
    assert found(sentence) == []


@pytest.mark.parametrize(
    ("sentence", "item"),
    [
        ("Call the London office on +44 20 7946 0958 after nine.", "+44 20 7946 0958"),
        ("Her mobile is +14155550123.", "+14155550123"),
        ("Front desk: (415) 555-0123.", "(415) 555-0123"),
        ("Fax 415-555-0123 today", "415-555-0123"),
        ("or text 415.555.0123", "415.555.0123"),
        ("or 415 555 0123", "415 555 0123"),
        ("Toll free on 1-800-555-0199 all week", "1-800-555-0199"),
        ("US support: +1 (415) 555-0123.", "+1 (415) 555-0123"),
        ("Berlin: +49 30 901820", "+49 30 901820"),
    ],
)
def test_phone_numbers_are_found(sentence: str, item: str) -> None:
    assert found(sentence) == [("phone", item)]


def test_both_north_american_spellings_in_one_sentence() -> None:
    assert found("Fax 415-555-0123 or text 415.555.0123") == [
        ("phone", "415-555-0123"),
        ("phone", "415.555.0123"),
    ]


@pytest.mark.parametrize(
    "number",
    [
        "123-456-7890",  # area codes never start with 1
        "(055) 555-0123",  # ... or 0
        "415-155-0123",  # exchanges never start with 1
        "+1 234 567",  # too short for E.164
        "+12345678",  # +1 needs ten more digits
    ],
)
def test_numbers_outside_the_numbering_plans_are_not_phones(number: str) -> None:
    assert found(f"call {number} now") == []


@pytest.mark.parametrize(
    ("sentence", "item"),
    [
        ("Charge it to 4111 1111 1111 1111 please.", "4111 1111 1111 1111"),
        ("card 5555-5555-5555-4444 exp 12/28", "5555-5555-5555-4444"),
        ("Amex 3782 822463 10005 on file", "3782 822463 10005"),
        ("number 4012888888881881.", "4012888888881881"),
        ("Discover: 6011 1111 1111 1117", "6011 1111 1111 1117"),
        ("new Mastercard 2223 0031 2200 3222", "2223 0031 2200 3222"),
        ("old Visa 4222222222222", "4222222222222"),
    ],
)
def test_card_numbers_passing_luhn_are_found(sentence: str, item: str) -> None:
    assert found(sentence) == [("card", item)]


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "4111111111111112",
        "1234 5678 9012 3456",  # fails Luhn
        "1732370000000",  # an epoch-milliseconds timestamp: no card issuer starts with 1
        "9999 9999 9999 9995",  # passes Luhn, but no issuer range starts with 9
    ],
)
def test_card_like_numbers_that_fail_validation_are_nothing_at_all(number: str) -> None:
    # Not a card, and not re-read as a phone number or anything else either.
    assert found(f"ref {number} done") == []


def test_a_card_number_never_also_comes_out_as_a_phone() -> None:
    text = "card 4111 1111 1111 1111"
    assert found(text) == [("card", "4111 1111 1111 1111")]
    assert find_pii(text, frozenset({"phone"})) == []


@pytest.mark.parametrize(
    ("sentence", "item"),
    [
        ("Wire it to GB82 WEST 1234 5698 7654 32 by Friday.", "GB82 WEST 1234 5698 7654 32"),
        ("IBAN: DE89370400440532013000", "DE89370400440532013000"),
        ("FR14 2004 1010 0505 0001 3M02 606 is the account", "FR14 2004 1010 0505 0001 3M02 606"),
        ("Dutch NL91ABNA0417164300.", "NL91ABNA0417164300"),
        # Followed by capitals that look like another 4-character group: cut at 16 for BE.
        ("BE68 5390 0754 7034 THEN pay", "BE68 5390 0754 7034"),
        ("GB82 WEST 1234 5698 7654 32 ASAP", "GB82 WEST 1234 5698 7654 32"),
    ],
)
def test_ibans_are_found(sentence: str, item: str) -> None:
    assert found(sentence) == [("iban", item)]


@pytest.mark.parametrize(
    "candidate",
    [
        "GB82 WEST 1234 5698 7654 33",  # checksum off by one
        "DE89370400440532013001",
        "DE8937040044053201300",  # one character short for Germany
        "XX82 WEST 1234 5698 7654 32",  # no such country
    ],
)
def test_iban_near_misses_are_not_found(candidate: str) -> None:
    assert found(f"pay {candidate} today") == []


@pytest.mark.parametrize(
    ("sentence", "item"),
    [
        ("My SSN is 123-45-6789, do not share.", "123-45-6789"),
        ("NI number QQ 12 34 56 C on the form", "QQ 12 34 56 C"),
        ("NINO AB123456C.", "AB123456C"),
        ("nino: JG 10 37 55 A", "JG 10 37 55 A"),
    ],
)
def test_national_ids_are_found(sentence: str, item: str) -> None:
    assert found(sentence) == [("national_id", item)]


@pytest.mark.parametrize(
    "candidate",
    [
        "000-12-3456",  # area 000
        "666-12-3456",  # area 666
        "900-12-3456",  # area 9xx
        "123-00-4567",  # group 00
        "123-45-0000",  # serial 0000
        "BG123456C",  # prefixes never issued
        "GB 12 34 56 A",
        "NK123456A",
        "TN123456A",
        "ZZ123456A",
        "DA123456C",  # D never first
        "AO123456B",  # O never second
        "AB123456E",  # suffix only A-D
    ],
)
def test_national_id_near_misses_are_not_found(candidate: str) -> None:
    assert found(f"id {candidate} on file") == []


@pytest.mark.parametrize(
    "secret",
    [
        OPENAI_KEY,
        OPENAI_LEGACY_KEY,
        ANTHROPIC_KEY,
        AWS_KEY_ID,
        GITHUB_TOKEN,
        GITHUB_OAUTH,
        GITHUB_PAT,
        SLACK_TOKEN,
        GOOGLE_KEY,
        STRIPE_KEY,
        STRIPE_RESTRICTED,
        GATEWAY_KEY,
    ],
)
def test_api_keys_are_found(secret: str) -> None:
    assert found(f"my key is {secret} please keep it") == [("secret", secret)]
    assert found(f'OPENAI_API_KEY="{secret}"') == [("secret", secret)]


def test_gateway_keys_as_the_gateway_issues_them_are_found() -> None:
    rng = random.Random(2026)
    for _ in range(200):
        # gateway.pipeline issues "gk_" + secrets.token_urlsafe(32): 43 url-safe characters.
        key = "gk_" + base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
        assert found(f"use {key} here") == [("secret", key)]
        assert found(f"Authorization: Bearer {key}") == [("secret", key)]
    assert found("gk_" + "a1" * 21 + " is one character short") == []
    assert found(f"Authorization: Bearer gk_{'x' * 43}") == [("secret", f"gk_{'x' * 43}")]


def test_a_bearer_token_is_found_and_the_scheme_word_stays() -> None:
    text = f"curl -H 'Authorization: Bearer {JWT}' https://api.example.com"
    assert found(text) == [("secret", JWT)]
    assert redact(text, find_pii(text)) == (
        "curl -H 'Authorization: Bearer [REDACTED:SECRET]' https://api.example.com"
    )


def test_a_pem_private_key_block_is_one_secret() -> None:
    text = f"here is the key:\n{PEM}\nthanks"
    assert found(text) == [("secret", PEM)]
    assert redact(text, find_pii(text)) == "here is the key:\n[REDACTED:SECRET]\nthanks"


@pytest.mark.parametrize("label", ["PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"])
def test_pem_private_keys_of_every_label_are_found(label: str) -> None:
    block = PEM.replace("RSA PRIVATE KEY", label)
    assert found(f"key: {block}") == [("secret", block)]


def test_an_encrypted_pem_block_with_headers_is_one_secret() -> None:
    block = PEM.replace(
        "-----\n", "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n", 1
    )
    text = f"{block}\n\nand a second one:\n{PEM}"
    assert found(text) == [("secret", block), ("secret", PEM)]


def test_a_pem_key_inside_json_is_one_secret() -> None:
    escaped = PEM.replace("\n", "\\n")  # as a service-account JSON file writes it
    text = f'{{"type": "service_account", "private_key": "{escaped}\\n", "client_id": "1"}}'
    assert found(text) == [("secret", escaped)]


def test_a_pem_block_cut_short_is_still_a_secret() -> None:
    truncated = PEM.split("-----END", maxsplit=1)[0].rstrip()
    assert found(f"{truncated}\n") == [("secret", truncated)]
    assert found(f"{truncated}\n{PEM}") == [("secret", truncated), ("secret", PEM)]


@pytest.mark.parametrize(
    "sentence",
    [
        "we use sk-learn and scikit-learn for the baseline",
        "sk-this-is-definitely-not-a-real-key",  # long, but no digit: words, not a key
        "the Bearer of bad news arrived",
        "Bearer authentication-is-described-elsewhere",
        "AKIA is the prefix of AWS key ids",
        "ghp_short is not a token",
        "task-0123456789abcdefghijKLMNOP is a ticket slug",
        "-----BEGIN PUBLIC KEY----- is not private",
    ],
)
def test_credential_lookalikes_are_not_secrets(sentence: str) -> None:
    assert found(sentence) == []


# --- what must not fire ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The release is due 2026-11-23 and the freeze on 23/11/2026.",
        "Logged at 2026-11-23T14:02:33Z, again at 2026-11-23T14:02:33+05:30.",
        "The job ran at 14:02:33 and 09:15.",
        "Upgrade from 1.2.3.4 to v10.4.1; Python 3.11.7.",
        "Order #100234987 shipped; order 2024-000123 and PO-4417-2231 are pending.",
        "Request id 550e8400-e29b-41d4-a716-446655440000 failed.",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "commit 3858f62230ac3c915f300c664312c63f59ccc0a1, md5 d41d8cd98f00b204e9800998ecf8427e",
        "SHA-1 upper 3858F62230AC3C915F300C664312C63F59CCC0A1",
        "Server 192.168.100.200 on port 8080; 10.0.0.1 is the gateway.",
        "We sold 12345 units for $1,234,567.89, that is 3.14159 per cent up.",
        "ISBN 978-0-306-40615-7, pages 415-555 of volume 2.",
        "Build 4111111111111111-rc1 failed",  # glued to more text: an identifier
        "The ratio +3.14159265 is close to pi.",
        "The mean was 0.4111111111111111 after the last run.",  # a decimal, not a card
        "See v2.415.555.0123 and rc-123-45-6789 in the changelog.",
        "",
    ],
)
def test_ordinary_numbers_and_identifiers_are_not_pii(text: str) -> None:
    assert found(text) == []


# --- several at once, overlaps and kinds ---------------------------------------------------

MIXED = (
    "Hi, I'm Dana (dana@example.org, +44 20 7946 0958). Please refund 4111 1111 1111 1111 "
    f"to GB82 WEST 1234 5698 7654 32; my SSN is 123-45-6789 and the key is {AWS_KEY_ID}."
)


def test_findings_are_in_order_and_do_not_overlap() -> None:
    assert found(MIXED) == [
        ("email", "dana@example.org"),
        ("phone", "+44 20 7946 0958"),
        ("card", "4111 1111 1111 1111"),
        ("iban", "GB82 WEST 1234 5698 7654 32"),
        ("national_id", "123-45-6789"),
        ("secret", AWS_KEY_ID),
    ]


def test_redaction_replaces_each_finding_with_its_kind() -> None:
    assert redact(MIXED, find_pii(MIXED)) == (
        "Hi, I'm Dana ([REDACTED:EMAIL], [REDACTED:PHONE]). Please refund [REDACTED:CARD] "
        "to [REDACTED:IBAN]; my SSN is [REDACTED:NATIONAL_ID] and the key is [REDACTED:SECRET]."
    )


def test_asking_for_some_kinds_returns_just_those_findings() -> None:
    assert found(MIXED, frozenset({"card", "secret"})) == [
        ("card", "4111 1111 1111 1111"),
        ("secret", AWS_KEY_ID),
    ]
    assert find_pii(MIXED, frozenset()) == []


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="passport"):
        find_pii("anything", frozenset({"email", "passport"}))


def test_an_address_wins_over_a_key_shape_inside_it() -> None:
    text = f"write to {AWS_KEY_ID}@example.com"
    assert found(text) == [("email", f"{AWS_KEY_ID}@example.com")]


def test_pii_at_the_very_start_and_end_of_the_text() -> None:
    assert found("4111111111111111") == [("card", "4111111111111111")]
    assert found("123-45-6789 x 415-555-0123") == [
        ("national_id", "123-45-6789"),
        ("phone", "415-555-0123"),
    ]


# --- redact --------------------------------------------------------------------------------


def test_redact_without_findings_returns_the_text_unchanged() -> None:
    assert redact("nothing here", []) == "nothing here"


def test_redact_accepts_findings_in_any_order() -> None:
    text = "a@x.io and b@y.io"
    findings = find_pii(text)
    assert redact(text, list(reversed(findings))) == "[REDACTED:EMAIL] and [REDACTED:EMAIL]"


def test_redact_merges_overlapping_findings_so_nothing_leaks_between_them() -> None:
    text = "0123456789"
    findings = [Finding("card", 2, 6), Finding("phone", 4, 8)]
    assert redact(text, findings) == "01[REDACTED:CARD]89"


def test_redact_refuses_findings_past_the_end_of_the_text() -> None:
    with pytest.raises(ValueError, match="past"):
        redact("short", [Finding("email", 0, 6)])


@pytest.mark.parametrize(("kind", "start", "end"), [("passport", 0, 1), ("email", 3, 3)])
def test_a_finding_must_name_a_known_kind_and_a_non_empty_span(
    kind: str, start: int, end: int
) -> None:
    with pytest.raises(ValueError, match=r"kind|start < end"):
        Finding(kind, start, end)


# --- validators ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("79927398713", True),
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("0000000000000000", True),
        ("", False),
        ("0", False),
        ("4111 1111 1111 1111", False),  # digits only
        ("٤١١١١١١١١١١١١١١١", False),  # Arabic-Indic digits are not card digits
    ],
)
def test_luhn(digits: str, *, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("gb82west12345698765432", True),  # any case, no spaces
        ("CH9300762011623852957", True),
        ("NO9386011117947", True),  # the shortest
        ("GB82 WEST 1234 5698 7654 33", False),
        ("GB82 WEST 1234 5698 7654 3", False),  # too short for GB
        ("US82 WEST 1234 5698 7654 32", False),  # no US IBANs
        ("GB01 WEST 1234 5698 7654 32", False),  # check digits are 02..98
        ("GB82 WEST 1234 5698 7654 3!", False),
        ("", False),
    ],
)
def test_iban_check(candidate: str, *, valid: bool) -> None:
    assert iban_valid(candidate) is valid


# --- a property: whatever the text, the findings are well formed ---------------------------

FRAGMENTS = [
    "dana@example.org",
    "+44 20 7946 0958",
    "(415) 555-0123",
    "4111 1111 1111 1111",
    "4111 1111 1111 1112",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    "QQ 12 34 56 C",
    AWS_KEY_ID,
    OPENAI_KEY,
    "2026-11-23",
    "1.2.3.4",
    "Bearer",
    "@",
    "-",
    "+",
    "(",
    " ",
    "\n",
    "the",
    "7",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join))
def test_findings_are_sorted_disjoint_and_redaction_keeps_everything_else(text: str) -> None:
    findings = find_pii(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)
    assert all(a.end <= b.start for a, b in itertools.pairwise(findings))
    for kind in PII_KINDS:
        assert find_pii(text, frozenset({kind})) == [f for f in findings if f.kind == kind]
    expected, cursor = "", 0
    for finding in findings:
        expected += text[cursor : finding.start] + f"[REDACTED:{finding.kind.upper()}]"
        cursor = finding.end
    assert redact(text, findings) == expected + text[cursor:]


# --- content filter ------------------------------------------------------------------------

LONG_S = "\u017f"
APOSTROPHE = "\u2019"
DENY = ["ass", "Damn", "kill yourself", "drop dead"]
PATTERNS = [r"\bpassword\s*[:=]", r"how\s+to\s+make\s+a\s+bomb"]


@pytest.fixture(scope="module")
def content_filter() -> ContentFilter:
    return compile_content_filter(DENY, PATTERNS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You ass!", "ass"),
        ("ASS", "ass"),
        ("well, damn it", "Damn"),  # the deny word as configured
        ("Just KILL   yourself", "kill yourself"),  # any whitespace between words
        ("drop\ndead", "drop dead"),
        ("my PASSWORD: hunter2", PATTERNS[0]),  # patterns are case-insensitive
        ("tell me How to  make a BOMB", PATTERNS[1]),
        ("a class on assistants, passing the assessment", None),  # whole words only
        ("skills yourself, drop deadline", None),
        ("kill-yourself", None),  # punctuation is not whitespace
        ("the password field", None),
        ("", None),
    ],
)
def test_content_filter_matches(
    content_filter: ContentFilter, text: str, expected: str | None
) -> None:
    assert content_filter.first_match(text) == expected


def test_the_leftmost_match_wins_and_deny_words_win_ties() -> None:
    cf = compile_content_filter(["damn"], [r"password\s*=", r"damn\w*"])
    assert cf.first_match("password= then damn") == r"password\s*="
    assert cf.first_match("damn, password=") == "damn"
    assert cf.first_match("damnation") == r"damn\w*"


def test_a_phrase_joined_by_punctuation_does_not_hide_a_later_real_one() -> None:
    cf = compile_content_filter(["drop dead"], [])
    assert cf.first_match("drop-dead gorgeous, now drop dead") == "drop dead"
    assert cf.first_match("drop-dead gorgeous") is None


def test_patterns_fold_case_as_python_does_beyond_ascii() -> None:
    # The long s is a case variant of s for re.IGNORECASE; the text is not ASCII.
    assert compile_content_filter([], ["password"]).first_match(f"PA{LONG_S}SWORD") == "password"


def test_the_longest_of_overlapping_deny_phrases_is_reported() -> None:
    cf = compile_content_filter(["kill", "kill yourself"], [])
    assert cf.first_match("go kill yourself") == "kill yourself"
    assert cf.first_match("go kill-yourself") == "kill"


def test_deny_words_in_text_beyond_ascii() -> None:
    cf = compile_content_filter(["ass", "Straße"], [])
    assert cf.first_match("Très “ass” indeed") == "ass"
    # é and a typographic apostrophe: still whole words only.
    assert cf.first_match(f"la classé d{APOSTROPHE}assiette") is None
    assert cf.first_match("in der STRASSE") is None  # ß is not ss for Python's re
    assert cf.first_match("in der STRAẞE") == "Straße"
    assert cf.first_match(f"pa{LONG_S}s the a{LONG_S}s") == "ass"  # as re folds it


def test_whole_words_are_unicode_words() -> None:
    cf = compile_content_filter(["caf", "ass", "kill yourself"], ["password"])
    assert cf.first_match(f"un café, s{APOSTROPHE}il vous plaît") is None  # é is a letter
    assert cf.first_match("éass and ßass") is None
    assert cf.first_match("«ass» — “kill\u00a0yourself”") == "ass"  # any punctuation
    assert cf.first_match("“kill\u00a0yourself”") == "kill yourself"  # a no-break space
    assert cf.first_match("Mot de passe: PASSWORD=é") == "password"


def test_the_kelvin_sign_and_dotless_i_fold_as_in_re() -> None:
    cf = compile_content_filter(["kill yourself"], [r"\bkilo\b"])
    assert cf.first_match("\u212aill yourself") == "kill yourself"
    assert cf.first_match("\u212ailo") == r"\bkilo\b"
    assert cf.first_match("k\u0131ll yourself") == "kill yourself"


def test_deny_words_with_punctuation() -> None:
    cf = compile_content_filter(["c++", "f*ck"], [])
    assert cf.first_match("I write C++ daily") == "c++"
    assert cf.first_match("what the F*CK") == "f*ck"
    assert cf.first_match("fck c+") is None


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"(\w)\1{3}", "zzzz"),  # back-references keep their numbering
        (r"(?i)secret", "SECRET"),  # global flags at the start still work
        (r"ab|cd", "xx CD"),
        (r"\x41BC", "abc"),  # escapes the literal prefilter does not read
        (r"colou?r", "COLOR"),
        (r"a{2,3}bc", "aabc"),
        (r"[\]x]+yz", "]]yz"),
    ],
)
def test_patterns_behave_as_python_regexes(pattern: str, text: str) -> None:
    assert compile_content_filter([], [pattern]).first_match(text) == pattern


def test_an_invalid_pattern_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=re.escape("'(unclosed'")):
        compile_content_filter(["ok"], ["fine", "(unclosed"])


def test_limits_are_inclusive() -> None:
    long_word = "x" * MAX_ENTRY_CHARS
    words = [f"word{n}" for n in range(MAX_DENY_WORDS - 1)] + [long_word]
    patterns = [rf"pattern{n}\b" for n in range(MAX_PATTERNS - 1)] + ["y" * MAX_ENTRY_CHARS]
    cf = compile_content_filter(words, patterns)
    assert cf.first_match("say WORD998 now") == "word998"
    assert cf.first_match(f"{long_word}") == long_word
    assert cf.first_match("pattern42") == r"pattern42\b"
    assert cf.first_match("y" * MAX_ENTRY_CHARS) == "y" * MAX_ENTRY_CHARS


@pytest.mark.parametrize(
    ("deny", "patterns", "message"),
    [
        (["w"] * (MAX_DENY_WORDS + 1), [], "deny words"),
        ([], ["p"] * (MAX_PATTERNS + 1), "patterns"),
        (["x" * (MAX_ENTRY_CHARS + 1)], [], "deny word"),
        ([], ["x" * (MAX_ENTRY_CHARS + 1)], "pattern"),
        (["  "], [], "blank"),
        ([], [""], "empty"),
    ],
)
def test_limits_and_empty_entries_are_refused(
    deny: list[str], patterns: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compile_content_filter(deny, patterns)


def test_an_empty_filter_matches_nothing() -> None:
    assert compile_content_filter([], []).first_match("anything at all") is None
