"""Text detectors for the policy chain's `pii-detector` step (the `content-filter` step's
deny words and patterns are in content_filter.py).

Pure and fast: no I/O, no mutable module state, everything compiled at import. `find_pii`
scans the text once with one alternation of all the kinds (e-mail addresses are found
apart, from each `@`); each candidate is then checked cheaply (Luhn and issuer prefix,
IBAN country length and mod-97, SSA and HMRC number rules, NANP numbering, "has a digit
and a letter" for free-form keys) before it counts. The scan never goes back: a candidate
that fails its check is skipped, so a 16-digit number failing Luhn is not re-read as a
phone number, and findings never overlap.

What a span is does not depend on the kinds asked for: asking for fewer kinds returns
exactly the matching subset of the full result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PII_KINDS: frozenset[str] = frozenset({"email", "phone", "card", "iban", "national_id", "secret"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected item: `text[start:end]` is of `kind`."""

    kind: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.kind not in PII_KINDS:
            raise ValueError(f"unknown PII kind {self.kind!r}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"a finding needs 0 <= start < end, got {self.start}..{self.end}")


# ---------------------------------------------------------------------------------------
# Validators.

# Each digit doubled, then its two digits added: 0->0, 5->1 (10), 9->9 (18).
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """True when `digits` (ASCII digits only, at least two) passes the Luhn check."""
    if len(digits) < 2 or not (digits.isascii() and digits.isdigit()):
        return False
    # Every second digit from the right doubled; the digit sum read off the ASCII codes.
    checked = digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLED)
    return (sum(checked.encode()) - 48 * len(checked)) % 10 == 0


# Lengths from the SWIFT IBAN registry, for the countries that issue IBANs.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# A=10 ... Z=35, as the mod-97 check reads letters.
_IBAN_LETTER_VALUES = str.maketrans({chr(ord("A") + n): str(10 + n) for n in range(26)})


def iban_valid(candidate: str) -> bool:
    """ISO 13616: a known country, that country's length, check digits 02..98 and the
    mod-97 check. Spaces (the printed grouping) are ignored; letters may be any case."""
    compact = candidate.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not _IBAN_CHARS.issuperset(compact):
        return False
    if not (compact[2:4].isdigit() and "02" <= compact[2:4] <= "98"):
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTER_VALUES)) % 97 == 1


def _ssn_valid(ssn: str) -> bool:
    """SSA rules for `AAA-GG-SSSS`: area not 000, 666 or 9xx; group not 00; serial not
    0000."""
    area, group, serial = ssn[0:3], ssn[4:6], ssn[7:11]
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


_NINO_BAD_FIRST = frozenset("DFIQUV")
_NINO_BAD_SECOND = frozenset("DFIOQUV")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
# HMRC's specimen prefix: never issued, but it is what forms, docs and test data carry.
_NINO_SPECIMEN_PREFIX = "QQ"


def _nino_prefix_valid(prefix: str) -> bool:
    if prefix == _NINO_SPECIMEN_PREFIX:
        return True
    return (
        prefix[0] not in _NINO_BAD_FIRST
        and prefix[1] not in _NINO_BAD_SECOND
        and prefix not in _NINO_BAD_PREFIXES
    )


def _card_prefix_valid(digits: str) -> bool:
    """Issuer ranges that print 13-19 digit numbers: Amex/Diners/JCB (3), Visa (4),
    Mastercard and Maestro (5), Discover/UnionPay/Maestro (6), Mastercard 2221-2720, Mir
    2200-2204. Rules out epoch-millisecond timestamps and most order numbers."""
    first = digits[0]
    if first in "3456":
        return True
    if first == "2":
        head = int(digits[:4])
        return 2221 <= head <= 2720 or 2200 <= head <= 2204
    return False


def _nanp_valid(ten_digits: str) -> bool:
    """North American numbering: area code and exchange both start with 2-9."""
    return ten_digits[0] in "23456789" and ten_digits[3] in "23456789"


_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _mixed(token: str) -> bool:
    """Contains both an ASCII digit and a letter: random key material nearly always does,
    hyphenated English words never contain a digit."""
    return not _DIGITS.isdisjoint(token) and not _LETTERS.isdisjoint(token)


