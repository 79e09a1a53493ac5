"""Keys: given control events, then key status."""

from __future__ import annotations

from streams.keys.logic import evolve, fold, key_id_of
from tests.unit.builders import T0, TEAM, TENANT, WALLET, funding, key_issued, key_revoked

HOUR_MS = 3_600_000
KEY = "key_0193a1b2"


def test_an_issued_key_is_active() -> None:
    issued = key_issued()
    key = fold([issued])[KEY]
    assert key.status(T0) == "active"
    assert (key.tenant_id, key.team_id, key.wallet_id) == (TENANT, TEAM, WALLET)
    assert key.key_sha256 == issued.key_sha256
    assert key.key_prefix == issued.key_prefix
    assert key.issued_at == T0
    assert key.revoked_at is None


def test_a_revoked_key_is_revoked_from_the_revocation() -> None:
    revoked = key_revoked(occurred_at=T0 + HOUR_MS)
    key = fold([key_issued(), revoked])[KEY]
    assert key.revoked_at == T0 + HOUR_MS
    assert key.status(T0 + HOUR_MS) == "revoked"
    assert key.status(T0 + 2 * HOUR_MS) == "revoked"


def test_a_replayed_issue_does_not_revive_a_revoked_key() -> None:
    issued = key_issued()
    revoked_keys = fold([issued, key_revoked()])
    assert fold([issued], revoked_keys) == revoked_keys
    assert fold([issued, key_revoked(), issued])[KEY].status(T0 + 2 * HOUR_MS) == "revoked"


def test_a_second_issue_of_the_same_key_keeps_the_first() -> None:
    first = key_issued(name="search-backend")
    second = key_issued(name="renamed", seq=3, occurred_at=T0 + HOUR_MS)
    key = fold([first, second])[KEY]
    assert key.name == "search-backend"
    assert key.issued_at == T0


def test_a_second_revocation_keeps_the_first_time() -> None:
    key = fold(
        [
            key_issued(),
            key_revoked(seq=2, occurred_at=T0 + HOUR_MS),
            key_revoked(seq=3, occurred_at=T0 + 5 * HOUR_MS),
        ]
    )[KEY]
    assert key.revoked_at == T0 + HOUR_MS


def test_revoking_an_unknown_key_creates_nothing() -> None:
    assert fold([key_revoked()]) == {}
    assert evolve(None, key_revoked()) is None


def test_a_key_expires_at_its_expiry() -> None:
    expires_at = T0 + 24 * HOUR_MS
    key = fold([key_issued(expires_at=expires_at)])[KEY]
    assert key.status(expires_at - 1) == "active"
    assert key.status(expires_at) == "expired"
    assert key.status(expires_at + HOUR_MS) == "expired"


def test_a_key_without_expiry_never_expires() -> None:
    key = fold([key_issued(expires_at=None)])[KEY]
    assert key.status(T0 + 10 * 365 * 24 * HOUR_MS) == "active"


def test_revocation_wins_over_expiry() -> None:
    key = fold([key_issued(expires_at=T0 + HOUR_MS), key_revoked(occurred_at=T0 + 2 * HOUR_MS)])
    assert key[KEY].status(T0 + 3 * HOUR_MS) == "revoked"


def test_keys_are_independent() -> None:
    other = "key_0193ffff"
    keys = fold([key_issued(), key_issued(key_id=other, seq=2), key_revoked(seq=3)])
    assert keys[KEY].status(T0 + HOUR_MS) == "revoked"
    assert keys[other].status(T0 + HOUR_MS) == "active"


def test_other_events_are_not_key_events() -> None:
    assert key_id_of(funding()) is None
    assert fold([funding()]) == {}


def test_scopes_refuse_what_the_key_does_not_allow() -> None:
    from streams.keys.logic import Key

    key = Key(
        key_id="k",
        tenant_id="acme",
        team_id="search",
        wallet_id="acme/search",
        name="n",
        key_prefix="gk_1234567",
        key_sha256="0" * 64,
        issued_at=0,
        expires_at=None,
        models=("sim-large",),
        providers=("sim",),
        regions=("eu-west",),
    )
    assert key.allows(model="sim-large", provider="sim", region="eu-west") is None
    assert key.allows(model="sim-small", provider="sim", region="eu-west") == "model"
    assert key.allows(model="sim-large", provider="openai", region="eu-west") == "provider"
    assert key.allows(model="sim-large", provider="sim", region="us-east") == "region"
    unscoped = Key("k", "a", "t", "a/t", "n", "gk_", "0" * 64, 0, None)
    assert unscoped.allows(model="any", provider="any", region="any") is None
