"""The `.avsc` files, their publication record, the wire framing and the hash chain."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

import schemas
from schemas import codec
from schemas.codec import ALL_RECORD_TYPES as RECORD_TYPES
from schemas.codec import DecodeError, HashChain, compute_record_hash
from schemas.records import KeyIssued, KeyRevoked, LineageRecord
from tests.unit import builders

SCHEMA_DIR = Path(schemas.__file__).parent
AVRO_DIR = SCHEMA_DIR / "avro"
AVSC_FILES = sorted(AVRO_DIR.glob("*.avsc"))
PUBLISHED = json.loads((SCHEMA_DIR / "published.json").read_text())
VERSIONED_NAME = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")


def load_avsc(path: Path) -> dict[str, Any]:
    source: dict[str, Any] = json.loads(path.read_text())
    return source


def full_name(source: dict[str, Any]) -> str:
    return f"{source['namespace']}.{source['name']}"


# --- CRC-64-AVRO, written from the Avro specification ("Schema Fingerprints") -----------

CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    fp = CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint_le(source: dict[str, Any]) -> bytes:
    """Single-object encoding carries the fingerprint little-endian."""
    return crc64_avro(to_parsing_canonical_form(source).encode()).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("canonical", "expected_le_hex"),
    [('"int"', "8f5c393f1ad57572"), ('"long"', "b71df49344e154d0")],
)
def test_crc64_implementation_matches_published_test_vectors(
    canonical: str, expected_le_hex: str
) -> None:
    assert crc64_avro(canonical.encode()).to_bytes(8, "little").hex() == expected_le_hex


# --- every .avsc: parses, documented ------------------------------------------------------


def missing_docs(node: Any, where: str) -> list[str]:
    """Places in a schema where a record, enum, fixed or field has no (non-empty) doc."""
    if isinstance(node, list):
        return [m for i, branch in enumerate(node) for m in missing_docs(branch, f"{where}|{i}")]
    if not isinstance(node, dict):
        return []
    kind = node["type"]
    if isinstance(kind, dict | list):
        return missing_docs(kind, where)
    found = []
    if kind in {"record", "error", "enum", "fixed"}:
        here = f"{where}:{node['name']}"
        if not str(node.get("doc", "")).strip():
            found.append(here)
        for field in node.get("fields", []):
            field_where = f"{here}.{field['name']}"
            if not str(field.get("doc", "")).strip():
                found.append(field_where)
            found.extend(missing_docs(field["type"], field_where))
    elif kind == "array":
        found.extend(missing_docs(node["items"], f"{where}[]"))
    elif kind == "map":
        found.extend(missing_docs(node["values"], f"{where}{{}}"))
    return found


def test_schema_folder_is_not_empty() -> None:
    assert len(AVSC_FILES) >= len(RECORD_TYPES)


@pytest.mark.parametrize("path", AVSC_FILES, ids=lambda p: p.name)
def test_avsc_parses_and_documents_every_record_enum_and_field(path: Path) -> None:
    source = load_avsc(path)
    fastavro.parse_schema(copy.deepcopy(source))
    assert missing_docs(source, path.name) == []


def test_doc_check_finds_undocumented_nested_types() -> None:
    source = load_avsc(AVRO_DIR / "lineage_record.v3.avsc")
    attempts = next(f for f in source["fields"] if f["name"] == "attempts")
    del attempts["type"]["items"]["fields"][0]["doc"]
    decision = next(f for f in source["fields"] if f["name"] == "decision")
    del decision["type"]["doc"]
    assert missing_docs(source, "x") == [
        "x:LineageRecord.attempts[]:Attempt.provider",
        "x:LineageRecord.decision:Decision",
    ]


@pytest.mark.parametrize("path", AVSC_FILES, ids=lambda p: p.name)
def test_file_name_carries_the_version_and_namespace_matches(path: Path) -> None:
    match = VERSIONED_NAME.match(path.name)
    assert match, f"{path.name} is not name.vN.avsc"
    assert load_avsc(path)["namespace"] == f"govledger.v{match['version']}"


def test_every_record_type_has_a_schema_with_the_same_fields_in_order() -> None:
    by_name = {full_name(load_avsc(p)): load_avsc(p) for p in AVSC_FILES}
    for record_type in RECORD_TYPES:
        source = by_name[record_type.schema_name]
        avro_fields = [f["name"] for f in source["fields"]]
        assert avro_fields == [f.name for f in dataclasses.fields(record_type)]


# --- publication: a published schema is never edited -----------------------------------


def test_every_schema_file_is_published_and_every_published_schema_still_exists() -> None:
    assert sorted(PUBLISHED) == [p.name for p in AVSC_FILES]


@pytest.mark.parametrize("path", AVSC_FILES, ids=lambda p: p.name)
def test_published_file_hash_and_fingerprint_match(path: Path) -> None:
    entry = PUBLISHED[path.name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["file_sha256"]
    assert fingerprint_le(load_avsc(path)).hex() == entry["crc64_avro"]


# --- evolution: vN reads what v(N-1) wrote ------------------------------------------------

PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": True,
    "int": 7,
    "long": 1_741_010_520_000,
    "float": 1.5,
    "double": 2.25,
    "bytes": b"\x00\x01",
    "string": "text",
}


def sample_datum(schema: Any, branch: int, named: dict[str, Any] | None = None) -> Any:
    """A value of any Avro schema; `branch` picks the first (0) or last (-1) union branch
    and enum symbol, so two samples exercise both ends of every choice."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return sample_datum(schema[branch], branch, named)
    if isinstance(schema, str):
        if schema in PRIMITIVE_SAMPLES:
            return PRIMITIVE_SAMPLES[schema]
        return sample_datum(named[schema], branch, named)
    kind = schema["type"]
    if schema.get("logicalType") == "uuid":
        return "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"
    if kind in {"record", "enum", "fixed"}:
        named[schema["name"]] = schema
        named[f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".")] = schema
    if kind == "record":
        return {f["name"]: sample_datum(f["type"], branch, named) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][branch]
    if kind == "fixed":
        return b"\x01" * schema["size"]
    if kind == "array":
        return [sample_datum(schema["items"], branch, named)] * 2
    if kind == "map":
        return {"k": sample_datum(schema["values"], branch, named)}
    # {"type": "long", "logicalType": ...} or a nested {"type": {...}}
    return sample_datum(kind, branch, named)


