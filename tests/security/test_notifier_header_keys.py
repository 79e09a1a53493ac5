"""A record whose header key is not UTF-8 on the topics the notifier consumes (alerts,
escalations, control). On aiokafka its poll raised on it, and the restarted notifier met
it again: no notification went out any more. It now skips that record (it notifies of
nothing), delivers the notices after it and commits past it.

The notifier's loop runs in-process against librdkafka's mock cluster, with a stand-in
webhook sender and attempt publisher (as tests/unit/test_notifier.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas.settings import NotifySettings, load
from schemas.topics import ALERTS, CONTROL
from streams.notify import notifier as notifier_loop
from streams.notify.notifier import Notifier
from streams.notify.state import DeliveryLog
from tests.security.test_header_keys import committed_offsets, mock_cluster_writer, write_at_0
from tests.unit import builders
from tests.unit.test_notifier import KEYRING, Publisher, Sender, add_route


async def test_the_notifier_skips_the_record_and_delivers_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with mock_cluster_writer(monkeypatch) as (bootstrap, producer):
        await write_at_0(producer, CONTROL.name, None)
        await write_at_0(producer, ALERTS.name, None)
        await write_at_0(producer, ALERTS.name, builders.quota_crossed())
        settings = load(
            NotifySettings,
            {},
            kafka_bootstrap=bootstrap,
            kafka_session_timeout_ms=6_000,
            notify_allowed_hosts="hooks.example.com",
        )
        sender = Sender([])
        made = Notifier(
            settings, Publisher(), sender, KEYRING, DeliveryLog(tmp_path / "log.jsonl", 100)
        )
        add_route(made)
        stop = asyncio.Event()
        running = asyncio.create_task(notifier_loop.run(made, stop))
        expected = {ALERTS.name: 2, CONTROL.name: 1}
        for _ in range(150):
            if running.done():
                break
            if (
                sender.sent
                and await asyncio.to_thread(
                    committed_offsets, bootstrap, notifier_loop.CONSUMER_GROUP, list(expected)
                )
                == expected
            ):
                break
            await asyncio.sleep(0.2)
        assert not running.done(), "the notifier keeps running"
        stop.set()
        await running
        assert [url for url, _, _ in sender.sent] == ["https://hooks.example.com/h"]
        assert (
            committed_offsets(bootstrap, notifier_loop.CONSUMER_GROUP, list(expected)) == expected
        )
