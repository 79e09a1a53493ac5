"""A broker that came back empty gets the escalation history back from the store: every
escalation opened and every breach paged, byte for byte with their authentication, so the
escalations processor rebuilds its queues (and pages no breach twice)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from replay import restore as restoring
from schemas import authn
from schemas.topics import ALERTS, CONTROL, ESCALATIONS, RESTORED_HEADER
from tests.unit import builders


class FakeStore:
    """Answers the restore's queries from rows kept per table (hex raw, hex auth)."""

    def __init__(self, rows: dict[str, list[tuple[str, str]]]) -> None:
        self.rows = rows
        self.queries: list[str] = []

    def query_rows(self, sql: str, params: Any = None) -> list[tuple[str, str]]:
        self.queries.append(sql)
        table = sql.split(" FROM ", 1)[1].split(maxsplit=1)[0]
        return self.rows.get(table, [])

    async def run(self, function: Any, *args: Any) -> Any:
        return function(*args)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, *, key: bytes, headers: Any) -> None:
        self.sent.append((topic, value, key, headers))


def stored(topic: str, record: Any) -> tuple[tuple[str, str], bytes, bytes]:
    message = builders.signed_message(topic, record)
    ((_, auth),) = message.headers
    return (message.value.hex(), auth.hex()), message.value, auth


def test_escalations_opened_and_breaches_paged_are_restored_as_they_were_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened_row, opened, opened_auth = stored(ESCALATIONS.name, builders.escalation_opened())
    paged_row, paged, paged_auth = stored(ALERTS.name, builders.escalation_sla_breached())
    forged_row, _, _ = stored(ESCALATIONS.name, builders.escalation_opened(escalation_id="x"))
    forged_row = (forged_row[0], paged_row[1])  # another record's authentication
    store = FakeStore({"escalation_events": [opened_row, forged_row], "alerts": [paged_row]})
    producer = FakeProducer()
    monkeypatch.setattr(restoring, "make_producer", lambda *_, **__: producer)
    monkeypatch.setattr(restoring, "fold_wallets", lambda _store: {})

    report = asyncio.run(restoring.restore(store, "unused:9092", "restore-0a1b2c"))  # type: ignore[arg-type]

    assert report.escalation_records == 2
    restored = (RESTORED_HEADER, b"1")
    assert [(t, v, h) for t, v, _, h in producer.sent] == [
        (ESCALATIONS.name, opened, [restored, (authn.HEADER, opened_auth)]),
        (ALERTS.name, paged, [restored, (authn.HEADER, paged_auth)]),
    ]
    (alerts_query,) = [q for q in store.queries if " FROM alerts " in q]
    assert "event_type = 'escalation.sla_breached'" in alerts_query
    assert not any(t == CONTROL.name for t, *_ in producer.sent)