def check_backward_compatible(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise unless data written with `old` reads with `new` as the reader schema."""
    writer = fastavro.parse_schema(copy.deepcopy(old))
    reader = fastavro.parse_schema(copy.deepcopy(new))
    for branch in (0, -1):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer, sample_datum(old, branch))
        fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), writer, reader)


def successor_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for path in AVSC_FILES:
        match = VERSIONED_NAME.match(path.name)
        assert match, path.name
        version = int(match["version"])
        if version > 1:
            pairs.append((AVRO_DIR / f"{match['name']}.v{version - 1}.avsc", path))
    return pairs


def test_every_new_version_reads_data_written_with_its_predecessor() -> None:
    for predecessor, successor in successor_pairs():
        assert predecessor.exists(), f"{successor.name} has no predecessor {predecessor.name}"
        check_backward_compatible(load_avsc(predecessor), load_avsc(successor))


def _next_version(source: dict[str, Any], new_field: dict[str, Any]) -> dict[str, Any]:
    successor = copy.deepcopy(source)
    successor["namespace"] = "govledger.v2"
    successor["fields"].append(new_field)
    return successor


@pytest.mark.parametrize("path", AVSC_FILES, ids=lambda p: p.name)
def test_compatibility_check_accepts_a_field_added_with_a_default(path: Path) -> None:
    source = load_avsc(path)
    field = {"name": "cost_center", "type": "string", "default": "", "doc": "Cost center."}
    check_backward_compatible(source, _next_version(source, field))


@pytest.mark.parametrize("path", AVSC_FILES, ids=lambda p: p.name)
def test_compatibility_check_rejects_a_field_added_without_a_default(path: Path) -> None:
    source = load_avsc(path)
    field = {"name": "cost_center", "type": "string", "doc": "Cost center."}
    with pytest.raises(SchemaResolutionError):
        check_backward_compatible(source, _next_version(source, field))


def test_compatibility_check_rejects_a_removed_enum_symbol_still_written() -> None:
    source = load_avsc(AVRO_DIR / "lineage_record.v3.avsc")
    successor = copy.deepcopy(source)
    successor["namespace"] = "govledger.v2"
    decision = next(f for f in successor["fields"] if f["name"] == "decision")
    decision["type"]["symbols"] = decision["type"]["symbols"][:-1]
    decision["type"].pop("default")
    with pytest.raises(SchemaResolutionError):
        check_backward_compatible(source, successor)


# --- codec: single-object encoding --------------------------------------------------------


def test_realistic_records_cover_every_record_type() -> None:
    assert {type(r) for r in builders.one_of_each()} == set(RECORD_TYPES)


@pytest.mark.parametrize("record", builders.one_of_each(), ids=lambda r: type(r).__name__)
def test_record_round_trips_through_the_codec(record: LineageRecord) -> None:
    data = codec.encode(record)
    decoded = codec.decode(data)
    assert type(decoded) is type(record)
    assert decoded == record
    assert codec.decode_as(data, type(record)) == record


@pytest.mark.parametrize("record", builders.one_of_each(), ids=lambda r: type(r).__name__)
def test_header_is_marker_then_little_endian_crc64_of_the_canonical_form(
    record: LineageRecord,
) -> None:
    source = next(load_avsc(p) for p in AVSC_FILES if full_name(load_avsc(p)) == record.schema_name)
    data = codec.encode(record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint_le(source)


def test_key_issued_without_expiry_round_trips() -> None:
    record = builders.key_issued(expires_at=None)
    assert codec.decode(codec.encode(record)) == record


def test_lineage_of_a_streamed_call_with_nulls_and_empty_lists_round_trips() -> None:
    record = builders.rejected_call(parent_span_id=None, user_id=None, stream=True, ttft_ms=None)
    assert codec.decode(codec.encode(record)) == record


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xc3", b"hello, world, this is not avro", b'{"event_id": "x"}', b"\x00" * 64],
)
def test_decode_rejects_bytes_without_the_marker(garbage: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(garbage)


def test_decode_rejects_an_unknown_fingerprint() -> None:
    body = codec.encode(builders.funding())[10:]
    unknown = crc64_avro(b'{"name":"someone.else.Record"}').to_bytes(8, "little")
    assert unknown.hex() not in {entry["crc64_avro"] for entry in PUBLISHED.values()}
    with pytest.raises(DecodeError, match="fingerprint"):
        codec.decode(b"\xc3\x01" + unknown + body)


@pytest.mark.parametrize("record", builders.one_of_each(), ids=lambda r: type(r).__name__)
def test_decode_rejects_every_truncation_of_the_body(record: LineageRecord) -> None:
    data = codec.encode(record)
    for cut in range(10, len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:cut])


def test_decode_as_rejects_another_record_type() -> None:
    data = codec.encode(builders.key_revoked())
    with pytest.raises(DecodeError, match="KeyIssued"):
        codec.decode_as(data, KeyIssued)
    assert isinstance(codec.decode_as(data, KeyRevoked), KeyRevoked)


# --- the decode example of schemas/README.md: fastavro and the .avsc files only ----------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _plain(value: Any) -> Any:
    """Typed record values as plain Avro data, logical types back to their wire values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(milliseconds=1)
    return value


def decode_with_fastavro_only(data: bytes) -> dict[str, Any]:
    """What the README shows: pick the .avsc by fingerprint, read the body with fastavro."""
    assert data[:2] == b"\xc3\x01"
    by_fingerprint = {fingerprint_le(load_avsc(p)): load_avsc(p) for p in AVSC_FILES}
    schema = fastavro.parse_schema(by_fingerprint[data[2:10]])
    fields = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, None)
    assert isinstance(fields, dict)  # every .avsc is a record schema
    return fields


