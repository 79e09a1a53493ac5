"""The whole pipeline on the embedded default: real Tansu, Faust worker, chDB sink and
gateway, driven with the official openai SDK the way a newcomer would."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import openai
import pytest
from aiokafka import AIOKafkaProducer
from openai.types.chat import ChatCompletionMessageParam

from gateway.catalogue import SIM_TARGETS
from schemas import authn
from tests.integration.stack import RunningStack, running_stack, wait_for

pytestmark = pytest.mark.integration

SIM_SMALL = next(t for t in SIM_TARGETS if t.model == "sim-small")


def traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def lineage_row(stack: RunningStack, trace_id: str, columns: str) -> list[str]:
    rows: list[list[str]] = wait_for(
        lambda: stack.sql(f"SELECT {columns} FROM lineage WHERE trace_id = '{trace_id}'"),
        timeout_s=10,
    )
    assert len(rows) == 1, f"expected exactly one lineage record, got {rows}"
    return rows[0]


def client(stack: RunningStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)


def test_chat_completion_is_answered_recorded_and_charged(stack: RunningStack) -> None:
    key = stack.create_key("search")
    stack.fund("search", "5")
    # As in the README: the call right after funding can spend it.
    assert stack.balance_nanousd("search") == 5_000_000_000
    trace_id, header = traceparent()

    started = time.monotonic()
    reply = client(stack, key["key"]).chat.completions.create(
        model="sim-small",
        messages=[{"role": "user", "content": "Summarise our Q3 spend."}],
        extra_headers={"traceparent": header},
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    row = lineage_row(
        stack,
        trace_id,
        "key_id, team_id, prompt_tokens, completion_tokens, cost_nanousd, http_status, "
        "decision, usage_source, stream, wallet_id, policies_applied",
    )
    visible_s = time.monotonic() - started
    assert row == [
        key["key_id"],
        "search",
        str(reply.usage.prompt_tokens),
        str(reply.usage.completion_tokens),
        str(SIM_SMALL.cost_nanousd(reply.usage.prompt_tokens, reply.usage.completion_tokens)),
        "200",
        "allowed",
        "reported",
        "false",
        "default/search",
        # No pack of the tenant's: the org baseline's steps still run (the default one
        # redacts personal data and holds the retention floor).
        "['auth','key-scopes','rate-limit','pii-detector','audit-logger','budget']",
    ]
    assert visible_s < 5, f"lineage took {visible_s:.2f}s to reach ClickHouse"


def test_streamed_call_carries_usage_in_last_chunk_and_is_never_free(stack: RunningStack) -> None:
    key = stack.create_key("stream-team")
    stack.fund("stream-team", "1")
    wait_for(lambda: stack.balance_nanousd("stream-team") > 0)
    trace_id, header = traceparent()

    chunks = list(
        client(stack, key["key"]).chat.completions.create(
            model="sim-small",
            messages=[{"role": "user", "content": "Stream me a haiku about ledgers."}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": header},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None
    usage = chunks[-1].usage
    row = lineage_row(
        stack,
        trace_id,
        "stream, usage_source, completion_tokens, cost_nanousd, toBool(ttft_ms > 0)",
    )
    expected_cost = SIM_SMALL.cost_nanousd(usage.prompt_tokens, usage.completion_tokens)
    assert row == ["true", "reported", str(usage.completion_tokens), str(expected_cost), "true"]
    assert expected_cost > 0


def test_a_streamed_tool_call_names_its_audit_row(stack: RunningStack) -> None:
    key = stack.create_key("agents")
    stack.fund("agents", "1")
    wait_for(lambda: stack.balance_nanousd("agents") > 0)
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    raw = client(stack, key["key"]).chat.completions.with_raw_response.create(
        model="sim-small",
        messages=[{"role": "user", "content": "Look up the Q3 ledger."}],
        tools=[tool],
        tool_choice="required",
        stream=True,
    )
    chunks = list(raw.parse())
    calls = [t for c in chunks for t in c.choices[0].delta.tool_calls or []]
    names = [t.function.name for t in calls if t.function is not None]
    assert "lookup" in names
    event_id = raw.headers["x-govledger-event-id"]
    assert {c.id for c in chunks} == {f"chatcmpl-{event_id}"}
    row = wait_for(
        lambda: stack.sql(f"SELECT trace_id, span_id FROM lineage WHERE event_id = '{event_id}'")
    )
    assert raw.headers["traceparent"] == f"00-{row[0][0]}-{row[0][1]}-01"


def test_a_streamed_response_is_recorded_as_the_responses_api(stack: RunningStack) -> None:
    key = stack.create_key("responders")
    stack.fund("responders", "1")
    wait_for(lambda: stack.balance_nanousd("responders") > 0)
    trace_id, header = traceparent()
    events = list(
        client(stack, key["key"]).responses.create(
            model="sim-small",
            input="Summarise the Q3 ledger.",
            stream=True,
            extra_headers={"traceparent": header},
        )
    )
    done = events[-1]
    assert done.type == "response.completed" and done.response.usage is not None
    usage = done.response.usage
    row = lineage_row(stack, trace_id, "api, stream, usage_source, cost_nanousd")
    cost = SIM_SMALL.cost_nanousd(usage.input_tokens, usage.output_tokens)
    assert row == ["responses", "true", "reported", str(cost)]
    assert cost > 0


def test_balance_equals_funding_minus_recorded_costs_exactly(stack: RunningStack) -> None:
    key = stack.create_key("finops")
    stack.fund("finops", "0.75")
    stack.fund("finops", "0.000000001")
    funded = 750_000_001
    wait_for(lambda: stack.balance_nanousd("finops") == funded)
    sdk = client(stack, key["key"])
    for i in range(12):
        sdk.chat.completions.create(
            model="sim-large" if i % 3 else "sim-small",
            messages=[{"role": "user", "content": f"question {i} " * (i + 1)}],
            stream=bool(i % 2),
        )

    def reconciled() -> tuple[int, int] | None:
        spent = stack.sql(
            "SELECT sum(cost_nanousd), count() FROM lineage WHERE wallet_id = 'default/finops'"
        )[0]
        balance = stack.balance_nanousd("finops")
        if spent[1] == "12" and balance == funded - int(spent[0]):
            return balance, int(spent[0])
        return None

    balance, spent = wait_for(reconciled)
    assert spent > 0
    assert balance == funded - spent
    latest_stored = (
        "SELECT balance_nanousd FROM wallet_state WHERE wallet_id = 'default/finops' "
        "ORDER BY entry_count DESC LIMIT 1"
    )
    wait_for(lambda: stack.sql(latest_stored) == [[str(balance)]])


LINEAGE_READERS = ("sink", "streams")


def test_undecodable_records_are_dead_lettered_with_the_reason(stack: RunningStack) -> None:
    import asyncio

    async def produce_garbage() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.stack.bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        try:
            # Signed by a registered gateway: authentic, and still not a record.
            garbage = b"not avro at all"
            keyring = authn.installed()
            assert keyring is not None, "the stack fixture installs its keyring"
            credential = keyring.credential("gateway", "gateway-garbage")
            await producer.send_and_wait(
                "govledger.lineage", garbage, key=b"default", headers=credential.headers(garbage)
            )
        finally:
            await producer.stop()

    asyncio.run(produce_garbage())

    def dead_letters() -> list[list[str]] | None:
        rows = stack.sql(
            "SELECT consumer, origin_topic, error FROM dead_letters "
            "WHERE payload = 'not avro at all' ORDER BY consumer"
        )
        return rows if len(rows) >= len(LINEAGE_READERS) else None

    rows = wait_for(dead_letters)
    # Each consumer of the lineage topic (the sink; the worker's intake) reports what it
    # cannot read, once.
    assert sorted(row[0] for row in rows) == sorted(LINEAGE_READERS)
    assert all(row[1] == "govledger.lineage" for row in rows)
    assert all("C3 01" in row[2] for row in rows)


def test_no_key_secret_is_stored_anywhere(stack: RunningStack) -> None:
    key = stack.create_key("secrets")
    stack.fund("secrets", "1")
    wait_for(lambda: stack.balance_nanousd("secrets") > 0)
    client(stack, key["key"]).chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "hi"}]
    )
    wait_for(lambda: stack.sql(f"SELECT 1 FROM lineage WHERE key_id = '{key['key_id']}'"))
    # SHOW is refused by the SQL endpoint; org readers see the schema in system.columns.
    tables = [
        row[0]
        for row in stack.sql(
            "SELECT DISTINCT table FROM system.columns "
            "WHERE lower(database) NOT IN ('system', 'information_schema')"
        )
    ]
    assert {"lineage", "control_events", "wallet_state", "dead_letters"} <= set(tables)
    for table in tables:
        dump = httpx.post(
            f"{stack.settings.query_url}/",
            content=f"SELECT * FROM {table} FORMAT TSV".encode(),
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=30,
        )
        assert dump.status_code == 200
        assert key["key"] not in dump.text
        assert key["key"][12:40] not in dump.text


def test_sql_endpoint_is_read_only(stack: RunningStack) -> None:
    for statement in (
        "INSERT INTO lineage (event_id) VALUES (generateUUIDv4())",
        "DROP TABLE lineage",
        "SELECT * FROM file('/etc/passwd')",
    ):
        response = httpx.post(
            f"{stack.settings.query_url}/",
            content=statement.encode(),
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=30,
        )
        assert response.status_code == 403, statement
    anonymous = httpx.get(f"{stack.settings.query_url}/", params={"query": "SELECT 1"})
    assert anonymous.status_code == 401


def test_one_gateway_never_spends_past_the_balance(stack: RunningStack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = stack.create_key("exact-budget")
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    # With max_tokens equal to what the sim answers, a reservation is exactly the price.
    price = SIM_SMALL.cost_nanousd(4 + 1, 24)
    stack.fund("exact-budget", f"{10 * price / 1e9:.9f}")
    sdk = client(stack, key["key"])

    def call(_: int) -> int:
        try:
            sdk.chat.completions.create(model="sim-small", messages=messages, max_tokens=24)
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(call, range(16)))

    assert statuses.count(200) == 10
    assert statuses.count(402) == 6
    wait_for(lambda: stack.balance_nanousd("exact-budget") == 0)
    # The balance can show before the sink has written every call: wait for all 16.
    spent = wait_for(
        lambda: stack.sql(
            "SELECT sum(cost_nanousd) FROM lineage "
            f"WHERE key_id = '{key['key_id']}' HAVING count() = 16"
        )
    )
    assert spent == [[str(10 * price)]]


def test_the_command_line_drives_the_running_stack(stack: RunningStack) -> None:
    import subprocess
    import sys

    def govledger(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "govledger", *args],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    secret = govledger("keys", "create", "--team", "cli", "--name", "cli-key").strip()
    assert secret.startswith("gk_")
    assert "\n" not in secret  # the key alone on stdout, ready for $(...)
    assert "funded default/cli with 3.500000000 USD" in govledger(
        "wallets", "fund", "--team", "cli", "--usd", "3.5"
    )
    assert govledger("wallets", "balance", "--team", "cli").strip() == "3.500000000"
    client(stack, secret).chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "from the command line"}]
    )
    listed = [
        line.split("\t") for line in govledger("keys", "list").splitlines() if "cli-key" in line
    ]
    assert len(listed) == 1
    key_id, prefix, tenant, team, name, status, expires, last_used, remaining = listed[0]
    assert secret.startswith(prefix)
    assert (tenant, team, name, status, expires) == ("default", "cli", "cli-key", "active", "never")
    assert last_used != "never"
    assert remaining.startswith("3.49")
    rows = wait_for(
        lambda: (
            govledger("sql", f"SELECT count() FROM lineage WHERE key_id = '{key_id}'").strip()
            == "1"
        )
    )
    assert rows


# Stops the module's stack: keep it last.
def test_restart_keeps_keys_and_balances(stack: RunningStack, stack_env: dict[str, str]) -> None:
    key = stack.create_key("durable")
    stack.fund("durable", "2")
    wait_for(lambda: stack.balance_nanousd("durable") == 2_000_000_000)
    client(stack, key["key"]).chat.completions.create(
        model="sim-large", messages=[{"role": "user", "content": "before the restart"}]
    )
    before: int = wait_for(
        lambda: (b := stack.balance_nanousd("durable")) < 2_000_000_000 and b,
    )
    # sim-large at twice its catalogue price from now on: restored like any control record.
    doubled = {"input_nanousd_per_mtok": 5_000_000_000, "output_nanousd_per_mtok": 20_000_000_000}
    priced = stack.admin(
        "PUT", "/v1/admin/prices", json={"provider": "sim", "model": "sim-large", **doubled}
    )
    assert priced.status_code == 201, priced.text
    revoked = stack.create_key("durable")
    stack.admin("POST", f"/v1/admin/keys/{revoked['key_id']}/revoke", json={})
    stack.stack.stop()

    with running_stack(stack_env) as again:
        assert again.balance_nanousd("durable") == before
        reply = client(again, key["key"]).chat.completions.create(
            model="sim-large", messages=[{"role": "user", "content": "after the restart"}]
        )
        assert reply.usage is not None
        with pytest.raises(openai.AuthenticationError):
            client(again, revoked["key"]).chat.completions.create(
                model="sim-large", messages=[{"role": "user", "content": "revoked stays revoked"}]
            )
        listed = again.admin("GET", "/v1/admin/prices?model=sim-large").json()["data"]
        assert [p["input_nanousd_per_mtok"] for p in listed] == [5_000_000_000]
        cost = 2 * next(t for t in SIM_TARGETS if t.model == "sim-large").cost_nanousd(
            reply.usage.prompt_tokens, reply.usage.completion_tokens
        )
        wait_for(lambda: again.balance_nanousd("durable") == before - cost)

        def reconciled() -> bool:
            spent = again.sql(
                "SELECT sum(cost_nanousd) FROM lineage WHERE wallet_id = 'default/durable'"
            )
            return int(spent[0][0]) == 2_000_000_000 - (before - cost)

        wait_for(reconciled)
