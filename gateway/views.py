"""The gateway's local views of keys and wallet balances, fed by the control and
wallet-state topics (read whole, like a table)."""

from __future__ import annotations

import hashlib
from typing import Any

import structlog

from schemas import codec
from schemas.records import WalletBalance
from schemas.topics import CONTROL, WALLET_STATE
from streams.keys import logic as keys_logic
from streams.wallets import logic as wallets_logic

log = structlog.get_logger(__name__)


def key_sha256(secret: str) -> str:
    """The stored form of a key secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


class LocalViews:
    """Keys by id and by secret hash; wallet balances by wallet id."""

    def __init__(self) -> None:
        self.keys: dict[str, keys_logic.Key] = {}
        self.keys_by_hash: dict[str, keys_logic.Key] = {}
        self.wallets: dict[str, wallets_logic.Wallet] = {}
        # When this gateway last authenticated each key (one entry per known key at most).
        self.key_last_used_ms: dict[str, int] = {}
        self.undecodable = 0

    def apply(self, message: Any) -> None:
        """Apply one consumed record from the control or wallet-state topic."""
        try:
            event = codec.decode(message.value)
        except codec.DecodeError as exc:
            # The processors dead-letter bad records; a view only skips them.
            self.undecodable += 1
            log.warning("undecodable record skipped", topic=message.topic, error=str(exc))
            return
        if message.topic == WALLET_STATE.name and isinstance(event, WalletBalance):
            self.wallets[event.wallet_id] = wallets_logic.latest(
                self.wallets.get(event.wallet_id), event
            )
            return
        if message.topic == CONTROL.name:
            key_id = keys_logic.key_id_of(event)
            if key_id is None:
                return
            key = keys_logic.evolve(self.keys.get(key_id), event)
            if key is not None:
                self.keys[key_id] = key
                self.keys_by_hash[key.key_sha256] = key

    def key_for_secret(self, secret: str) -> keys_logic.Key | None:
        """The key whose secret this is, if any."""
        return self.keys_by_hash.get(key_sha256(secret))
