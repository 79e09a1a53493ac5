"""A full disk under a gateway's outbox (an injected ENOSPC on its writes): nothing
answered is lost, lineage fails closed with 503 when set (else calls are served and
counted), and the outbox recovers by itself when writes succeed again."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from schemas import codec
from schemas.outbox import Outbox
from schemas.outbox_publisher import OutboxPublisher
from schemas.records import LineageRecord
from tests.component.support import Component, install_keyring, running_component
from tests.unit.test_outbox_publisher import BrokerDouble, until

PRODUCER = "gateway-disk-full"


class Disk:
    """os.write, or ENOSPC while `full`."""

    def __init__(self) -> None:
        self.full = False

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


async def with_outbox(
    component: Component, folder: Path, disk: Disk
) -> tuple[OutboxPublisher, BrokerDouble]:
    """The gateway's lineage through an OutboxPublisher on a disk the test fills."""
    publisher = OutboxPublisher(
        "127.0.0.1:1",
        PRODUCER,
        folder,
        max_bytes=1 << 20,
        outbox=Outbox(folder, PRODUCER, 1 << 20, write=disk.write),
        fsync_interval_s=0.01,
        keyring=install_keyring(),
    )
    broker = BrokerDouble()
    publisher._producer = broker
    await publisher.start()
    component.gateway.lineage = publisher
    return publisher, broker


async def chat(component: Component, secret: str) -> Any:
    body = {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}
    return await component.as_key(secret, "POST", "/v1/chat/completions", json=body)


def kept_calls(folder: Path) -> list[str]:
    """Event ids of the lineage records on the outbox file, in seq order."""
    outbox = Outbox(folder, PRODUCER, 1 << 20)
    try:
        records = [codec.decode(frame.value) for _, frame in outbox.pending(limit=1_000)]
    finally:
        outbox.close()
    return [r.event_id for r in records if isinstance(r, LineageRecord)]


@pytest.mark.parametrize("fail_closed", [True, False])
async def test_a_full_disk_under_the_outbox_loses_no_answered_call(
    tmp_path: Path, fail_closed: bool
) -> None:
    folder = tmp_path / "outbox"
    disk = Disk()
    async with running_component(tmp_path, lineage_fail_closed=fail_closed) as component:
        publisher, broker = await with_outbox(component, folder, disk)
        secret = (await component.create_key("search"))["key"]
        component.publish_balance("search", "5")
        assert (await chat(component, secret)).status == 200
        disk.full = True
        statuses = [(await chat(component, secret)).status for _ in range(3)]
        if fail_closed:
            # The first call's record hits the full disk (kept in memory); then refused.
            assert statuses == [200, 503, 503]
            refused = await chat(component, secret)
            assert (await refused.json())["error"]["code"] == "lineage_unavailable"
        else:
            assert statuses == [200, 200, 200]
            health = await (await component.client.get("/healthz")).json()
            assert health["lineage_overflow"] == 2
        disk.full = False
        await until(lambda: publisher.outbox.writable)  # the periodic sync writes them
        assert (await chat(component, secret)).status == 200
        # Every call writes lineage, a refusal too: 1 + 3 (+ 1 refused) + 1.
        calls = 6 if fail_closed else 5
        sent = [codec.decode(v) for t, v, _ in broker.log if t == "govledger.lineage"]
        assert len(sent) == calls
        await publisher.stop()
    # Every answered call is on disk, in order, until the store confirms it.
    assert kept_calls(folder) == [r.event_id for r in sent]
