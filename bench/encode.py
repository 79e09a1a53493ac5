"""What encoding one lineage record costs, in-process: the record as fastavro's plain dict
(`Event.to_avro`), its Avro body by the compiled writer (`schemas.codec.encode_body`,
schemas/avro_writer.py) and by fastavro (`codec.fastavro_body`), and sealing it into a
chain (`HashChain.seal_encoded`), each per record, best of several repetitions, with the
compiled writer's ratio to fastavro. Every gateway call seals one; the processors seal
what they publish.

Run from the repository root:  .venv/bin/python -m bench.encode [--records N]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas import codec
from tests.unit.builders import call

REPEATS = 5


def per_record_us(run: Callable[[], object], records: int) -> float:
    """Microseconds per call of `run`, best of REPEATS runs of `records` calls."""
    best_s = min(timeit.repeat(run, number=records, repeat=REPEATS))
    return round(best_s / records * 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per repetition")
    args = parser.parse_args()
    record = call()
    chain = codec.HashChain("gateway-bench-encode")
    figures = {
        "to_avro_us": per_record_us(record.to_avro, args.records),
        "encode_body_us": per_record_us(lambda: codec.encode_body(record), args.records),
        "fastavro_body_us": per_record_us(lambda: codec.fastavro_body(record), args.records),
        "seal_encoded_us": per_record_us(lambda: chain.seal_encoded(record), args.records),
    }
    figures["ratio_encode_body_to_fastavro"] = round(
        figures["encode_body_us"] / figures["fastavro_body_us"], 3
    )
    for name, value in figures.items():
        unit = "" if name.startswith("ratio") else " µs per record"
        print(f"{name:<30} {value:8.2f}{unit}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
