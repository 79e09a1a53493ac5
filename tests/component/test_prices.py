"""Model prices in-process: an org admin publishes a price with a start date through the
admin route or `govledger prices`, calls before the date keep the old price and calls
after it pay the new one, each token kind at its own rate; nobody else may set prices."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from schemas.ids import now_ms
from schemas.records import PricePublished
from tests.component.support import CAPTURE_MODEL, Component, Upstream, running_component
from tests.component.test_policy_cli import govledger

# An OpenAI reply with a prompt-cache hit and reasoning tokens (the reference's shape).
CACHED_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 0},
}


@dataclass
class CachingUpstream(Upstream):
    """Answers every call with CACHED_USAGE."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = super().handle(request)
        body = response.json()
        body["usage"] = CACHED_USAGE
        return httpx.Response(response.status_code, json=body)


PRICE = {
    "provider": "openai",
    "model": CAPTURE_MODEL,
    "input_nanousd_per_mtok": 1_000_000_000,  # $1 / M
    "output_nanousd_per_mtok": 4_000_000_000,  # $4 / M
    "cached_input_nanousd_per_mtok": 100_000_000,  # $0.10 / M
    "reasoning_nanousd_per_mtok": 8_000_000_000,  # $8 / M
}
# 86 x $1 + 1920 x $0.10 + 200 x $4 + 100 x $8, per M tokens
NEW_COST_NANOUSD = 86_000 + 192_000 + 800_000 + 800_000


async def _call(stack: Component, client: Any) -> int:
    await client.chat.completions.create(
        model=CAPTURE_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    return stack.lineage.lineage()[-1].cost_nanousd


async def test_a_published_price_applies_from_its_date_to_each_token_kind(
    tmp_path: Path,
) -> None:
    async with running_component(tmp_path, upstream=CachingUpstream()) as stack:
        client = await stack.sdk_for("research")
        # Unlisted upstream model: the catalogue's default price, every token plain.
        before = await _call(stack, client)
        assert before == (2006 * 1_000 + 300 * 4_000)
        record = stack.lineage.lineage()[-1]
        assert (record.cached_prompt_tokens, record.reasoning_tokens) == (1920, 100)

        starts = now_ms() + 300
        put = await stack.admin("PUT", "/v1/admin/prices", json={**PRICE, "effective_from": starts})
        assert put.status == 201, await put.text()
        assert await _call(stack, client) == before  # not in force yet
        await asyncio.sleep(max(starts - now_ms(), 0) / 1000 + 0.01)
        assert await _call(stack, client) == NEW_COST_NANOUSD

        published = stack.control.of_type(PricePublished)
        assert [(p.model, p.effective_from, p.tenant_id) for p in published] == [
            (CAPTURE_MODEL, starts, "")
        ]
        listed = await (await stack.admin("GET", "/v1/admin/prices?model=" + CAPTURE_MODEL)).json()
        assert [
            (p["effective_from_ms"], p["cached_input_nanousd_per_mtok"]) for p in listed["data"]
        ] == [(starts, 100_000_000)]


async def test_only_an_org_admin_reads_or_sets_prices_and_never_in_the_past(
    component: Component,
) -> None:
    secret = (await component.create_key("platform", tenant="initech", role="tenant-admin"))["key"]
    for method in ("GET", "PUT"):
        refused = await component.as_key(secret, method, "/v1/admin/prices", json=PRICE)
        assert refused.status == 403, method
    past = await component.admin(
        "PUT", "/v1/admin/prices", json={**PRICE, "effective_from": now_ms() - 1}
    )
    assert past.status == 400
    assert "in the past" in (await past.json())["error"]["message"]
    fractional = await component.admin(
        "PUT", "/v1/admin/prices", json={**PRICE, "input_nanousd_per_mtok": 1.5}
    )
    assert fractional.status == 400
    assert component.control.of_type(PricePublished) == []


async def test_prices_set_and_list_on_the_command_line(component: Component) -> None:
    result = await govledger(
        component,
        "prices",
        "set",
        "--provider=openai",
        "--model=gpt-4o",
        "--effective-from=2099-01-01T00:00:00Z",
        "--input-usd-per-mtok=2",
        "--output-usd-per-mtok=8",
        "--cached-input-usd-per-mtok=0.075",
    )
    assert result.returncode == 0, result.stderr
    (published,) = component.control.of_type(PricePublished)
    assert published.effective_from == 4_070_908_800_000
    assert published.cached_input_nanousd_per_mtok == 75_000_000
    listed = await govledger(component, "prices", "list", "--model=gpt-4o")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("openai\tgpt-4o\tfrom always\tinput=2.5 output=10 cached-input=1.25")
    assert "input=2 output=8 cached-input=0.075" in lines[1]
    bad = await govledger(
        component,
        "prices",
        "set",
        "--provider=openai",
        "--model=gpt-4o",
        "--input-usd-per-mtok=0.0000000001",
        "--output-usd-per-mtok=1",
    )
    assert bad.returncode != 0 and "more precision than a nano-dollar" in bad.stderr