# ---------------------------------------------------------------------------------------
# The scanner. The text is scanned once, padded with one leading space: every alternative
# consumes the character before it, which must not be an ASCII letter, digit or `_`. That
# lead is a plain character set, so the engine hops over the inside of words in a tight
# loop and tries the alternatives only after a space or punctuation. The alternatives are
# grouped by their first character, so at most positions the engine rejects them all with
# a dozen one-character compares; each ends with an empty named group that tells which one
# matched. Numbers also refuse to start right after `.`, `+`, `/` or `-`, or to end where
# `-` or `/` joins more text or `.` more digits, so version numbers, decimals, dates,
# paths, build ids and UUID tails are not read as cards, phones or SSNs.
#
# E-mail addresses are found apart, from each `@` outward (see `_emails`): as a scanner
# alternative they would be tried, and fail, at the start of every word of the prose.

_LEAD = r"[^A-Za-z0-9_]"
# Every group's first character, checked once (one set lookup) before trying the groups;
# after most spaces in prose it fails, and that is most of the scan.
_FIRST = r"(?=[\-A-Z0-9(+bgrsx])"
_NOT_AFTER_NUMBER_JOINER = r"(?<![.+/\-][\s\S])"  # checks the character before `first`
_NUM_AFTER = r"(?!\w|[\-/]\w|\.[0-9])"
_NANP_TAIL = r"[0-9]{3}[ .\-][0-9]{4}" + _NUM_AFTER
_NANP_AFTER_ONE = r"[ .\-]?(?:\([0-9]{3}\)[ .\-]?|[0-9]{3}[ .\-])" + _NANP_TAIL

# (the first character, what follows it per alternative). Order matters only where two
# alternatives can match at the same place: the first listed wins.
_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "-",
        (
            (
                # The body (base64, header lines such as "Proc-Type: 4,ENCRYPTED", and
                # the "\n" escapes of a key inside JSON) stops at the next "-----": the
                # END line, or another block when this one was cut short. A block cut
                # short still counts, up to where it stops.
                "pem",
                r"----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----"
                r"(?:[A-Za-z0-9+/=\s:,.\\]|-(?!----))*"
                r"(?:-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----)?",
            ),
        ),
    ),
    (
        "A",
        (
            ("aws", r"[KS]IA[0-9A-Z]{16}(?![0-9A-Za-z])"),  # AKIA / ASIA access key ids
            ("google", r"Iza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),  # AIza..., 39 chars
        ),
    ),
    (
        "g",
        (
            ("github", r"h[pousr]_[A-Za-z0-9]{36,}(?!\w)"),  # ghp_, gho_, ...
            ("github_pat", r"ithub_pat_[A-Za-z0-9_]{22,}"),  # fine-grained tokens
            ("gateway_key", r"k_[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])"),  # this gateway's
        ),
    ),
    (
        "s",
        (
            ("sk", r"k-[A-Za-z0-9_\-]{20,}"),  # OpenAI sk-, sk-proj-; Anthropic sk-ant-
            ("stripe", r"k_(?:live|test)_[0-9A-Za-z]{16,}(?!\w)"),
        ),
    ),
    ("r", (("stripe", r"k_(?:live|test)_[0-9A-Za-z]{16,}(?!\w)"),)),
    ("x", (("slack", r"ox[abprs]-[A-Za-z0-9\-]{10,}"),)),
    (
        "[Bb]",
        (
            (
                "bearer",
                r"(?:earer|EARER)[ \t]+(?P<bearer_token>[A-Za-z0-9._~+/\-]{20,}=*)"
                r"(?![A-Za-z0-9._~+/=\-])",
            ),
        ),
    ),
    (
        "[A-Z]",
        (
            ("nino", r"[A-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?!\w)"),
            (
                "iban",
                r"[A-Z][0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)"
                r"(?![A-Za-z0-9])",
            ),
        ),
    ),
    (
        "[0-9]" + _NOT_AFTER_NUMBER_JOINER,
        (
            ("ssn", r"[0-9]{2}-[0-9]{2}-[0-9]{4}" + _NUM_AFTER),
            ("card", r"[0-9]{12,18}" + _NUM_AFTER),
            # 4-4-4-4 (and 4-4-4-1..4-4-4-4-3), then Amex 4-6-5 and Diners 4-6-4.
            ("card", r"[0-9]{3}(?:[ \-][0-9]{4}){2}[ \-][0-9]{1,4}(?:[ \-][0-9]{1,3})?"),
            ("card", r"[0-9]{3}[ \-][0-9]{6}[ \-][0-9]{4,5}" + _NUM_AFTER),
            ("nanp", r"[0-9]{2}[ .\-]" + _NANP_TAIL),  # 415-555-0123, 415.555.0123
            ("nanp", r"(?<=1)" + _NANP_AFTER_ONE),  # 1-800-555-0199
        ),
    ),
    ("\\(" + _NOT_AFTER_NUMBER_JOINER, (("nanp", r"[0-9]{3}\)[ .\-]?" + _NANP_TAIL),)),
    (
        "\\+" + _NOT_AFTER_NUMBER_JOINER,
        (
            ("nanp", r"1" + _NANP_AFTER_ONE),  # +1 (415) 555-0123
            ("intl", r"[1-9](?:[ \-]?[0-9]){7,14}" + _NUM_AFTER),  # E.164
        ),
    ),
)


