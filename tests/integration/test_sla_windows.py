"""SLA windows on the running stack: calls through the gateway (the `openai` SDK) become
one-minute `sla_windows` rows and `sla.breached` alerts that add up to the lineage table.

The sim provider fails a reproducible 30 % of its calls (503, no retry, no fallback, a
breaker that never opens), so minutes mix successes and upstream errors; a key with no
money (402) and a key limited to one call a minute (429) add callers' faults that were
routed to a provider; an unknown model (404) and an unknown key (401) are refused before
routing and must not be counted. Windows close 2 s after their minute ends.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from streams.sla import snapshot
from streams.sla.agent import SNAPSHOT_DIR
from tests.integration.stack import RunningStack, running_stack, stack_environ, wait_for

TENANT = "sla-acme"
STOP_TENANT = "sla-stop"
GRACE_MS = 2_000
MODEL = "sim-small"
# Classification of a lineage row in SQL, as streams.sla.logic.outcome_of does it.
FAULT_CODES = "('upstream_error', 'circuit_open', 'overloaded')"
IS_FAULT_CODE = f"ifNull(error_code, '') IN {FAULT_CODES}"
IS_OK = f"(http_status BETWEEN 200 AND 399 AND NOT {IS_FAULT_CODE})"
IS_CALLER_FAULT = (
    f"(http_status BETWEEN 400 AND 499 AND NOT {IS_FAULT_CODE} "
    "AND NOT (http_status = 429 AND ifNull(error_code, '') != 'rate_limited'))"
)
IS_ERROR = f"(NOT {IS_OK} AND NOT {IS_CALLER_FAULT})"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = stack_environ(
        tmp_path_factory.mktemp("govledger-sla"),
        GOVLEDGER_SIM_ERROR_RATE="0.3",
        GOVLEDGER_UPSTREAM_RETRIES="0",
        GOVLEDGER_BREAKER_FAILURE_THRESHOLD="100000",
        GOVLEDGER_SLA_GRACE_MS=str(GRACE_MS),
        GOVLEDGER_SLA_TICK_S="0.5",
    )
    with running_stack(env) as running:
        yield running


def status_of(call: Callable[[], Any]) -> int:
    """The HTTP status the caller saw."""
    try:
        call()
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def funded_client(stack: RunningStack, team: str, tenant: str, **key: Any) -> openai.OpenAI:
    stack.fund(team, "5", tenant=tenant)
    secret = stack.create_key(team, tenant=tenant, **key)["key"]
    # The stream worker folds the funding: it is consuming, so no minute is missed.
    wait_for(lambda: stack.balance_nanousd(team, tenant=tenant) == 5_000_000_000, timeout_s=60)
    return openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0)


def ask(client: openai.OpenAI, i: int, *, stream: bool = False) -> Callable[[], Any]:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"question {i}: what is an SLA?"}
    ]

    def call() -> Any:
        if not stream:
            return client.chat.completions.create(model=MODEL, messages=messages)
        return list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))

    return call


def one(stack: RunningStack, query: str) -> list[str]:
    (row,) = stack.sql(query)
    return row


# A soak: it waits for whole minute windows to close (runs in `make test`; -m "not soak"
# deselects it).
@pytest.mark.soak
def test_calls_become_minute_windows_that_add_up_to_the_lineage(stack: RunningStack) -> None:
    client = funded_client(stack, "app", TENANT)
    broke = openai.OpenAI(
        base_url=stack.base_url,
        api_key=stack.create_key("broke", tenant=TENANT)["key"],
        max_retries=0,
    )
    throttled = openai.OpenAI(
        base_url=stack.base_url,
        api_key=stack.create_key("app", tenant=TENANT, requests_per_minute=1)["key"],
        max_retries=0,
    )
    stranger = openai.OpenAI(base_url=stack.base_url, api_key="gk_live_nobody", max_retries=0)

    routed = [status_of(ask(client, i)) for i in range(40)]
    routed += [status_of(ask(client, 100 + i, stream=True)) for i in range(8)]
    routed += [status_of(ask(broke, 200 + i)) for i in range(3)]
    routed += [status_of(ask(throttled, 300 + i)) for i in range(3)]
    unknown_model = status_of(
        lambda: client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    )
    unknown_key = status_of(ask(stranger, 400))
    assert (unknown_model, unknown_key) == (404, 401)
    failures = sum(s >= 500 for s in routed)
    caller_faults = sum(400 <= s < 500 for s in routed)
    assert 0 < failures < 48, routed  # sim fails about 30 % of calls, reproducibly
    assert routed.count(402) == 3 and routed.count(429) >= 2, routed
    assert caller_faults == routed.count(402) + routed.count(429)
    assert routed.count(200) + failures + caller_faults == len(routed) == 54

    # Every call is in the lineage; the two refused before routing have no provider.
    wait_for(
        lambda: one(stack, f"SELECT count() FROM lineage WHERE tenant_id = '{TENANT}'") == ["55"]
    )
    assert one(
        stack, f"SELECT count() FROM lineage WHERE tenant_id = '{TENANT}' AND provider = ''"
    ) == ["1"]  # the unknown model; the unknown key has no tenant at all

    # The minutes close 2 s after they end, then reach the store.
    totals = (
        "SELECT sum(requests), sum(errors), sum(caller_faults), sum(cost_nanousd), "
        f"sum(prompt_tokens), sum(completion_tokens) FROM sla_windows WHERE tenant_id = '{TENANT}'"
    )
    windows = wait_for(
        lambda: (row := one(stack, totals))[0] == str(len(routed)) and row,
        timeout_s=150,
        every_s=0.5,
    )
    lineage = one(
        stack,
        f"SELECT count(), countIf({IS_ERROR}), countIf({IS_CALLER_FAULT}), sum(cost_nanousd), "
        "sum(prompt_tokens), sum(completion_tokens) FROM lineage "
        f"WHERE tenant_id = '{TENANT}' AND provider != ''",
    )
    assert windows == lineage
    assert windows[:3] == [str(len(routed)), str(failures), str(caller_faults)]
    assert int(windows[3]) > 0
    assert one(
        stack, f"SELECT DISTINCT provider, model FROM sla_windows WHERE tenant_id = '{TENANT}'"
    ) == ["sim", MODEL]

    # Summing the minutes (and their revisions) gives the lineage's minutes exactly:
    # counts, tokens, cost, and the sketches' counts and sums of the eligible calls.
    by_minute = stack.sql(
        "SELECT provider, model, toUnixTimestamp64Milli(window_start) AS minute, "
        "sum(requests), sum(errors), sum(caller_faults), sum(prompt_tokens), "
        "sum(completion_tokens), sum(cost_nanousd), "
        "sum(tupleElement(latency_ms, 'zero_count') "
        "+ arraySum(tupleElement(latency_ms, 'bucket_counts'))), "
        "sum(tupleElement(latency_ms, 'sum_thousandths')), "
        "sum(tupleElement(gateway_overhead_ms, 'sum_thousandths')), "
        "sum(tupleElement(ttft_ms, 'zero_count') "
        "+ arraySum(tupleElement(ttft_ms, 'bucket_counts'))) "
        f"FROM sla_windows WHERE tenant_id = '{TENANT}' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    from_lineage = stack.sql(
        "SELECT provider, model_selected, "
        "intDiv(toUnixTimestamp64Milli(occurred_at), 60000) * 60000 AS minute, "
        f"count(), countIf({IS_ERROR}), countIf({IS_CALLER_FAULT}), sum(prompt_tokens), "
        "sum(completion_tokens), sum(cost_nanousd), "
        f"countIf(NOT {IS_CALLER_FAULT}), "
        f"sumIf(toInt64(roundBankers(latency_ms * 1000)), NOT {IS_CALLER_FAULT}), "
        f"sumIf(toInt64(roundBankers(gateway_overhead_ms * 1000)), NOT {IS_CALLER_FAULT}), "
        f"countIf(ttft_ms IS NOT NULL AND NOT {IS_CALLER_FAULT}) "
        f"FROM lineage WHERE tenant_id = '{TENANT}' AND provider != '' "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    assert by_minute == from_lineage
    assert sum(int(row[9]) for row in by_minute) == len(routed) - caller_faults
    assert sum(int(row[12]) for row in by_minute) == routed[40:48].count(200)

    # Each minute as closed (revision 0) with an upstream error is below 99.9 %: an
    # availability alert for the tenant, observed = 1 - errors / eligible.
    closed = stack.sql(
        "SELECT toUnixTimestamp64Milli(window_start), requests, errors, caller_faults "
        f"FROM sla_windows WHERE tenant_id = '{TENANT}' AND revision = 0 AND errors > 0"
    )
    assert closed, "no minute with an upstream error was closed in time"
    for start, requests, errors, faults in closed:
        alert = wait_for(
            functools.partial(
                stack.sql,
                "SELECT observed, target, toUnixTimestamp64Milli(window_end) FROM alerts "
                f"WHERE event_type = 'sla.breached' AND tenant_id = '{TENANT}' "
                f"AND provider = 'sim' AND model = '{MODEL}' AND metric = 'availability' "
                f"AND toUnixTimestamp64Milli(window_start) = {start}",
            )
        )
        ((observed, target, end),) = alert
        assert float(observed) == pytest.approx(1 - int(errors) / (int(requests) - int(faults)))
        assert float(observed) < float(target) == 0.999
        assert int(end) == int(start) + 60_000

    # The sinks' stored notices reached the worker: its outboxes let the stored windows go
    # (they would otherwise wait there, sent again every GOVLEDGER_SLA_RESEND_AFTER_S).
    wait_for(lambda: unconfirmed_sla_records(stack) == 0, timeout_s=15, every_s=0.25)


def unconfirmed_sla_records(stack: RunningStack) -> int:
    """Records in the SLA processor's outboxes, as its snapshot files hold them."""
    folder = Path(stack.env["GOVLEDGER_DATA_DIR"]) / SNAPSHOT_DIR
    return sum(len(snapshot.decode(path.read_bytes()).outbox) for path in folder.glob("*.json"))


