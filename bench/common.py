"""Helpers of the benchmarks: percentiles, realistic sealed lineage records, Kafka
produce/consume, CPU and profile read-outs, clean interruption."""

from __future__ import annotations

import asyncio
import cProfile
import functools
import hashlib
import math
import os
import pstats
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from schemas import authn, codec  # noqa: E402
from schemas.codec import HashChain  # noqa: E402
from schemas.ids import uuid7  # noqa: E402
from schemas.records import GENESIS_HASH, Attempt, Guardrail, LineageRecord  # noqa: E402


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: float, digits: int = 1) -> float | None:
    """A figure for the JSON line (None instead of NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value, digits)


def interrupt_on_sigint_and_sigterm() -> None:
    """Ctrl-C and SIGTERM both unwind like Ctrl-C, so every `finally` stops what it started.

    SIGINT gets Python's default handler back even when the shell started us with it
    ignored (a background job), so that asyncio's runner can cancel its main task cleanly;
    SIGTERM is forwarded to whatever handles SIGINT at that moment."""
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def _forward(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not _forward:
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _forward)


# --- realistic lineage records -----------------------------------------------------------

TENANTS = tuple(f"tenant-{i}" for i in range(8))
TEAMS = ("search", "support", "finops", "research")
MODELS = (
    # (model, provider, prompt price, completion price) — the gateway's catalogue prices
    ("sim-small", "sim", 150, 600),
    ("sim-large", "sim", 2_500, 10_000),
    ("gpt-4o-mini", "openai", 150, 600),
    ("gpt-4o", "openai", 2_500, 10_000),
)
GUARDRAILS = ("pii", "secrets", "toxicity", "prompt-injection")


def realistic_record(rng: random.Random, occurred_at: int) -> LineageRecord:
    """A lineage record shaped like the gateway's: mostly allowed calls, some streamed,
    some with a fallback attempt or a guardrail, a few rejected or failed."""
    tenant = rng.choice(TENANTS)
    team = rng.choice(TEAMS)
    model, provider, p_price, c_price = rng.choice(MODELS)
    stream = rng.random() < 0.3
    draw = rng.random()
    attempts: list[Attempt] = []
    guardrails: tuple[Guardrail, ...] = ()
    ttft: float | None = None
    error_code: str | None = None
    prompt_tokens = completion_tokens = 0
    usage_source = "none"
    response_sha: str | None = None
    if draw < 0.03:  # rejected before any upstream attempt
        decision = "rejected"
        status, error_code = rng.choice(
            ((401, "invalid_api_key"), (402, "budget_exhausted"), (404, "model_not_found"))
        )
    elif draw < 0.05:  # every attempt failed
        decision, status, error_code = "failed", 502, "upstream_error"
        attempts.append(Attempt(provider, model, 503, rng.uniform(50, 900), "http_5xx"))
    else:
        decision, status = "allowed", 200
        if rng.random() < 0.05:  # fallback trail: first target failed
            attempts.append(Attempt("openai", "gpt-4o", 429, rng.uniform(20, 300), "rate_limited"))
        attempts.append(Attempt(provider, model, 200, rng.uniform(80, 2_500), None))
        prompt_tokens = rng.randint(10, 4_000)
        completion_tokens = rng.randint(1, 1_000)
        usage_source = "reported" if rng.random() < 0.95 else "estimated"
        response_sha = rng.randbytes(32).hex()
        if stream:
            ttft = rng.uniform(40, 600)
        if rng.random() < 0.04:
            guardrails = (Guardrail(rng.choice(GUARDRAILS), rng.choice(("allow", "redact"))),)
    upstream_ms = sum(a.latency_ms for a in attempts)
    overhead = rng.uniform(0.3, 4.0)
    cost = prompt_tokens * p_price + completion_tokens * c_price
    return LineageRecord(
        event_id=uuid7(occurred_at),
        event_type=LineageRecord.event_type_name,
        occurred_at=occurred_at,
        tenant_id=tenant,
        trace_id=rng.randbytes(16).hex(),
        span_id=rng.randbytes(8).hex(),
        parent_span_id=rng.randbytes(8).hex() if rng.random() < 0.5 else None,
        team_id=team,
        user_id=f"user-{rng.randint(1, 500)}" if rng.random() < 0.6 else None,
        key_id=f"key_{tenant[-1]}{team[:3]}{rng.randint(1, 3)}",
        wallet_id=f"{tenant}/{team}",
        region="local",
        model_requested=model,
        model_selected=model,
        provider=provider,
        selection_reason="catalogue" if len(attempts) < 2 else "fallback",
        attempts=tuple(attempts),
        policies_applied=("auth", "model-access", "budget"),
        guardrails_triggered=guardrails,
        decision=decision,  # type: ignore[arg-type]
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usage_source=usage_source,  # type: ignore[arg-type]
        cost_nanousd=cost,
        reserved_nanousd=cost + rng.randint(0, 4_096) * c_price if decision == "allowed" else 0,
        latency_ms=upstream_ms + overhead,
        ttft_ms=ttft,
        gateway_overhead_ms=overhead,
        http_status=status,
        error_code=error_code,
        stream=stream,
        request_sha256=rng.randbytes(32).hex(),
        response_sha256=response_sha,
    )


def sealed_records(
    producer: str, count: int, start_ms: int, seed: int, shapes: int = 256
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of `count` records of one producer, sealed into its hash chain
    exactly as HashChain.seal would and single-object encoded, as a gateway produces them.

    HashChain.seal plus codec.encode cost ~0.25 ms a record (dataclass copies and three
    Avro encodings). Here `shapes` realistic records are encoded once; each record reuses
    one's bytes and changes only event_id, occurred_at, trace/span ids and the chain fields
    (the body's leading fields), so a record costs a few microseconds.
    `check_like_hash_chain` proves the bytes identical to HashChain's."""
    rng = random.Random(seed)
    header = codec.MAGIC + codec.schema_for(LineageRecord).fingerprint
    event_type = codec.encode_string(LineageRecord.event_type_name)
    after_tenant = codec.encode_string(producer)
    templates = []
    for _ in range(shapes):
        record = realistic_record(rng, start_ms)
        ids = codec.encode_string(record.trace_id) + codec.encode_string(record.span_id)
        envelope = b"".join(
            (
                codec.encode_string(record.event_id),
                event_type,
                codec.encode_long(record.occurred_at),
                codec.encode_string(record.tenant_id),
                codec.encode_string(""),
                codec.encode_long(0),
                codec.encode_string(GENESIS_HASH),
                codec.encode_string(""),
                ids,
            )
        )
        body = codec.encode_body(record)
        assert body.startswith(envelope), "lineage fields moved: update sealed_records"
        templates.append(
            (record.tenant_id, codec.encode_string(record.tenant_id), body[len(envelope) :])
        )
    out = []
    prev = GENESIS_HASH
    for i in range(count):
        tenant, tenant_avro, rest = templates[i % shapes]
        occurred_at = start_ms + i // 4
        head = b"".join(
            (
                b"\x48",  # uuid strings are 36 characters: zigzag(36)
                uuid7(occurred_at).encode(),
                event_type,
                codec.encode_long(occurred_at),
                tenant_avro,
                after_tenant,
                codec.encode_long(i + 1),
                b"\x80\x01",  # hashes are 64 hex characters: zigzag(64)
                prev.encode(),
            )
        )
        tail = b"".join(
            (b"\x40", rng.randbytes(16).hex().encode(), b"\x20", rng.randbytes(8).hex().encode())
        )
        unsealed = head + b"\x00" + tail + rest  # record_hash "" while hashing
        prev = hashlib.sha256(bytes.fromhex(prev) + unsealed).hexdigest()
        out.append((tenant.encode(), header + head + b"\x80\x01" + prev.encode() + tail + rest))
    return out


