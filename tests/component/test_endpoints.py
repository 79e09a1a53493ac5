"""Embeddings, legacy completions and model retrieval through the gateway as the official
openai SDK makes them, against an OpenAI-compatible upstream that records what it
received (api_upstream.py) and against the sim: the body reaches the upstream as the SDK
sent it (the model mapped; usage asked for on a stream), the reply comes back whole, and
each call has one lineage record naming its API, with its tokens and cost."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest

from gateway.catalogue import UPSTREAM_PRICES
from gateway.replies import EVENT_ID_HEADER
from schemas.records import LineageRecord
from tests.component.api_upstream import (
    COMPLETION_TOKENS_PER_CHOICE,
    EMBED_MODEL,
    INSTRUCT_MODEL,
    TOKENS_PER_INPUT,
    WORDS,
    ApiUpstream,
    vector,
)
from tests.component.support import Component, running_component

EMBED_ALIAS = "embed-alias"
INSTRUCT_ALIAS = "instruct-alias"


@dataclass
class Caller:
    """The SDK on a funded key, every request body it sent, and the gateway under it."""

    sdk: openai.AsyncOpenAI
    sent: list[dict[str, Any]]
    stack: Component
    upstream: ApiUpstream

    def last_record(self) -> LineageRecord:
        return self.stack.lineage.lineage()[-1]


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    upstream = ApiUpstream()
    async with running_component(
        tmp_path,
        upstream=upstream,
        upstream_models=f"{EMBED_MODEL},{INSTRUCT_MODEL}",
        model_groups=f"{EMBED_ALIAS}={EMBED_MODEL}:1;{INSTRUCT_ALIAS}={INSTRUCT_MODEL}:1",
    ) as stack:
        stack.publish_balance("agents", "5")
        secret = (await stack.create_key("agents"))["key"]
        sent: list[dict[str, Any]] = []

        async def keep(request: httpx2.Request) -> None:
            if request.content:
                sent.append(orjson.loads(request.content))

        async with httpx2.AsyncClient(event_hooks={"request": [keep]}) as http:
            sdk = openai.AsyncOpenAI(
                base_url=stack.base_url, api_key=secret, max_retries=0, http_client=http
            )
            yield Caller(sdk, sent, stack, upstream)


def _price(model: str, prompt_tokens: int, completion_tokens: int = 0) -> int:
    prompt_price, completion_price = UPSTREAM_PRICES[model]
    return prompt_tokens * prompt_price + completion_tokens * completion_price


# --- embeddings -------------------------------------------------------------------------


async def test_one_input_with_dimensions_as_floats_is_forwarded_and_returned_whole(
    caller: Caller,
) -> None:
    raw = await caller.sdk.embeddings.with_raw_response.create(
        model=EMBED_ALIAS, input="The quarterly ledger", dimensions=3, encoding_format="float"
    )
    reply = raw.parse()
    assert caller.upstream.paths == ["/v1/embeddings"]
    assert caller.upstream.received == [{**caller.sent[0], "model": EMBED_MODEL}]
    assert caller.sent[0]["dimensions"] == 3 and caller.sent[0]["encoding_format"] == "float"
    assert [d.embedding for d in reply.data] == [vector(0, 3)]
    assert reply.model == EMBED_ALIAS  # the name asked for; the record has the served one
    assert reply.model_extra == {"future_field": {"kept": True}}
    record = caller.last_record()
    assert raw.headers[EVENT_ID_HEADER] == record.event_id
    assert (record.api, record.decision, record.model_selected) == (
        "embeddings",
        "allowed",
        EMBED_MODEL,
    )
    assert (record.prompt_tokens, record.completion_tokens) == (TOKENS_PER_INPUT, 0)
    assert record.usage_source == "reported"
    assert record.cost_nanousd == _price(EMBED_MODEL, TOKENS_PER_INPUT) > 0


async def test_a_list_as_base64_passes_through_and_the_sdk_default_decodes(
    caller: Caller,
) -> None:
    texts = ["first text", "second text"]
    encoded = await caller.sdk.embeddings.create(
        model=EMBED_MODEL, input=texts, encoding_format="base64"
    )
    as_sent: list[Any] = [d.embedding for d in encoded.data]  # typed floats; base64 here
    upstream_base64 = [
        base64.b64encode(struct.pack("<4f", *vector(i, 4))).decode() for i in range(2)
    ]
    assert as_sent == upstream_base64  # the string, not decoded, not re-encoded
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = await caller.sdk.embeddings.create(model=EMBED_MODEL, input=texts)
    assert [d.embedding for d in decoded.data] == [vector(0, 4), vector(1, 4)]
    assert caller.upstream.received == [{**body, "model": EMBED_MODEL} for body in caller.sent]
    assert caller.sent[1]["encoding_format"] == "base64"
    record = caller.last_record()
    assert (record.api, record.prompt_tokens) == ("embeddings", 2 * TOKENS_PER_INPUT)
    assert record.cost_nanousd == _price(EMBED_MODEL, 2 * TOKENS_PER_INPUT)


async def test_personal_data_in_the_input_is_redacted_before_the_upstream_sees_it(
    caller: Caller,
) -> None:
    await caller.sdk.embeddings.create(
        model=EMBED_MODEL, input=["clean text", "mail jane.doe@example.com today"]
    )
    received = caller.upstream.received[-1]["input"]
    assert received[0] == "clean text"
    assert "jane.doe@example.com" not in received[1] and "[REDACTED:EMAIL]" in received[1]
    record = caller.last_record()
    assert ("pii-detector", "redact") in [(g.name, g.action) for g in record.guardrails_triggered]
    assert record.api == "embeddings"


async def test_token_ids_the_chain_cannot_read_are_refused_not_forwarded(caller: Caller) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.embeddings.create(model=EMBED_MODEL, input=[[1, 2, 3]])
    assert raised.value.body is not None
    assert raised.value.body["param"] == "input"  # type: ignore[index]
    assert caller.upstream.received == []
    assert caller.last_record().decision == "rejected"


async def test_a_budget_too_small_for_the_input_refuses_the_call(caller: Caller) -> None:
    sdk = await caller.stack.sdk_for("lean", usd="0.0000001")  # 100 nano-USD: 5 tokens
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.embeddings.create(model=EMBED_MODEL, input="word " * 200)
    assert raised.value.status_code == 402
    assert caller.upstream.received == []
    record = caller.last_record()
    assert (record.api, record.decision, record.http_status) == ("embeddings", "rejected", 402)
    assert record.cost_nanousd == 0
    await sdk.close()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": 10**9}, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["ok", 7]}, "input[1]"),
        ({}, "input"),
    ],
)
async def test_what_openai_refuses_is_a_400_naming_the_parameter(
    caller: Caller, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.post("/embeddings", body={"model": EMBED_MODEL, **fields}, cast_to=object)
    assert raised.value.body is not None
    assert raised.value.body["param"] == param  # type: ignore[index]
    assert caller.upstream.received == []


async def test_the_sim_embeds_deterministically_in_the_dimensions_asked(caller: Caller) -> None:
    first = await caller.sdk.embeddings.create(
        model="sim-embed", input=["a", "b"], dimensions=5, encoding_format="float"
    )
    again = await caller.sdk.embeddings.create(
        model="sim-embed", input=["a", "b"], dimensions=5, encoding_format="float"
    )
    vectors = [d.embedding for d in first.data]
    assert vectors == [d.embedding for d in again.data]
    assert [len(v) for v in vectors] == [5, 5] and vectors[0] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-5
    decoded = await caller.sdk.embeddings.create(model="sim-embed", input=["a", "b"], dimensions=5)
    assert [d.embedding for d in decoded.data] == vectors  # via base64, the same float32s
    record = caller.last_record()
    assert (record.api, record.provider, record.completion_tokens) == ("embeddings", "sim", 0)
    assert record.cost_nanousd == record.prompt_tokens * 20 > 0


# --- legacy completions -----------------------------------------------------------------


async def test_a_completion_is_forwarded_unchanged_and_returned_whole(caller: Caller) -> None:
    raw = await caller.sdk.completions.with_raw_response.create(
        model=INSTRUCT_ALIAS,
        prompt="Say this is a test",
        n=2,
        max_tokens=20,
        temperature=0.3,
        echo=True,
        stop=["\n"],
        logprobs=2,
        user="u-7",
        extra_body={"future_param": {"x": 1}},
    )
    reply = raw.parse()
    assert caller.upstream.paths == ["/v1/completions"]
    assert caller.upstream.received == [{**caller.sent[0], "model": INSTRUCT_MODEL}]
    assert caller.sent[0]["future_param"] == {"x": 1}
    record = caller.last_record()
    assert reply.id == f"cmpl-{record.event_id}" and reply.model == INSTRUCT_ALIAS
    assert [c.text for c in reply.choices] == ["Say this is a test " + " ".join(WORDS)] * 2
    assert reply.choices[1].model_extra == {"future_field": {"kept": True}}
    assert reply.system_fingerprint == "fp_instruct"
    completion_tokens = 2 * COMPLETION_TOKENS_PER_CHOICE
    assert (record.api, record.stream, record.user_id) == ("completions", False, "u-7")
    assert (record.prompt_tokens, record.completion_tokens) == (TOKENS_PER_INPUT, completion_tokens)
    assert record.cost_nanousd == _price(INSTRUCT_MODEL, TOKENS_PER_INPUT, completion_tokens)
    assert raw.headers[EVENT_ID_HEADER] == record.event_id


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_streamed_completion_arrives_whole_and_usage_only_when_asked(
    caller: Caller, include_usage: bool
) -> None:
    options: Any = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await caller.sdk.completions.create(
        model=INSTRUCT_MODEL, prompt="Say this", stream=True, **options
    )
    chunks = [chunk async for chunk in stream]
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in with_choices) == " " + " ".join(WORDS)
    assert with_choices[-1].choices[0].finish_reason == "stop"
    record = caller.last_record()
    assert {c.id for c in chunks} == {f"cmpl-{record.event_id}"}
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == int(include_usage)
    forwarded = caller.upstream.received[-1]
    assert forwarded == {
        **caller.sent[-1],
        "model": INSTRUCT_MODEL,
        "stream_options": {"include_usage": True},  # always asked of the upstream
    }
    assert (record.api, record.stream, record.usage_source) == ("completions", True, "reported")
    assert (record.prompt_tokens, record.completion_tokens) == (
        TOKENS_PER_INPUT,
        COMPLETION_TOKENS_PER_CHOICE,
    )
    assert record.cost_nanousd == _price(
        INSTRUCT_MODEL, TOKENS_PER_INPUT, COMPLETION_TOKENS_PER_CHOICE
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"logprobs": 6}, "logprobs"),
        ({"n": 3, "best_of": 2}, "best_of"),
        ({"echo": "yes"}, "echo"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"prompt": [[1, -2]]}, "prompt[0]"),
    ],
)
async def test_what_openai_refuses_in_a_completion_is_a_400_naming_it(
    caller: Caller, fields: dict[str, Any], param: str
) -> None:
    body = {"model": INSTRUCT_MODEL, "prompt": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        await caller.sdk.post("/completions", body=body, cast_to=object)
    assert raised.value.body is not None
    assert raised.value.body["param"] == param  # type: ignore[index]
    assert caller.upstream.received == []


async def test_the_sim_completes_and_streams_the_same_text(caller: Caller) -> None:
    whole = await caller.sdk.completions.create(model="sim-small", prompt="Once", max_tokens=6, n=2)
    texts = [c.text for c in whole.choices]
    assert len(texts) == 2 and all(len(t.split()) == 6 for t in texts)
    assert [c.finish_reason for c in whole.choices] == ["length", "length"]
    record = caller.last_record()
    assert (record.api, record.provider, record.completion_tokens) == ("completions", "sim", 12)
    stream = await caller.sdk.completions.create(
        model="sim-small", prompt="Once", max_tokens=6, n=2, stream=True
    )
    streamed = {0: "", 1: ""}
    async for chunk in stream:
        streamed[chunk.choices[0].index] += chunk.choices[0].text
    assert list(streamed.values()) == texts
    assert caller.last_record().cost_nanousd == record.cost_nanousd > 0


# --- models -----------------------------------------------------------------------------


async def test_a_model_the_key_may_use_is_retrieved_any_other_is_not_found(
    caller: Caller,
) -> None:
    known = await caller.sdk.models.retrieve("sim-small")
    assert (known.id, known.object, known.owned_by) == ("sim-small", "model", "sim")
    with pytest.raises(openai.NotFoundError) as unknown:
        await caller.sdk.models.retrieve("no-such-model")
    assert unknown.value.body is not None
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    scoped = await caller.stack.sdk_for("narrow", models=["sim-small"])
    listed = [m.id async for m in scoped.models.list()]
    assert listed == ["sim-small"]
    with pytest.raises(openai.NotFoundError) as forbidden:
        await scoped.models.retrieve("sim-large")  # exists, but not for this key
    assert forbidden.value.body is not None
    assert forbidden.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert (await scoped.models.retrieve("sim-small")).id == "sim-small"
    await scoped.close()