def test_a_graceful_stop_publishes_the_minute_in_progress(stack: RunningStack) -> None:
    """Last in the module: it stops the stream worker. The windows of a minute that has
    not ended yet reach the store only if the worker flushes them as it stops."""
    if time.time() % 60 > 25:  # leave the minute time to be asked, folded and stopped in
        time.sleep(60.5 - time.time() % 60)
    client = funded_client(stack, "late", STOP_TENANT)
    statuses = [status_of(ask(client, i)) for i in range(10)]
    wait_for(
        lambda: (
            one(stack, f"SELECT count() FROM lineage WHERE tenant_id = '{STOP_TENANT}'") == ["10"]
        )
    )
    time.sleep(3)  # the worker folds within its 0.5 s batches
    (worker,) = [c for c in stack.stack.children if c.name == "worker"]
    stopped_at_ms = int(time.time() * 1000)
    worker.process.terminate()
    assert worker.process.wait(timeout=30) == 0

    rows = wait_for(
        lambda: stack.sql(
            "SELECT sum(requests), sum(errors), max(toUnixTimestamp64Milli(window_end)) "
            f"FROM sla_windows WHERE tenant_id = '{STOP_TENANT}' HAVING count() > 0"
        ),
        timeout_s=30,
    )
    ((requests, errors, last_end),) = rows
    assert (int(requests), int(errors)) == (10, sum(s >= 500 for s in statuses))
    # Not closed by the timer: the minute had not ended + grace when the worker stopped.
    assert int(last_end) + GRACE_MS > stopped_at_ms
