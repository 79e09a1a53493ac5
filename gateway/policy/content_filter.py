"""The policy chain's `content-filter` step: deny words and patterns. Pure: compiled once
per pack, no I/O, no mutable module state.

Deny words: the lower-cased text, with every character other than an ASCII letter, digit
or `_` turned into a space, is scanned for " " + phrase; a regex whose first character
is a literal lets the engine jump from space to space, and the phrases are folded into a
shallow trie of plain characters. Each place found is then checked against the exact
phrase in the real text (Unicode word boundaries; a phrase's words are separated by
whitespace, not by any punctuation). Deny words with other characters than ASCII
letters, digits, `_` and spaces, and text holding one of the four characters below,
take a slower exact scan instead.

Each pattern is a regex of its own (so back-references, flags and group names behave
exactly as written), skipped without running when a literal it requires is absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_DENY_WORDS = 1_000
MAX_PATTERNS = 100
MAX_ENTRY_CHARS = 512

_TRIE_DEPTH = 3  # characters shared before falling back to a flat alternation
_ASCII_NON_WORD = "".join(
    char for char in map(chr, range(128)) if not (char.isalnum() or char == "_")
)
_NON_WORD_TO_SPACE = str.maketrans(_ASCII_NON_WORD, " " * len(_ASCII_NON_WORD))
_PLAIN_PHRASE = re.compile(r"[a-z0-9_]+(?: [a-z0-9_]+)*")
# The only characters outside ASCII that re.IGNORECASE equates with ASCII letters: capital
# I with dot and dotless i (with i), long s (with s), the Kelvin sign (with k). The first
# is also the only character whose lower case is two characters long.
_ASCII_CASE_VARIANTS = ("\u0130", "\u0131", "\u017f", "\u212a")


def _lower_is_enough(text: str) -> bool:
    """True when `text.lower()` lines up with `text` and, for ASCII letters, matches
    exactly where re.IGNORECASE would on `text`."""
    return text.isascii() or not any(char in text for char in _ASCII_CASE_VARIANTS)


def _normalise_phrase(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def _escape_phrase(phrase: str) -> str:
    return r"\s+".join(re.escape(word) for word in phrase.split(" "))


def _phrase_alternation(phrases: list[str], depth: int) -> str:
    """A regex matching exactly `phrases`, sharing leading characters so that the engine
    looks at each first character once instead of once per phrase. Longer phrases first:
    when both "kill" and "kill it" are denied, "kill it" is what matched."""
    if depth >= _TRIE_DEPTH or len(phrases) == 1:
        ordered = sorted(phrases, key=lambda phrase: (-len(phrase), phrase))
        return "(?:" + "|".join(_escape_phrase(phrase) for phrase in ordered) + ")"
    by_first: dict[str, list[str]] = {}
    ends_here = False
    for phrase in phrases:
        if phrase:
            by_first.setdefault(phrase[0], []).append(phrase[1:])
        else:
            ends_here = True
    branches = [
        (r"\s+" if first == " " else re.escape(first)) + _phrase_alternation(rests, depth + 1)
        for first, rests in sorted(by_first.items())
    ]
    if ends_here:
        branches.append("")
    return "(?:" + "|".join(branches) + ")"


_FLAG_GROUP = re.compile(r"\(\?[aiLmsux\-]")
_QUANTIFIER_BODY = re.compile(r"\{[0-9]*,?[0-9]*\}")
_REGEX_SYNTAX = frozenset(".^$*+?{}[]|()")
_CLASS_ESCAPES = frozenset("bBsSdDwWAZ")


def _required_literal(pattern: str) -> str | None:
    """The longest lower-cased ASCII string that every match of `pattern` contains, read
    off its top level, or None when that cannot be told surely from the text alone (a
    top-level `|`, inline flags, escapes other than `\\b \\s \\d \\w \\A \\Z` and their
    negations or escaped punctuation, a non-ASCII literal). Only ever looked for in
    `text.lower()` when `_lower_is_enough(text)`: then an ASCII character matches, case
    aside, exactly where its lower case stands in `text.lower()`."""
    if _FLAG_GROUP.search(pattern):
        return None
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1 : index + 2]
            if not escaped or (escaped.isalnum() and escaped not in _CLASS_ESCAPES):
                return None  # \x41, \u00e9, \N{...}, \1, \t ...: not worth decoding
            runs.append("".join(run))
            run = []
            index += 2
            continue
        if char == "[":  # a class: skip to its closing bracket
            end = index + 1
            if pattern[end : end + 1] == "^":
                end += 1
            if pattern[end : end + 1] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            runs.append("".join(run))
            run = []
            index = end + 1
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            if char == "|":
                return None
            if char in "*+?{":
                if run:
                    run.pop()  # the quantified character may be absent or repeated
                if char == "{":
                    body = _QUANTIFIER_BODY.match(pattern, index)
                    if body is None:
                        return None  # a literal brace: not worth telling apart
                    index = body.end() - 1
            elif char in _REGEX_SYNTAX or not char.isascii():
                pass
            else:
                run.append(char.lower())
                index += 1
                continue
        runs.append("".join(run))
        run = []
        index += 1
    runs.append("".join(run))
    longest = max(runs, key=len)
    return longest or None


@dataclass(frozen=True, slots=True)
class ContentFilter:
    """Deny words and regex patterns, compiled once; see `compile_content_filter`."""

    deny: tuple[str, ...]
    patterns: tuple[str, ...]
    # On " " + the lower-cased text with all but ASCII letters, digits and `_` spaced:
    # where a deny phrase may start (None when some deny word is not made of those and
    # spaces).
    deny_candidates: re.Pattern[str] | None = field(repr=False, compare=False)
    # At such a place in the lower-cased text: the exact phrase, as a whole word.
    deny_exact: re.Pattern[str] | None = field(repr=False, compare=False)
    # On " " + any text: case-insensitive, word boundaries in full Unicode.
    deny_any_text: re.Pattern[str] | None = field(repr=False, compare=False)
    deny_by_phrase: dict[str, str] = field(repr=False, compare=False)
    compiled: tuple[re.Pattern[str], ...] = field(repr=False, compare=False)
    required: tuple[str | None, ...] = field(repr=False, compare=False)

    def first_match(self, text: str) -> str | None:
        """The deny-list word or pattern (its source text) that matches first, else None.

        "First" is the leftmost match in the text; at the same position deny words come
        before patterns, and patterns in their listed order."""
        simple = _lower_is_enough(text)
        lowered = text.lower() if simple else text
        best_start = len(text) + 1
        best: str | None = None
        denied = self._first_deny(text, lowered, simple)
        if denied is not None:
            best_start, best = denied
            if best_start == 0:
                return best
        for pattern, compiled, literal in zip(
            self.patterns, self.compiled, self.required, strict=True
        ):
            if simple and literal is not None and literal not in lowered:
                continue
            found = compiled.search(text)
            if found is not None and found.start() < best_start:
                best_start, best = found.start(), pattern
        return best

    def _first_deny(self, text: str, lowered: str, simple: bool) -> tuple[int, str] | None:
        """Where the leftmost deny phrase starts and its source word."""
        found: re.Match[str] | None = None
        if simple and self.deny_candidates is not None and self.deny_exact is not None:
            # One "?" for each character beyond ASCII, so offsets still line up.
            view = lowered if lowered.isascii() else lowered.encode("ascii", "replace").decode()
            spaced = " " + view.translate(_NON_WORD_TO_SPACE)  # offset + 1 = in `text`
            search, exact = self.deny_candidates.search, self.deny_exact.match
            pos = 0
            while (candidate := search(spaced, pos)) is not None:
                found = exact(lowered, candidate.start())
                if found is not None:
                    break
                pos = candidate.start() + 1
        elif self.deny_any_text is not None:
            found = self.deny_any_text.search(" " + text)
        if found is None:
            return None
        # deny_exact matched at the offset in `text`; deny_any_text in " " + text, where
        # its lead character sits at the phrase's offset in `text`: the same number.
        return found.start(), self._deny_source(found.group("phrase"))

    def _deny_source(self, matched: str) -> str:
        source = self.deny_by_phrase.get(_normalise_phrase(matched))
        if source is not None:
            return source
        # Case folds that lower() does not mirror (e.g. the long s): ask each word.
        for word in self.deny:
            phrase = _escape_phrase(_normalise_phrase(word))
            if re.fullmatch(phrase, matched, re.IGNORECASE) is not None:
                return word
        raise AssertionError(f"no deny word matches {matched!r}")


def compile_content_filter(deny: Sequence[str], patterns: Sequence[str]) -> ContentFilter:
    """Deny words match as whole words, case-insensitively (multi-word phrases allowed,
    any whitespace between their words); patterns are Python regexes (case-insensitive).
    ValueError naming the bad pattern when a regex does not compile. Limits: at most 1,000
    deny words and 100 patterns, each at most 512 characters (ValueError beyond)."""
    if isinstance(deny, str) or isinstance(patterns, str):
        raise TypeError("deny words and patterns are sequences of strings, not one string")
    if len(deny) > MAX_DENY_WORDS:
        raise ValueError(f"at most {MAX_DENY_WORDS} deny words, got {len(deny)}")
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns, got {len(patterns)}")
    deny_by_phrase: dict[str, str] = {}
    for word in deny:
        if len(word) > MAX_ENTRY_CHARS:
            raise ValueError(f"deny word {word[:40]!r}... is over {MAX_ENTRY_CHARS} characters")
        phrase = _normalise_phrase(word)
        if not phrase:
            raise ValueError(f"deny word {word!r} is blank")
        deny_by_phrase.setdefault(phrase, word)
    compiled: list[re.Pattern[str]] = []
    for pattern in patterns:
        if len(pattern) > MAX_ENTRY_CHARS:
            raise ValueError(f"pattern {pattern[:40]!r}... is over {MAX_ENTRY_CHARS} characters")
        if not pattern:
            raise ValueError("pattern '' is empty: it would match every text")
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as error:
            raise ValueError(f"pattern {pattern!r} does not compile: {error}") from error

    deny_candidates: re.Pattern[str] | None = None
    deny_exact: re.Pattern[str] | None = None
    deny_any_text: re.Pattern[str] | None = None
    if deny_by_phrase:
        phrases = sorted(deny_by_phrase)
        words = _phrase_alternation(phrases, 0)
        firsts = "".join(sorted({re.escape(phrase[0]) for phrase in phrases}))
        if all(_PLAIN_PHRASE.fullmatch(phrase) for phrase in phrases):
            deny_candidates = re.compile(rf" (?=[{firsts}]){words}(?!\w)")
            deny_exact = re.compile(rf"(?<!\w)(?P<phrase>{words})(?!\w)")
        deny_any_text = re.compile(
            rf"[^A-Za-z0-9_](?<=\W)(?P<phrase>(?i:(?=[{firsts}]){words}))(?!\w)"
        )
    return ContentFilter(
        deny=tuple(deny),
        patterns=tuple(patterns),
        deny_candidates=deny_candidates,
        deny_exact=deny_exact,
        deny_any_text=deny_any_text,
        deny_by_phrase=deny_by_phrase,
        compiled=tuple(compiled),
        required=tuple(_required_literal(pattern) for pattern in patterns),
    )
