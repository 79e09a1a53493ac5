"""The sink's pure pieces: container files ClickHouse decodes, event ids cut from the
wire, and the window that drops records a producer retry wrote twice."""

from __future__ import annotations

import io
from typing import Any, cast

import fastavro
from aiokafka import TopicPartition

from schemas import codec
from schemas.codec import encode_long as zigzag_varint
from schemas.codec import event_id_of, read_string
from schemas.records import WalletFunded
from sinks.avro_batch import container_file
from sinks.prepare import RecentIds


def funded(event_id: str, amount: int) -> bytes:
    record = WalletFunded(
        event_id=event_id,
        event_type=WalletFunded.event_type_name,
        occurred_at=1_700_000_000_000,
        tenant_id="acme",
        producer_id="",
        seq=0,
        wallet_id="acme/search",
        team_id="search",
        amount_nanousd=amount,
        memo="PO 7",
        funded_by="admin",
    )
    return codec.encode(codec.HashChain("admin-1").seal(record))


def test_container_file_holds_each_record_and_its_exact_wire_bytes() -> None:
    values = [funded(f"01900000-0000-7000-8000-00000000000{i}", 10 + i) for i in range(3)]
    entry = codec.schema_of(values[0])

    # A container of records: fastavro reads each one back as a dict.
    rows = cast(
        "list[dict[str, Any]]", list(fastavro.reader(io.BytesIO(container_file(entry, values))))
    )

    assert [row["amount_nanousd"] for row in rows] == [10, 11, 12]
    assert [row["raw"] for row in rows] == values
    assert [str(row["event_id"]) for row in rows] == [event_id_of(v) for v in values]


def test_event_id_is_cut_from_the_wire_without_decoding() -> None:
    value = funded("01900000-0000-7000-8000-000000000042", 1)
    assert event_id_of(value) == "01900000-0000-7000-8000-000000000042"
    assert event_id_of(value) == codec.decode(value).event_id


def test_strings_of_any_length_are_read_back() -> None:
    for text in ("", "x", "é" * 100, "y" * 70_000):
        encoded = text.encode()
        buffer = b"\x00" + zigzag_varint(len(encoded)) + encoded + b"tail"
        assert read_string(buffer, 1) == (text, len(buffer) - 4)


def test_recent_ids_drop_repeats_within_the_window_and_forget_the_oldest() -> None:
    window = RecentIds(capacity=3)
    tp = TopicPartition("govledger.lineage", 0)
    other = TopicPartition("govledger.lineage", 1)

    assert [window.first_sighting(tp, i) for i in "abc"] == [True, True, True]
    assert window.first_sighting(tp, "b") is False
    assert window.first_sighting(other, "b") is True  # partitions are independent
    assert window.first_sighting(tp, "d") is True  # evicts "a", the oldest
    assert window.first_sighting(tp, "a") is True
    assert window.first_sighting(tp, "d") is False
