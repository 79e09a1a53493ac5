"""Kill test (issue 4, item 6; issue 13, item 4): SIGKILL the stream worker at random
points while it folds N lineage records, restart it each time; afterwards every wallet
equals its funding minus the sum of its costs in ClickHouse, to the nano-dollar, every
quota threshold alerted exactly once, and the SLA minute windows (every revision) add up
to the lineage rows of their minute exactly, though the windows were open at the kills.
Meanwhile records are resent as a producer's outbox resends them (the same signed bytes,
interleaved with newer records and long after): they change no balance, window or alert.

Real parts: Tansu, the sink (`python -m govledger sink`, chDB) and the worker
(`python -m govledger worker`) as subprocesses. Gateways are played by three producers
that seal their records into their hash chains exactly as a gateway does; an admin
producer publishes fundings and budgets on the control topic.

    KILL_TEST_EVENTS=5000 .venv/bin/pytest -s tests/integration/test_worker_kill.py

Knobs (environment; not GOVLEDGER_*: this process loads settings, which refuse unknown
GOVLEDGER_ variables): KILL_TEST_EVENTS (lineage records, default 100,000),
KILL_TEST_PUBLISH_S (the calls are published at an even rate over this long,
default 70 s: the worker is killed while traffic flows; 60 s with kills after 1-6 s gave
4 kills on a loaded 2-core machine, fewer than KILL_TEST_MIN_KILLS),
KILL_TEST_KILL_AFTER_MIN_S and _MAX_S (a restarted worker is killed after a
random 1-4 s of processing, while the calls are published and then until
KILL_TEST_MIN_KILLS kills are done or every entry is applied: a backlog left after
that is folded without kills, since each kill costs a restart and a refold, minutes on a
loaded machine; one more kill lands while a restarted worker is still starting),
KILL_TEST_MIN_KILLS (fewest kills for the run to count, default 5),
KILL_TEST_SEED (kill points, traffic, costs and budgets; printed, so a failure
reproduces), KILL_TEST_TIMEOUT_S (whole test), KILL_TEST_RESENDS
(lineage records sent again, default 300).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from govledger.broker import start_tansu
from govledger.runtime import wait_for_http
from schemas.kafka import ensure_topics, make_producer
from schemas.topics import CONTROL, LINEAGE, WALLET_STATE
from streams.quotas.logic import decode_quota
from tests.integration.stack import free_port
from tests.integration.worker_kill_parts import (
    APP_ID,
    PARTITIONS,
    Follower,
    Sql,
    Workload,
    auth_headers,
    build_workload,
    child_env,
    group_lag,
    printing_log_tail_on_failure,
    processes,
    quotas_table,
    wait_until,
)

# A soak: minutes of kills and restarts. It runs in `make test` and CI; deselect it
# locally with -m "not soak".
pytestmark = [pytest.mark.integration, pytest.mark.soak]

EVENTS = int(os.environ.get("KILL_TEST_EVENTS", "100000"))
MIN_KILLS = int(os.environ.get("KILL_TEST_MIN_KILLS", "5"))
PUBLISH_S = float(os.environ.get("KILL_TEST_PUBLISH_S", "70"))
KILL_AFTER_MIN_S = float(os.environ.get("KILL_TEST_KILL_AFTER_MIN_S", "1"))
KILL_AFTER_MAX_S = float(os.environ.get("KILL_TEST_KILL_AFTER_MAX_S", "4"))
SEED = int(os.environ.get("KILL_TEST_SEED", "4006"))
TIMEOUT_S = float(os.environ.get("KILL_TEST_TIMEOUT_S", "1800"))
RESENDS = int(os.environ.get("KILL_TEST_RESENDS", "300"))
# Windows close 5 s after their minute: the calls' minute closes while the worker is
# being killed, and the calls read after that come as corrections (revisions 1, 2 ...).
SLA_GRACE_MS = 5_000
QUOTA_INPUTS = {CONTROL.name, WALLET_STATE.name, f"{APP_ID}-quota-budgets"}
# --- the test -----------------------------------------------------------------------------


@dataclasses.dataclass
class Kill:
    number: int
    at_s: float
    applied: int
    total: int
    when: str


@pytest.mark.timeout(TIMEOUT_S)
async def test_worker_killed_at_random_points_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    print(
        f"\n[kill-test] seed {SEED}, {EVENTS} lineage records published over {PUBLISH_S:.0f} s, "
        f"kills after {KILL_AFTER_MIN_S:g}-{KILL_AFTER_MAX_S:g} s of processing"
    )
    token = "kill-test-" + rng.randbytes(8).hex()
    # Sealed in a thread while the broker, the sink and the worker start (processes of
    # their own): the two take about as long, so the test waits for one, not both.
    building = asyncio.create_task(asyncio.to_thread(build_workload, rng, EVENTS, RESENDS))

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    query_port = free_port()
    broker = start_tansu(port, (tmp_path / "tansu.log").open("ab"))
    follower = Follower(bootstrap)
    sql = Sql(f"http://127.0.0.1:{query_port}", token)
    kills: list[Kill] = []
    try:
        with processes(tmp_path) as children, printing_log_tail_on_failure(tmp_path / "worker.log"):
            await ensure_topics(bootstrap, PARTITIONS)
            sink = children.spawn(
                "sink",
                child_env(
                    tmp_path / "sink",
                    bootstrap,
                    GOVLEDGER_QUERY_PORT=str(query_port),
                    GOVLEDGER_ADMIN_TOKEN=token,
                    GOVLEDGER_RESTORE_ON_START="false",
                ),
            )
            await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{query_port}/ping", 60, sink)
            worker_env = child_env(
                tmp_path / "worker",
                bootstrap,
                GOVLEDGER_WORKER_APP_ID=APP_ID,
                GOVLEDGER_WORKER_WEB_PORT="0",
                # Short, so a Faust commit stall in a worker's life shows in its log.
                GOVLEDGER_WORKER_COMMIT_STALL_S="20",
                GOVLEDGER_SLA_GRACE_MS=str(SLA_GRACE_MS),
                GOVLEDGER_SLA_TICK_S="1",
            )
            worker = children.spawn("worker", worker_env)
            await follower.start()
            work = await building
            expected_entries = work.entries
            total_entries = sum(expected_entries.values())
            print(f"[kill-test] workload built, stack up in {time.monotonic() - started:.1f} s")

            def applied() -> int:
                return sum(min(follower.applied(w), n) for w, n in expected_entries.items())

            publishing = asyncio.create_task(publish(bootstrap, work, PUBLISH_S))
            # After one of the restarts, one extra kill hits the worker while it is still
            # starting (recovering its tables, joining the group).
            early_after = rng.randrange(max(MIN_KILLS, 1))
            run_started = time.monotonic()

            def done() -> bool:
                return publishing.done() and applied() == total_entries

            async def kill_worker(when: str) -> None:
                nonlocal worker
                assert worker.poll() is None, f"worker died by itself; see {tmp_path}/worker.log"
                worker.send_signal(signal.SIGKILL)
                await asyncio.to_thread(worker.wait, 10)
                kill = Kill(
                    len(kills) + 1,
                    time.monotonic() - run_started,
                    applied(),
                    total_entries,
                    when,
                )
                kills.append(kill)
                print(
                    f"[kill-test] kill {kill.number} at {kill.at_s:.1f} s, "
                    f"{kill.applied}/{kill.total} entries applied "
                    f"({100 * kill.applied / kill.total:.1f} %), {when}",
                    flush=True,
                )
                worker = children.spawn("worker", worker_env)

            def killing() -> bool:
                return not publishing.done() or len(kills) < MIN_KILLS

            # While records flow (and then until MIN_KILLS): wait until the (re)started
            # worker applies something, let it process for a random while, kill it,
            # restart it at once.
            while not done() and killing():
                before = applied()

                async def processing(before: int = before) -> bool:
                    assert worker.poll() is None, f"worker exited; see {tmp_path}/worker.log"
                    return applied() > before or done()

                try:
                    await wait_until(processing, "restarted worker applying", 180, every_s=0.02)
                except AssertionError:
                    intake = await group_lag(
                        bootstrap, f"{APP_ID}-intake", {LINEAGE.name, CONTROL.name}
                    )
                    raise AssertionError(
                        f"the worker restarted after kill {len(kills)} applied nothing in 180 s "
                        f"({applied()}/{total_entries} entries applied; uncommitted records "
                        f"of the intake group: {intake}); see {tmp_path}/worker.log"
                    ) from None
                deadline = time.monotonic() + rng.uniform(KILL_AFTER_MIN_S, KILL_AFTER_MAX_S)
                while time.monotonic() < deadline and not done():  # noqa: ASYNC110 - bounded poll
                    await asyncio.sleep(0.02)
                if done() or not killing():
                    break
                await kill_worker("while processing")
                if len(kills) == early_after + 1:
                    await asyncio.sleep(rng.uniform(0.5, 4.0))
                    await kill_worker("while starting")
            await publishing

            async def folded() -> bool:
                assert worker.poll() is None, f"worker exited; see {tmp_path}/worker.log"
                return applied() == total_entries

            await wait_until(folded, "every entry in a published balance", TIMEOUT_S, 0.1)
            fold_s = time.monotonic() - run_started
            print(
                f"[kill-test] all {total_entries} entries folded {fold_s:.1f} s after the "
                f"worker first started, with {len(kills)} kills",
                flush=True,
            )
            await check_results(
                work, follower, sql, bootstrap, kills, lambda: worker.poll() is None
            )
            stalls = [
                line
                for line in (tmp_path / "worker.log").read_text(errors="replace").splitlines()
                if "commit position stalled" in line
            ]
            print(f"[kill-test] Faust commit stalls the worker logged: {stalls or 'none'}")
            print(f"[kill-test] wall time {time.monotonic() - started:.1f} s", flush=True)
    finally:
        if not building.done():  # failed before the workload was awaited
            with contextlib.suppress(Exception):
                await building
        await follower.stop()
        await sql.close()
        broker.terminate()
        try:
            broker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(timeout=10)


async def publish(bootstrap: str, work: Workload, over_s: float) -> None:
    """Fundings and budgets, then the calls at an even rate over `over_s` seconds (as
    gateways would send them: the worker is killed while traffic flows), with top-ups
    halfway through."""
    producer = make_producer(bootstrap, linger_ms=5, client_id="kill-test-gateways")
    await producer.start()
    try:
        for key, value in work.control_first:
            await producer.send(CONTROL.name, value, key=key.encode(), headers=auth_headers(value))
        await producer.flush()
        half = len(work.lineage) // 2
        began = time.monotonic()
        rate = len(work.lineage) / over_s

        async def resend(before: int) -> None:
            for original in work.resent.get(before, ()):
                key, value = work.lineage[original]
                await producer.send(
                    LINEAGE.name, value, key=key.encode(), headers=auth_headers(value)
                )

        for i, (key, value) in enumerate(work.lineage):
            if i == half:
                for control_key, control_value in work.control_midway:
                    await producer.send(
                        CONTROL.name,
                        control_value,
                        key=control_key.encode(),
                        headers=auth_headers(control_value),
                    )
                # The admin API's fundings and budgets resent, long after.
                for control_key, control_value in work.control_first:
                    await producer.send(
                        CONTROL.name,
                        control_value,
                        key=control_key.encode(),
                        headers=auth_headers(control_value),
                    )
            await resend(i)
            await producer.send(LINEAGE.name, value, key=key.encode(), headers=auth_headers(value))
            if i % 100 == 99:
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        await resend(len(work.lineage))
        await producer.flush()
    finally:
        await producer.stop()


async def check_results(
    work: Workload,
    follower: Follower,
    sql: Sql,
    bootstrap: str,
    kills: list[Kill],
    worker_running: Callable[[], bool],
) -> None:
    expected_alerts = work.expected_alerts()
    expected_entries = work.entries
    wallets = sorted(work.funded)

    # The quotas agent reads wallet-state after the wallets agent wrote it. It sends a
    # fold's alerts before it stores the quota, so once every quota in its table (read
    # from the changelog) holds the wallet's final spend, every alert is out.
    final_spend = {w: spent for w, spent in work.spent.items() if spent > 0}
    quota_spend: dict[str, int] = {}

    async def quotas_hold_final_spend() -> bool:
        nonlocal quota_spend
        assert worker_running(), "the worker exited after folding; see its log"
        table = await quotas_table(bootstrap, set(final_spend))
        quota_spend = {
            w: decode_quota(v.encode()).last_spent_nanousd
            for w, v in table.items()
            if w in final_spend and v != "<deleted>"
        }
        return quota_spend == final_spend

    try:
        await wait_until(quotas_hold_final_spend, "quotas at the final spend", 180, every_s=1.0)
    except AssertionError:
        behind = {
            w: (quota_spend.get(w), s) for w, s in final_spend.items() if quota_spend.get(w) != s
        }
        uncommitted = await group_lag(bootstrap, APP_ID, QUOTA_INPUTS)
        raise AssertionError(
            f"quotas (wallet: (held, final spend)) not at the final spend: {behind}; "
            f"records of the quotas' inputs the worker's group has not committed: {uncommitted}"
        ) from None
    print("[kill-test] every quota holds its wallet's final spend", flush=True)

    # Faust commits what its agents acknowledged every 2.8 s. A commit position left
    # behind (streams.app.commit_past_duplicate_acks mends the cause seen here) loses
    # nothing, but the group's lag never clears and each restart refolds more.
    lag: dict[str, int] = {}

    async def quotas_committed() -> bool:
        nonlocal lag
        lag = await group_lag(bootstrap, APP_ID, QUOTA_INPUTS)
        return not lag

    try:
        await wait_until(quotas_committed, "quotas' inputs committed", 60, every_s=0.5)
    except AssertionError:
        raise AssertionError(
            f"the worker's group left records of the quotas' inputs uncommitted: {lag}"
        ) from None
    print("[kill-test] the worker's group committed the quotas' inputs", flush=True)

    # The sink must have ingested everything before ClickHouse is asked.
    async def lineage_rows() -> bool:
        rows = await sql("SELECT count(), uniqExact(event_id) FROM lineage")
        return rows == [[str(EVENTS), str(EVENTS)]] or False

    await wait_until(lineage_rows, f"{EVENTS} lineage rows in ClickHouse", 300, every_s=0.25)

    async def balances_in_store() -> bool:
        rows = await sql("SELECT wallet_id, max(entry_count) FROM wallet_state GROUP BY wallet_id")
        return {w: int(n) for w, n in rows} == expected_entries

    await wait_until(balances_in_store, "final balances in ClickHouse", 300, every_s=0.25)
    alert_ids = sorted(follower.alert_ids)

    async def alerts_in_store() -> bool:
        if not alert_ids:
            return True
        ids = ",".join(f"'{i}'" for i in alert_ids)
        rows = await sql(f"SELECT uniqExact(event_id) FROM alerts WHERE event_id IN ({ids})")
        return rows == [[str(len(alert_ids))]]

    await wait_until(alerts_in_store, "every alert of the topic in ClickHouse", 300, every_s=0.25)
    print("[kill-test] the sink has ingested everything", flush=True)

    # -- SLA: every minute's windows (all revisions) add up to its lineage rows ------------
    minute = "intDiv(toUnixTimestamp64Milli({}), 60000) * 60000"
    lineage_minutes = {
        (t, p, m, int(start)): int(n)
        for t, p, m, start, n in await sql(
            f"SELECT tenant_id, provider, model_selected, {minute.format('occurred_at')}, "
            "count() FROM lineage WHERE provider != '' GROUP BY 1, 2, 3, 4"
        )
    }
    sla_minutes: dict[tuple[str, str, str, int], tuple[int, int, int]] = {}

    async def windows_add_up() -> bool:
        nonlocal sla_minutes
        sla_minutes = {
            (t, p, m, int(start)): (int(n), int(rows), int(revisions))
            for t, p, m, start, n, rows, revisions in await sql(
                f"SELECT tenant_id, provider, model, {minute.format('window_start')}, "
                "sum(requests), count(), max(revision) + 1 FROM sla_windows GROUP BY 1, 2, 3, 4"
            )
        }
        return {k: n for k, (n, _, _) in sla_minutes.items()} == lineage_minutes

    try:
        await wait_until(windows_add_up, "SLA windows adding up to the lineage", 120, every_s=0.25)
    except AssertionError:
        wrong = {
            k: {"lineage rows": n, "window requests": sla_minutes.get(k, (0, 0, 0))[0]}
            for k, n in {**dict.fromkeys(sla_minutes, 0), **lineage_minutes}.items()
            if sla_minutes.get(k, (0, 0, 0))[0] != n
        }
        raise AssertionError(f"SLA minutes not equal to the lineage rows: {wrong}") from None
    duplicated = await sql(
        "SELECT event_id, count() FROM sla_windows GROUP BY event_id HAVING count() > 1 LIMIT 5"
    )
    assert not duplicated, f"SLA windows stored twice: {duplicated}"
    print(
        f"[kill-test] SLA: {len(lineage_minutes)} (tenant, target, minute)s add up exactly, "
        f"in {sum(rows for _, rows, _ in sla_minutes.values())} windows "
        f"(at most {max(r for _, _, r in sla_minutes.values())} revisions of one minute)",
        flush=True,
    )

    # -- wallets: balance == funded - sum(costs), to the nano-dollar ------------------------
    costs = {
        w: (int(total), int(n))
        for w, total, n in await sql(
            "SELECT wallet_id, sum(cost_nanousd), count() FROM lineage "
            "WHERE cost_nanousd > 0 GROUP BY wallet_id"
        )
    }
    fundings = {
        w: int(total)
        for w, total in await sql(
            "SELECT wallet_id, sum(amount_nanousd) FROM control_events "
            "WHERE event_type = 'wallet.funded' GROUP BY wallet_id"
        )
    }
    stored = {
        w: (int(balance), int(funded), int(spent), int(distinct))
        for w, balance, funded, spent, distinct in await sql(
            "SELECT wallet_id, argMax(balance_nanousd, entry_count), "
            "argMax(funded_nanousd, entry_count), argMax(spent_nanousd, entry_count), "
            "uniqExactIf(balance_nanousd, entry_count = max_count) "
            "FROM wallet_state AS s "
            "INNER JOIN (SELECT wallet_id, max(entry_count) AS max_count FROM wallet_state "
            "GROUP BY wallet_id) AS m USING wallet_id GROUP BY wallet_id"
        )
    }
    wrong_wallets = []
    for w in wallets:
        topic = follower.latest[w]
        cost, calls = costs.get(w, (0, 0))
        truth = fundings.get(w, 0) - cost
        facts = {
            "published balance": topic.balance_nanousd,
            "stored balance": stored[w][0],
            "funded - costs in ClickHouse": truth,
            "published funded": topic.funded_nanousd,
            "funded in ClickHouse": fundings.get(w, 0),
            "published spent": topic.spent_nanousd,
            "costs in ClickHouse": cost,
        }
        if (
            topic.balance_nanousd != truth
            or stored[w][0] != truth
            or topic.funded_nanousd != fundings.get(w, 0)
            or topic.spent_nanousd != cost
            or stored[w][3] != 1
            or fundings.get(w, 0) != work.funded[w]
            or cost != work.spent[w]
            or calls != work.calls[w]
        ):
            wrong_wallets.append((w, facts, {"balances at the final count": stored[w][3]}))
    # Two balances published with the same entry count must agree (a divergent refold).
    divergent = {
        w: {n: sorted(b) for n, b in counts.items() if len(b) > 1}
        for w, counts in follower.by_count.items()
        if any(len(b) > 1 for b in counts.values())
    }

    # -- alerts: each threshold the final spend crossed exactly once, no other -------------
    rows = await sql(
        "SELECT wallet_id, toUnixTimestamp64Milli(period_start_at), threshold_percent, count(), "
        "uniqExact(event_id) FROM alerts WHERE event_type = 'quota.threshold' "
        "GROUP BY wallet_id, period_start_at, threshold_percent"
    )
    in_store = {(w, int(p), int(t)): int(n) for w, p, t, n, _ in rows}
    expected = {
        (w, work.period_start_at, t): 1 for w in wallets for t in sorted(expected_alerts[w])
    }
    alert_problems = {
        key: {"in ClickHouse": in_store.get(key, 0), "on the topic": follower.alerts.get(key, 0)}
        for key in sorted(set(in_store) | set(expected))
        if in_store.get(key, 0) != expected.get(key, 0)
    }

    # -- dead letters: none ------------------------------------------------------------------
    dlq_rows = await sql("SELECT consumer, origin_topic, error FROM dead_letters LIMIT 20")

    # -- the tally -----------------------------------------------------------------------------
    print(f"[kill-test] {len(kills)} kills:", flush=True)
    for kill in kills:
        print(
            f"  #{kill.number} at {kill.at_s:6.1f} s  {kill.applied:>7}/{kill.total} entries "
            f"({100 * kill.applied / kill.total:5.1f} %)  {kill.when}"
        )
    print(
        f"[kill-test] {len(wallets)} wallets; balances published: {follower.balances_read} "
        f"(for {sum(expected_entries.values())} entries); alerts on the topic: "
        f"{sum(follower.alerts.values())} ({len(follower.alert_ids)} event ids), expected "
        f"{len(expected)}; duplicates on the topic: "
        f"{ {k: n for k, n in follower.alerts.items() if n > 1} }"
    )
    for w in wallets:
        print(
            f"  {w:<18} {work.budget_shape[w]:<17} spent {work.spent[w]:>14} "
            f"budget {work.budgets[w]:>14} alerts expected {sorted(expected_alerts[w])} "
            f"got { {t: n for (ww, _, t), n in in_store.items() if ww == w} }"
        )

    assert not wrong_wallets, f"wallets not equal to funded - costs: {wrong_wallets}"
    assert not divergent, f"balances published twice with one entry count differ: {divergent}"
    quota_state = (
        await quotas_table(bootstrap, {w for w, _, _ in alert_problems}) if alert_problems else {}
    )
    assert not alert_problems, (
        "quota.threshold alerts not exactly once per crossed (wallet, period, threshold): "
        f"{alert_problems}; the quotas table's last changelog values of those wallets: "
        f"{quota_state}"
    )
    assert not dlq_rows, f"dead letters in ClickHouse: {dlq_rows}"
    assert not follower.dead_letters, f"dead letters on the topic: {follower.dead_letters[:5]}"
    assert len(kills) >= MIN_KILLS, (
        f"only {len(kills)} kills happened; publish over more time (KILL_TEST_PUBLISH_S)"
    )
