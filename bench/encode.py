"""What encoding one lineage record costs, in-process: the record as fastavro's plain dict
(`Event.to_avro`) and its Avro body (`schemas.codec.encode_body`), each per record, best
of several repetitions. Every gateway call encodes one; the processors encode what they
publish.

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
    figures = {
        "to_avro_us": per_record_us(record.to_avro, args.records),
        "encode_body_us": per_record_us(lambda: codec.encode_body(record), args.records),
    }
    for name, value in figures.items():
        print(f"{name:<16} {value:8.2f} µs per record")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