@pytest.mark.parametrize("record", builders.one_of_each(), ids=lambda r: type(r).__name__)
def test_records_decode_with_fastavro_and_the_avsc_files_alone(record: LineageRecord) -> None:
    fields = decode_with_fastavro_only(codec.encode(record))
    assert _plain(fields) == _plain(record)


def readme_decode_example() -> str:
    """The Python block of schemas/README.md that shows decoding without our codec."""
    readme = (SCHEMA_DIR / "README.md").read_text()
    blocks: list[str] = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    examples = [b for b in blocks if "def decode(" in b]
    assert len(examples) == 1, "schemas/README.md shows one decode example"
    our_imports = re.compile(r"^\s*(from|import)\s+(schemas|gateway|streams)", re.MULTILINE)
    assert not our_imports.search(examples[0]), "the example must not need our code"
    return examples[0]


@pytest.mark.parametrize("record", builders.one_of_each(), ids=lambda r: type(r).__name__)
def test_the_readme_decode_example_works_as_written(
    record: LineageRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(SCHEMA_DIR.parent)
    namespace: dict[str, Any] = {}
    exec(readme_decode_example(), namespace)
    fields = namespace["decode"](codec.encode(record))
    assert _plain(fields) == _plain(record)


# --- hash chain ---------------------------------------------------------------------------


def _unsealed_calls(count: int) -> list[LineageRecord]:
    # The gateway builds records with an empty producer and seq 0; the chain fills them in.
    return [builders.call(producer_id="", seq=0, prompt_tokens=100 * (i + 1)) for i in range(count)]


def test_seal_numbers_records_from_one_and_links_each_to_the_previous() -> None:
    chain = HashChain("gateway-eu1-0a1b2c")
    sealed = [chain.seal(r) for r in _unsealed_calls(3)]
    assert [r.seq for r in sealed] == [1, 2, 3]
    assert {r.producer_id for r in sealed} == {"gateway-eu1-0a1b2c"}
    assert sealed[0].prev_hash == "0" * 64
    assert sealed[1].prev_hash == sealed[0].record_hash
    assert sealed[2].prev_hash == sealed[1].record_hash
    assert len({r.record_hash for r in sealed}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", r.record_hash) for r in sealed)
    assert (chain.seq, chain.head) == (3, sealed[-1].record_hash)


def test_chains_of_different_producers_are_independent() -> None:
    first, second = HashChain("gateway-a"), HashChain("gateway-b")
    a1 = first.seal(builders.call(producer_id="", seq=0))
    b1 = second.seal(builders.call(producer_id="", seq=0))
    a2 = first.seal(builders.call(producer_id="", seq=0))
    assert (a1.seq, b1.seq, a2.seq) == (1, 1, 2)
    assert b1.prev_hash == "0" * 64
    assert a2.prev_hash == a1.record_hash


def test_record_hash_is_sha256_of_prev_hash_and_body_with_record_hash_empty() -> None:
    record = HashChain("gateway-eu1-0a1b2c").seal(_unsealed_calls(1)[0])
    source = load_avsc(AVRO_DIR / "lineage_record.v3.avsc")
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(source), _plain(dataclasses.replace(record, record_hash=""))
    )
    expected = hashlib.sha256(bytes.fromhex(record.prev_hash) + body.getvalue()).hexdigest()
    assert record.record_hash == expected
    assert compute_record_hash(record) == expected


@pytest.mark.parametrize(
    ("field", "tampered"),
    [
        ("cost_nanousd", lambda r: r.cost_nanousd - 1),
        ("tenant_id", lambda r: "globex"),
        ("model_selected", lambda r: "gpt-4o"),
        ("seq", lambda r: r.seq + 1),
        ("prev_hash", lambda r: "f" * 64),
        ("guardrails_triggered", lambda r: ()),
        ("occurred_at", lambda r: r.occurred_at + 1),
    ],
)
def test_changing_any_field_changes_the_recomputed_hash(
    field: str, tampered: Callable[[LineageRecord], Any]
) -> None:
    chain = HashChain("gateway-eu1-0a1b2c")
    record = [chain.seal(r) for r in _unsealed_calls(2)][-1]
    assert compute_record_hash(record) == record.record_hash
    changed = dataclasses.replace(record, **{field: tampered(record)})
    assert compute_record_hash(changed) != record.record_hash


@pytest.mark.parametrize("record", builders.one_of_each(), ids=lambda r: type(r).__name__)
def test_seal_encoded_gives_the_bytes_and_chain_of_seal_then_encode(record: LineageRecord) -> None:
    one, other = HashChain("gateway-1a2b3c"), HashChain("gateway-1a2b3c")
    for _ in range(3):  # seq and prev_hash grow: later records test longer varints too
        sealed, data = one.seal_encoded(record)
        expected = other.seal(record)
        assert sealed == expected
        assert data == codec.encode(expected)
        assert codec.decode(data) == expected


def test_seal_encoded_matches_with_long_varints_and_non_ascii_ids() -> None:
    record = builders.call(tenant_id="müller-gmbh", occurred_at=2**45)
    one, other = HashChain("gateway-é"), HashChain("gateway-é")
    one.seq = other.seq = 2**40
    sealed, data = one.seal_encoded(record)
    assert data == codec.encode(other.seal(record))
    assert codec.decode(data) == sealed


def test_a_decoded_lineage_record_is_the_frozen_record_its_fields_make() -> None:
    """Lineage decodes through a faster constructor than the dataclass's own: the result
    must be indistinguishable from it, frozen included."""
    record = builders.call()
    decoded = codec.decode(codec.encode(record))
    assert type(decoded) is LineageRecord
    assert decoded == record and hash(decoded) == hash(record)
    assert repr(decoded) == repr(record)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.cost_nanousd = 0  # type: ignore[misc]


def _written_with(record: LineageRecord, schema_file: str) -> bytes:
    """The record as a producer on an older schema version wrote it (header and body)."""
    source = load_avsc(AVRO_DIR / schema_file)
    body = io.BytesIO()
    names = [f["name"] for f in source["fields"]]
    fastavro.schemaless_writer(
        body,
        fastavro.parse_schema(codec._strip_logical_types(copy.deepcopy(source))),
        {n: _plain(record)[n] for n in names},
    )
    return codec.MAGIC + fingerprint_le(source) + body.getvalue()


def test_a_v1_lineage_record_decodes_as_a_chat_completion_and_replays_like_v2() -> None:
    from replay.state import rebuild_from_events

    calls = [
        dataclasses.replace(builders.call(seq=seq, occurred_at=builders.T0 + seq), api="embeddings")
        for seq in (1, 2)
    ]
    old = codec.decode_as(_written_with(calls[0], "lineage_record.v1.avsc"), LineageRecord)
    assert old == dataclasses.replace(calls[0], api="chat.completions")
    new = codec.decode_as(codec.encode(calls[1]), LineageRecord)
    assert new.api == "embeddings"
    history = [builders.funding(seq=1, occurred_at=builders.T0 - 1), old, new]
    rebuilt = rebuild_from_events(history, builders.T0 + 10).wallets[builders.WALLET]
    assert rebuilt.spent_nanousd == calls[0].cost_nanousd + calls[1].cost_nanousd > 0


def test_v1_and_v2_lineage_records_decode_with_no_token_kinds_and_replay_like_v3() -> None:
    from replay.state import rebuild_from_events

    calls = [
        dataclasses.replace(
            builders.call(seq=seq, occurred_at=builders.T0 + seq),
            cached_prompt_tokens=40,
            cache_write_tokens=3,
            reasoning_tokens=7,
        )
        for seq in (1, 2, 3)
    ]
    v1 = codec.decode_as(_written_with(calls[0], "lineage_record.v1.avsc"), LineageRecord)
    v2 = codec.decode_as(_written_with(calls[1], "lineage_record.v2.avsc"), LineageRecord)
    v3 = codec.decode_as(codec.encode(calls[2]), LineageRecord)
    for old, call in ((v1, calls[0]), (v2, calls[1])):
        assert old == dataclasses.replace(
            call, cached_prompt_tokens=0, cache_write_tokens=0, reasoning_tokens=0
        )
    assert v3 == calls[2]
    history = [builders.funding(seq=1, occurred_at=builders.T0 - 1), v1, v2, v3]
    rebuilt = rebuild_from_events(history, builders.T0 + 10).wallets[builders.WALLET]
    assert rebuilt.spent_nanousd == sum(c.cost_nanousd for c in calls) > 0
