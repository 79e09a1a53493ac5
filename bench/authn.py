"""Record authentication's cost per record: signing at a producer and verifying at a
consumer, against what a gateway call and a worker fold cost without it.

    python bench/authn.py [--records 20000] [--producers 16]

Prints one JSON line: µs per record to sign (HMAC-SHA256 of the record bytes, and the
header), to verify bytes alone (allow-lists, envelope read, HMAC; keyed MACs cached),
what verifying adds to the decode a consumer does anyway, to verify with a cold key
cache (one HKDF per new producer), and to sign a checkpoint (Ed25519);
then the share of the gateway's CPU per call (about 5 ms, docs/performance-gateway.md) and of the
worker's CPU per folded record (about 125 µs, docs/performance.md) that signing /
verifying adds. The bars of issue 11: at most 5 % of the gateway's CPU per call, at most
10 % off the fold rate.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from bench.common import realistic_record
from schemas import authn, codec
from schemas.authn import Keyring, SignedChain, Verifier
from schemas.publisher import checkpoint_of
from schemas.topics import LINEAGE

GATEWAY_CPU_PER_CALL_US = 5_000.0
"""docs/performance-gateway.md: about 5 ms of CPU per call in one gateway process (lineage on)."""
WORKER_CPU_PER_RECORD_US = 125.0
"""docs/performance.md: the worker's CPU per folded lineage record (124-130 µs)."""


def per_record_us(work: object, count: int, repeat: int = 3) -> float:
    """Best of `repeat` runs of `work()` (which handles `count` records), µs a record."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - began)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(11)
    keyring = Keyring([bytes(rng.getrandbits(8) for _ in range(32))])
    chains = [SignedChain(f"gateway-{i:04x}", "gateway", keyring) for i in range(args.producers)]
    values = [
        chains[i % len(chains)].seal_encoded(realistic_record(rng, 1_700_000_000_000 + i))[1]
        for i in range(args.records)
    ]
    credentials = [chains[i % len(chains)].credential for i in range(args.records)]
    headers = [c.header(v) for c, v in zip(credentials, values, strict=True)]  # type: ignore[union-attr]
    verifier = Verifier(keyring)

    def sign() -> None:
        for credential, value in zip(credentials, values, strict=True):
            credential.header(value)  # type: ignore[union-attr]

    def verify() -> None:
        for value, header in zip(values, headers, strict=True):
            verifier.check(LINEAGE.name, value, header)

    def verify_cold() -> None:
        cold = Verifier(keyring)
        for value, header in zip(values[: args.producers], headers, strict=False):
            cold.check(LINEAGE.name, value, header)

    def decode() -> None:
        for value in values:
            codec.decode(value)

    header_lists = [[(authn.HEADER, header)] for header in headers]

    def decode_verified() -> None:
        # What a consumer runs: the decode it needs anyway, with the check around it.
        for value, header_list in zip(values, header_lists, strict=True):
            verifier.decode(LINEAGE.name, value, header_list)

    sign_us = per_record_us(sign, args.records)
    verify_us = per_record_us(verify, args.records)
    cold_us = per_record_us(verify_cold, args.producers)
    decode_us = per_record_us(decode, args.records)
    decode_verified_us = per_record_us(decode_verified, args.records)
    consumer_us = max(decode_verified_us - decode_us, 0.0)
    chain = chains[0]
    checkpoint_us = per_record_us(
        lambda: [chain.sign_checkpoint(checkpoint_of(chain, "bench")) for _ in range(200)], 200
    )
    figures = {
        "records": args.records,
        "mean_record_bytes": round(sum(map(len, values)) / len(values)),
        "sign_us": round(sign_us, 2),
        "verify_us": round(verify_us, 2),
        "verify_cold_key_us": round(cold_us, 1),
        "checkpoint_sign_us": round(checkpoint_us, 1),
        "decode_us": round(decode_us, 2),
        "decode_and_verify_us": round(decode_verified_us, 2),
        "consumer_added_us": round(consumer_us, 2),
        "gateway_cpu_share_pct": round(100 * sign_us / GATEWAY_CPU_PER_CALL_US, 3),
        # The worker's intake verifies each lineage record once, around the decode it
        # does anyway: a fold rate of 1 / (125 µs + added) against 1 / 125 µs.
        "worker_fold_rate_loss_pct": round(
            100 * (1 - WORKER_CPU_PER_RECORD_US / (WORKER_CPU_PER_RECORD_US + consumer_us)), 2
        ),
        "bars": {"gateway_cpu_share_pct_max": 5, "worker_fold_rate_loss_pct_max": 10},
    }
    figures["met"] = (
        figures["gateway_cpu_share_pct"] <= 5 and figures["worker_fold_rate_loss_pct"] <= 10
    )
    print(json.dumps(figures))
    assert authn.VERSION == "v1"


if __name__ == "__main__":
    main()
