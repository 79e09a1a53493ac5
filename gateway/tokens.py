"""Token estimates for when a provider reports no usage (flagged usage_source=estimated)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# About four characters per token for English text with BPE tokenizers; a message also
# costs a few tokens of framing. Estimates are flagged, never passed off as reported.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of a piece of text, at least one for non-empty text."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message, whether content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def estimate_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of a list of chat messages."""
    return sum(TOKENS_PER_MESSAGE + estimate_text_tokens(message_text(m)) for m in messages)
