"""The policy chain on one call: every step of a full pack, PII detection included, on a
4 KB prompt. Bar: p99 <= 0.5 ms. Baseline in the same run: parsing the same request
body with orjson, the least any gateway does per call.

    .venv/bin/python bench/policy.py [--iterations N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import orjson  # noqa: E402

from bench.common import percentile  # noqa: E402
from gateway.policy.chain import CallFacts, evaluate  # noqa: E402
from gateway.policy.pack import parse_pack, template_source  # noqa: E402

BAR_P99_MS = 0.5

PROSE = (
    "Our quarterly review covers onboarding, retention and the support backlog. The team "
    "closed most tickets within a day, and the remaining ones wait on a vendor fix. "
)
PII = (
    " Contact jane.doe@example.com or +44 20 7946 0958 about card 4111 1111 1111 1111,"
    " IBAN GB82 WEST 1234 5698 7654 32 and SSN 123-45-6789."
)


def prompt_4kb() -> str:
    """About 4 KB of ordinary prose with a handful of personal data items in it."""
    text = ""
    while len(text) < 4_096 - len(PII):
        text += PROSE
    middle = len(text) // 2
    return text[:middle] + PII + text[middle:]


def measure_ms(run: object, iterations: int) -> list[float]:
    timings = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        run()  # type: ignore[operator]
        timings.append((time.perf_counter_ns() - started) / 1e6)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5_000)
    args = parser.parse_args()

    # Every step of the chain, each doing its full work (the customer-facing template
    # has rbac, pii-detector with redaction, content-filter, human-oversight, cost-limit,
    # audit-logger).
    pack = parse_pack(template_source("customer-facing"))
    text = prompt_4kb()
    body = orjson.dumps(
        {"model": "sim-small", "messages": [{"role": "user", "content": text}], "user": "u-1"}
    )
    facts = CallFacts(
        team_id="support",
        role="developer",
        user_id="u-1",
        messages=[{"role": "user", "content": text}],
        team_month_spent_nanousd=0,
        estimated_cost_nanousd=1_000_000,
    )
    verdict = evaluate(pack, facts)
    assert verdict.refusal is None and verdict.triggered, "the prompt triggers redaction"
    assert "[REDACTED:CARD]" in verdict.messages[0]["content"]

    measure_ms(lambda: evaluate(pack, facts), 500)  # warm up
    chain = measure_ms(lambda: evaluate(pack, facts), args.iterations)
    baseline = measure_ms(lambda: orjson.loads(body), args.iterations)

    p50, p99 = percentile(chain, 50), percentile(chain, 99)
    base_p50 = percentile(baseline, 50)
    print(f"prompt: {len(text.encode())} bytes, steps: {', '.join(verdict.applied)}")
    print(f"policy chain   p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {max(chain):.3f} ms")
    print(f"baseline (orjson.loads of the body) p50 {base_p50:.4f} ms")
    print(f"ratio chain/baseline at p50: {p50 / base_p50:.0f}x")
    met = p99 <= BAR_P99_MS
    print(f"bar p99 <= {BAR_P99_MS} ms: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