def _scanner() -> tuple[re.Pattern[str], dict[str, str]]:
    """The compiled scanner and, per marker group name, the alternative's name."""
    names: dict[str, str] = {}
    groups = []
    for first, alternatives in _GROUPS:
        branches = []
        for name, rest in alternatives:
            marker = f"{name}_{len(names)}"
            names[marker] = name
            branches.append(f"{rest}(?P<{marker}>)")
        groups.append(first + "(?:" + "|".join(branches) + ")")
    return re.compile(_LEAD + _FIRST + "(?:" + "|".join(groups) + ")"), names


_SCANNER, _ALTERNATIVE_BY_MARKER = _scanner()

_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._%+\-]{0,63}\Z")
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"  # labels
    r"\.[A-Za-z]{2,63}(?![A-Za-z0-9\-])"  # a top level of 2+ letters
)
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_EMAIL_LOCAL_CHARS = _WORD_CHARS | frozenset(".%+-")


def _emails(text: str) -> list[tuple[int, int]]:
    """Spans of `local@domain.tld`, found from each `@`: the local part is the longest run
    of address characters before it (at most 64, starting with a letter, digit or `_`, not
    glued to a word character), the domain has a dot and a 2+ letter top level."""
    spans: list[tuple[int, int]] = []
    floor = 0  # the local part never reaches back past the previous "@"
    at = text.find("@")
    while at != -1:
        if at > floor and text[at - 1] in _EMAIL_LOCAL_CHARS:
            local = _EMAIL_LOCAL.search(text, max(floor, at - 64), at)
            domain = _EMAIL_DOMAIN.match(text, at + 1)
            if local is not None and domain is not None:
                start = local.start()
                if start == 0 or text[start - 1] not in _WORD_CHARS:
                    spans.append((start, domain.end()))
        floor = at + 1
        at = text.find("@", floor)
    return spans


# A verdict: the kind (None: not PII after all) and the span it covers or, when rejected,
# the span to skip, in the unpadded text. Scanning resumes at the span's end.
_Verdict = tuple[str | None, int, int]
_Handler = Callable[[str, int, re.Match[str]], _Verdict]


def _secret(body: str, start: int, match: re.Match[str]) -> _Verdict:
    return "secret", start, start + len(body)


def _pem(body: str, start: int, match: re.Match[str]) -> _Verdict:
    # A block cut short keeps its key material but not the blank space after it.
    return "secret", start, start + len(body.rstrip())


def _secret_mixed(body: str, start: int, match: re.Match[str]) -> _Verdict:
    key = body.split("-", 1)[1]
    return ("secret" if _mixed(key) else None), start, start + len(body)


def _bearer(body: str, start: int, match: re.Match[str]) -> _Verdict:
    # The token is the secret; the scheme word stays readable after redaction. A token
    # that does not look random skips only the word "Bearer": a key with a shape of its
    # own (a gateway key without a digit, say) is still read as that.
    token_start, token_end = match.span("bearer_token")
    if _mixed(match.group("bearer_token")):
        return "secret", token_start - 1, token_end - 1
    return None, start, start + len("Bearer")


def _nino(body: str, start: int, match: re.Match[str]) -> _Verdict:
    valid = _nino_prefix_valid(body[:2])
    return ("national_id" if valid else None), start, start + len(body)


def _iban(body: str, start: int, match: re.Match[str]) -> _Verdict:
    length = IBAN_LENGTHS.get(body[:2])
    if length is None:
        return None, start, start + 4  # not a country: skip the "XX99" lead only
    # The scanner is greedy over 4-character groups; cut at the country's length.
    seen = 0
    cut = len(body)
    for index, char in enumerate(body):
        if char != " ":
            seen += 1
            if seen == length:
                cut = index + 1
                break
    if seen < length or (cut < len(body) and body[cut] != " "):
        return None, start, start + len(body)
    return ("iban" if iban_valid(body[:cut]) else None), start, start + cut


