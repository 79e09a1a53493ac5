"""The worker's wallets domain (streams/wallets/agent.py): after each batch, one balance per
wallet the batch changed, as the batch left it; nothing for a wallet it did not change or
for records already applied."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas import codec
from schemas.authn import Keyring, SignedChain
from schemas.records import Event, WalletBalance
from streams.intake import Decoded, Domain, Received
from streams.wallets.agent import register
from tests.unit.builders import TEAM, WALLET, call, funding

OTHER_TEAM = "research"
OTHER_WALLET = WALLET.replace(TEAM, OTHER_TEAM)


class Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes, headers: Any) -> None:
        self.sent.append((key, value))


class App:
    def __init__(self) -> None:
        self.balances = Topic()

    def topic(self, *_: Any, **__: Any) -> Topic:
        return self.balances


def _fold(domain: Domain, records: list[Event]) -> None:
    async def fold() -> None:
        await domain.fold([Decoded(r, Received(None, b"")) for r in records])

    asyncio.run(fold())


def _published(app: App) -> dict[str, WalletBalance]:
    out = {}
    for key, value in app.balances.sent:
        balance = codec.decode_as(value, WalletBalance)
        assert key.decode() == balance.wallet_id
        out[balance.wallet_id] = balance
    return out


def test_each_changed_wallet_is_published_once_per_batch_as_the_batch_left_it() -> None:
    app = App()
    chain = SignedChain("processor-test", "processor", Keyring([bytes(range(32))]))
    domain = register(app, "unused:9092", chain)
    fund = funding(seq=1)
    calls = [call(seq=n, event_id=f"0193a1b2-0000-7000-8000-00000000000{n}") for n in (1, 2)]
    other = funding(seq=2, wallet_id=OTHER_WALLET, team_id=OTHER_TEAM)
    batch = [fund, *calls, other]

    _fold(domain, batch)
    assert len(app.balances.sent) == 2
    published = _published(app)
    spent = sum(c.cost_nanousd for c in calls)
    assert published[WALLET].balance_nanousd == fund.amount_nanousd - spent
    assert published[WALLET].entry_count == 3
    assert published[OTHER_WALLET].balance_nanousd == other.amount_nanousd

    app.balances.sent.clear()
    _fold(domain, batch)  # redelivered: already applied
    assert app.balances.sent == []

    late = call(seq=3, event_id="0193a1b2-0000-7000-8000-000000000003")
    _fold(domain, [late])
    published = _published(app)
    assert list(published) == [WALLET]  # the other wallet did not change
    assert published[WALLET].balance_nanousd == fund.amount_nanousd - spent - late.cost_nanousd