def check_like_hash_chain(producer: str, values: Sequence[bytes]) -> None:
    """Re-seal the first records with HashChain; their bytes must be the same."""
    chain = HashChain(producer)
    for value in values:
        record = codec.decode(value)
        fresh = replace(record, producer_id="", seq=0, prev_hash=GENESIS_HASH, record_hash="")
        assert codec.encode(chain.seal(fresh)) == value, "sealed_records differs from HashChain"


def bench_records(rows: int, producers: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of `rows` sealed records from `producers` gateways, interleaved in
    slices of 1,000 as concurrent gateways would send them."""
    start_ms = time.time_ns() // 1_000_000 - rows
    chains = []
    for p in range(producers):
        count = rows // producers + (1 if p < rows % producers else 0)
        chains.append(sealed_records(f"gateway-bench{p}", count, start_ms, 1_000 + p))
        check_like_hash_chain(f"gateway-bench{p}", [value for _, value in chains[-1][:200]])
    step = 1_000
    longest = max(len(chain) for chain in chains)
    return [r for at in range(0, longest, step) for chain in chains for r in chain[at : at + step]]


# --- plumbing ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@functools.cache
def _credential(producer_id: str) -> authn.Credential:
    keyring = authn.installed()
    assert keyring is not None, "auth_headers checked"
    return keyring.credential(authn.role_of(producer_id), producer_id)


def auth_headers(value: bytes) -> list[tuple[str, bytes]]:
    """The headers its producer would sign a record with, under the process's keyring
    (install the bench stack's: consumers refuse unsigned records); none without one."""
    if authn.installed() is None:
        return []
    return _credential(authn.producer_id_of(value)).headers(value)


async def produce(bootstrap: str, records: list[tuple[bytes, bytes]]) -> float:
    """Send every record (acks=all), signed as its producer would; seconds taken (the
    signing included, as a gateway's publisher does it)."""
    from aiokafka import AIOKafkaProducer

    from schemas.topics import LINEAGE

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        client_id="bench-producer",
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(LINEAGE.name, value, key=key, headers=auth_headers(value))
            for key, value in records
        ]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def consume_only(bootstrap: str, rows: int) -> float:
    """Baseline: the same topic read with a plain aiokafka consumer (no group); seconds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.topics import LINEAGE

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        client_id="bench-consumer",
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(LINEAGE.name, p) for p in consumer.partitions_for_topic(LINEAGE.name)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        seen = 0
        while seen < rows:
            batches = await consumer.getmany(timeout_ms=100, max_records=50_000)
            seen += sum(len(m) for m in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def consume_only_librdkafka(bootstrap: str, rows: int) -> float:
    """Baseline: the same topic read with the sink's client, librdkafka (no group, each
    record's value, headers and offset read as the sink reads them); seconds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as KafkaPartition

    from schemas.topics import LINEAGE

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-consumer",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "check.crcs": True,
        }
    )
    try:
        partitions = consumer.list_topics(LINEAGE.name, timeout=10).topics[LINEAGE.name].partitions
        consumer.assign([KafkaPartition(LINEAGE.name, p, OFFSET_BEGINNING) for p in partitions])
        started = time.perf_counter()
        seen = 0
        while seen < rows:
            for message in consumer.consume(5_000, 0.1):
                if message.error() is None:
                    message.value(), message.headers(), message.offset()
                    seen += 1
        return time.perf_counter() - started
    finally:
        consumer.close()


IDLE_FUNCTIONS = ("SimpleQueue' objects", "(_worker)", "thread.py", "threading.py")


def top_functions(profile: cProfile.Profile | str, limit: int) -> list[str]:
    """The profile's top functions by own time (waiting for work left out); `profile` is a
    live profile or the path of one dumped to a file."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in sorted(
        stats.items(), key=lambda item: item[1][2], reverse=True
    ):
        short = filename.split("site-packages/")[-1].replace(str(REPO_ROOT) + "/", "")
        label = f"{short}:{line}({name})" if line else name
        if not any(idle in label for idle in IDLE_FUNCTIONS) and not label.startswith("bench/"):
            rows.append(f"{tottime:8.3f} {cumtime:8.3f} {ncalls:>9}  {label}")
        if len(rows) == limit:
            break
    return rows


def cpu_count() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0))
