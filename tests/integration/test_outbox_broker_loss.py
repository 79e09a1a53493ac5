"""The outbox's promise with a real stack: calls the gateway answered whose records the
broker held when it died (in memory: gone) reach the store exactly once.

The sink is killed first, so the next calls' records are answered and acknowledged but
never stored; then every part is killed (SIGKILL) and the stack restarts on the same
data directory with a fresh, empty broker. The new gateway finds the outboxes the killed
one left, sends their unconfirmed records again, the sink stores each record once (the
ones it had already stored are looked up by event_id and skipped), its notices confirm
them, and the leftover outboxes are removed."""

from __future__ import annotations

import signal
from pathlib import Path

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.stack import RunningStack, running_stack, stack_environ, wait_for

TEAM = "outboxed"
BEFORE = 20  # calls stored before the loss
LOST = 25  # calls answered while the sink was dead, then lost with the broker
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def kill(stack: RunningStack, name: str) -> None:
    """SIGKILL one part of the stack and reap it."""
    (child,) = [c for c in stack.stack.children if c.name == name]
    child.process.send_signal(signal.SIGKILL)
    child.process.wait(timeout=10)


def confirmed_through(outbox: Path, role: str) -> int:
    """The highest seq below which a running producer of this role saw all confirmed."""
    marks = [int(p.read_text() or 0) - 1 for p in outbox.glob(f"{role}-*.confirmed")]
    return max(marks, default=0)


def stored(stack: RunningStack) -> tuple[int, int, int]:
    """Rows, distinct event ids and summed cost of the team's lineage in the store."""
    ((rows, unique, spent),) = stack.sql(
        "SELECT count(), uniqExact(event_id), sum(cost_nanousd) FROM lineage "
        f"WHERE wallet_id = 'default/{TEAM}'"
    )
    return int(rows), int(unique), int(spent)


def test_answered_calls_lost_with_the_broker_reach_the_store_exactly_once(
    tmp_path: Path,
) -> None:
    env = stack_environ(tmp_path, GOVLEDGER_OUTBOX_RESEND_AFTER_S="5")
    outbox = tmp_path / "outbox"
    with running_stack(env) as first:
        first.fund(TEAM, "10")
        sdk = openai.OpenAI(
            base_url=first.base_url, api_key=first.create_key(TEAM)["key"], max_retries=0
        )
        for _ in range(BEFORE):
            sdk.chat.completions.create(model="sim-small", messages=HI)
        wait_for(lambda: stored(first)[0] == BEFORE, timeout_s=30)
        # The live gateway hears what was stored: its confirmed watermark passes the calls.
        wait_for(lambda: confirmed_through(outbox, "gateway") >= BEFORE, timeout_s=15)
        kill(first, "sink")
        for _ in range(LOST):
            sdk.chat.completions.create(model="sim-small", messages=HI)
        for name in ("gateway", "worker", "broker"):
            kill(first, name)
    left = {p.stem for p in outbox.glob("*.outbox")}
    assert {stem.split("-")[0] for stem in left} == {"gateway", "admin"}

    with running_stack(env) as second:
        # Every answered call once: the 25 lost ones sent again, the 20 stored ones skipped.
        rows, unique, spent = wait_for(
            lambda: (found := stored(second))[0] >= BEFORE + LOST and found,
            timeout_s=60,
            every_s=0.5,
        )
        assert (rows, unique) == (BEFORE + LOST, BEFORE + LOST)
        wait_for(
            lambda: second.balance_nanousd(TEAM) == 10 * 10**9 - spent,
            timeout_s=60,
        )
        # Confirmed by the sink's notices: the outboxes the killed processes left are gone.
        wait_for(lambda: not left & {p.stem for p in outbox.glob("*.outbox")}, timeout_s=30)
        assert stored(second)[:2] == (BEFORE + LOST, BEFORE + LOST)