def _ssn(body: str, start: int, match: re.Match[str]) -> _Verdict:
    return ("national_id" if _ssn_valid(body) else None), start, start + len(body)


def _card(body: str, start: int, match: re.Match[str]) -> _Verdict:
    digits = body.replace(" ", "").replace("-", "")
    valid = 13 <= len(digits) <= 19 and _card_prefix_valid(digits) and luhn_valid(digits)
    return ("card" if valid else None), start, start + len(body)


_PHONE_PUNCTUATION = str.maketrans("", "", " .-()+")


def _digits(text: str) -> str:
    return text.translate(_PHONE_PUNCTUATION)


def _nanp(body: str, start: int, match: re.Match[str]) -> _Verdict:
    digits = _digits(body)
    valid = len(digits) == 10 or (len(digits) == 11 and digits[0] == "1")
    valid = valid and _nanp_valid(digits[-10:])
    return ("phone" if valid else None), start, start + len(body)


def _intl(body: str, start: int, match: re.Match[str]) -> _Verdict:
    digits = _digits(body)
    if digits[0] in "17":  # NANP and Russia/Kazakhstan: country code + 10 digits exactly
        valid = len(digits) == 11 and (digits[0] == "7" or _nanp_valid(digits[1:]))
    else:
        valid = 8 <= len(digits) <= 15
    return ("phone" if valid else None), start, start + len(body)


_HANDLER_BY_ALTERNATIVE: dict[str, _Handler] = {
    "pem": _pem,
    "aws": _secret,
    "google": _secret,
    "github": _secret,
    "github_pat": _secret,
    "gateway_key": _secret,
    "stripe": _secret,
    "sk": _secret_mixed,
    "slack": _secret_mixed,
    "bearer": _bearer,
    "nino": _nino,
    "iban": _iban,
    "ssn": _ssn,
    "card": _card,
    "nanp": _nanp,
    "intl": _intl,
}
# Keyed by the scanner's marker group names ("card_14"): one dict lookup per candidate.
_HANDLERS: dict[str, _Handler] = {
    marker: _HANDLER_BY_ALTERNATIVE[name] for marker, name in _ALTERNATIVE_BY_MARKER.items()
}


def find_pii(text: str, kinds: frozenset[str] = PII_KINDS) -> list[Finding]:
    """Non-overlapping findings sorted by start; only the kinds asked for."""
    if not kinds:
        return []
    if not kinds <= PII_KINDS:
        raise ValueError(f"unknown PII kinds: {sorted(kinds - PII_KINDS)}")
    findings: list[Finding] = []
    emails = _emails(text) if "@" in text else []
    next_email = 0
    padded = " " + text  # offsets in `padded` are one more than in `text`
    search = _SCANNER.search
    handlers = _HANDLERS
    covered = 0  # end of the last finding: nothing may start before it
    match = search(padded)
    while True:
        # The lead character's offset in `padded` is the candidate's offset in `text`.
        candidate_start = len(text) if match is None else match.start()
        if next_email < len(emails) and emails[next_email][0] <= candidate_start:
            # An address starting first (or at the same place) wins over the candidate.
            start, end = emails[next_email]
            next_email += 1
            if start >= covered:
                if "email" in kinds:
                    findings.append(Finding("email", start, end))
                covered = end
                if match is not None and candidate_start < end:
                    match = search(padded, end)
            continue
        if match is None:
            return findings
        marker = match.lastgroup
        assert marker is not None, "every scanner alternative ends with a named group"
        body = padded[candidate_start + 1 : match.end()]
        kind, start, end = handlers[marker](body, candidate_start, match)
        if kind is not None:
            if kind in kinds:
                findings.append(Finding(kind, start, end))
            covered = end
        match = search(padded, end)  # the candidate's last character may lead the next one


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Each finding replaced by `[REDACTED:<KIND>]` (kind upper-cased), e.g.
    [REDACTED:EMAIL]. Findings may come in any order; overlapping ones are merged into one
    redaction under the kind of the one that starts first, so nothing leaks between them."""
    if not findings:
        return text
    if max(finding.end for finding in findings) > len(text):
        raise ValueError(f"a finding ends past the text's {len(text)} characters")
    parts: list[str] = []
    cursor = 0
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if finding.start < cursor:  # overlaps the previous redaction: extend it
            cursor = max(cursor, finding.end)
            continue
        parts.append(text[cursor : finding.start])
        parts.append(f"[REDACTED:{finding.kind.upper()}]")
        cursor = finding.end
    parts.append(text[cursor:])
    return "".join(parts)
