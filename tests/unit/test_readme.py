"""The README documents every setting exactly as the code declares it."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.settings import describe

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_matches_the_settings() -> None:
    text = README.read_text()
    documented = set(re.findall(r"^\| \w+ \| `(GOVLEDGER_\w+)` \|", text, re.MULTILINE))
    declared = {name for _, name, _, _ in describe()}
    assert documented == declared
    for service, name, default, doc in describe():
        assert f"| {service} | `{name}` | `{default}` | {doc} |" in text, name
