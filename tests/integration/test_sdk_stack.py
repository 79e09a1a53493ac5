"""The official `openai` and `anthropic` SDKs against the running stack (the shared one:
real broker, worker, sink and gateway), served by the sim and by an OpenAI-compatible
upstream that records what it received (the component tier's fake, over HTTP:
tests/conftest.py's `shared_upstream`). The upstream gets each body the SDK sent, changed
only where the gateway acts (the model an alias maps to; usage asked for on a stream),
the SDK gets the reply whole, and each call is one lineage row in the store with the API
it came in by and its token counts."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tests.component.api_upstream import EMBED_MODEL, TOKENS_PER_INPUT, vector
from tests.component.openai_upstream import (
    COMPLETION_TOKENS_PER_CHOICE,
    FAITHFUL_MODEL,
    PROMPT_TOKENS,
    TOOL_ARGUMENTS,
    UPSTREAM_FINGERPRINT,
)
from tests.component.responses_upstream import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    RESPONSES_MODEL,
    TOOL_ANSWER,
    USAGE,
    ResponsesUpstream,
)
from tests.component.responses_upstream import (
    TOOL_ARGUMENTS as RESPONSES_TOOL_ARGUMENTS,
)
from tests.component.test_anthropic_messages import OPENAI_TOOL as TRANSLATED_TOOL
from tests.component.test_anthropic_messages import WEATHER_TOOL as CLAUDE_TOOL
from tests.component.test_faithful_proxy import ASK, WEATHER_TOOL, Weather
from tests.component.test_responses_api import WEATHER_TOOL as RESPONSES_TOOL
from tests.integration.stack import SHARED_UPSTREAM_ALIAS, RunningStack, wait_for

pytestmark = pytest.mark.integration

TENANT = f"sdk-{secrets.token_hex(4)}"
TEAM = "agents"
CACHED_INPUT_TOKENS = USAGE["input_tokens_details"]["cached_tokens"]  # type: ignore[index]
REASONING_TOKENS = USAGE["output_tokens_details"]["reasoning_tokens"]  # type: ignore[index]
ROW = "api, stream, decision, prompt_tokens, completion_tokens, cached_prompt_tokens, " + (
    "reasoning_tokens, model_selected"
)


@dataclass
class Caller:
    """The SDKs on a funded key of this module's tenant; every body the openai SDK sent,
    what the upstream received, and the lineage rows each call must have left."""

    stack: RunningStack
    upstream: ResponsesUpstream
    sdk: openai.OpenAI
    claude: anthropic.Anthropic
    sent: list[dict[str, Any]]
    expected_rows: dict[str, list[str]] = field(default_factory=dict)

    def traced(self, api: str, stream: bool, *counts: int, model: str) -> dict[str, str]:
        """Headers that trace one call, whose row must hold `api`, `stream`, decision
        allowed, its token counts (prompt, completion, cached, reasoning) and `model`."""
        trace_id = secrets.token_hex(16)
        row = [api, str(stream).lower(), "allowed", *map(str, (*counts, 0, 0, 0, 0)[:4]), model]
        self.expected_rows[trace_id] = row
        return {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}

    def forwarded_by(self, call: Callable[[], Any], *, model: str) -> Any:
        """Make the call; assert the upstream received exactly the bodies the SDK sent for
        it, `model` in place of the name asked for and usage asked for on a stream."""
        sent_before, received_before = len(self.sent), len(self.upstream.received)
        result = call()
        expected = []
        for body in self.sent[sent_before:]:
            forwarded = {**body, "model": model}
            if body.get("stream") and "messages" in body:  # chat: the gateway asks for usage
                forwarded["stream_options"] = {
                    **body.get("stream_options", {}),
                    "include_usage": True,
                }
            expected.append(forwarded)
        assert expected, "the SDK sent nothing"
        assert self.upstream.received[received_before:] == expected
        return result

    def assert_recorded(self) -> None:
        """Each traced call is one lineage row in the store, as expected (all looked up
        at once: the sink's batching would cost each test a wait of its own)."""
        traces = ", ".join(f"'{t}'" for t in self.expected_rows)
        query = f"SELECT trace_id, {ROW} FROM lineage WHERE trace_id IN ({traces})"

        def all_rows() -> list[list[str]] | None:
            rows = self.stack.sql(query)
            return rows if len(rows) >= len(self.expected_rows) else None

        rows = wait_for(all_rows, timeout_s=15)
        assert {r[0]: r[1:] for r in rows} == self.expected_rows
        assert len(rows) == len(self.expected_rows)
        self.expected_rows.clear()


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


@pytest.fixture(scope="module")
def caller(stack: RunningStack, shared_upstream: ResponsesUpstream) -> Iterator[Caller]:
    secret = stack.create_key(TEAM, tenant=TENANT)["key"]
    stack.fund(TEAM, "5", tenant=TENANT)
    wait_for(lambda: stack.balance_nanousd(TEAM, tenant=TENANT) > 0)
    sent: list[dict[str, Any]] = []

    def keep(request: httpx2.Request) -> None:
        if request.content:
            sent.append(orjson.loads(request.content))

    with (
        httpx2.Client(event_hooks={"request": [keep]}) as http,
        openai.OpenAI(
            base_url=stack.base_url, api_key=secret, max_retries=0, http_client=http
        ) as sdk,
        anthropic.Anthropic(
            base_url=stack.settings.gateway_url, api_key=secret, max_retries=0
        ) as claude,
    ):
        yield Caller(stack, shared_upstream, sdk, claude, sent)


FAITHFUL_ROW = (PROMPT_TOKENS, COMPLETION_TOKENS_PER_CHOICE)


# --- the openai SDK, an OpenAI-compatible upstream --------------------------------------


def test_a_tool_call_round_trip_reaches_the_upstream_as_sent(caller: Caller) -> None:
    first = caller.forwarded_by(
        lambda: caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL,
            messages=ASK,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            top_p=0.9,
            user="agent-7",
            metadata={"ticket": "T-7"},
            extra_body={"future_param": {"depth": [1, {"x": None}]}},
            extra_headers=caller.traced(
                "chat.completions", False, *FAITHFUL_ROW, model=FAITHFUL_MODEL
            ),
        ),
        model=FAITHFUL_MODEL,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_up_1",
        "get_weather",
        TOOL_ARGUMENTS,
    )
    assert first.system_fingerprint == UPSTREAM_FINGERPRINT
    assert choice.model_extra == {"future_field": {"kept": True}}
    answer = caller.forwarded_by(
        lambda: caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL,
            messages=[
                *ASK,
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21.5}'},
            ],
            tools=[WEATHER_TOOL],
            extra_headers=caller.traced(
                "chat.completions", False, *FAITHFUL_ROW, model=FAITHFUL_MODEL
            ),
        ),
        model=FAITHFUL_MODEL,
    )
    assert answer.choices[0].message.content == "It is 21.5 C in Paris (choice 0)."


def test_a_streamed_tool_call_arrives_in_deltas(caller: Caller) -> None:
    chunks = caller.forwarded_by(
        lambda: list(
            caller.sdk.chat.completions.create(
                model=FAITHFUL_MODEL,
                messages=ASK,
                tools=[WEATHER_TOOL],
                tool_choice="required",
                stream=True,
                extra_headers=caller.traced(
                    "chat.completions", True, *FAITHFUL_ROW, model=FAITHFUL_MODEL
                ),
            )
        ),
        model=FAITHFUL_MODEL,
    )
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]  # no empty choices
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == TOOL_ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.usage is None for c in chunks)  # not asked for: not sent


def test_parse_with_a_pydantic_model_through_an_alias(caller: Caller) -> None:
    completion = caller.forwarded_by(
        lambda: caller.sdk.chat.completions.parse(
            model=SHARED_UPSTREAM_ALIAS,
            messages=ASK,
            response_format=Weather,
            extra_headers=caller.traced(
                "chat.completions", False, *FAITHFUL_ROW, model=FAITHFUL_MODEL
            ),
        ),
        model=FAITHFUL_MODEL,
    )
    assert completion.choices[0].message.parsed == Weather(
        city="Paris", temperature_c=21.5, conditions=["sunny"]
    )
    assert completion.model == SHARED_UPSTREAM_ALIAS
    assert caller.upstream.received[-1]["response_format"]["json_schema"]["name"] == "Weather"


def test_two_choices_with_logprobs(caller: Caller) -> None:
    completion = caller.forwarded_by(
        lambda: caller.sdk.chat.completions.create(
            model=FAITHFUL_MODEL,
            messages=ASK,
            n=2,
            logprobs=True,
            top_logprobs=2,
            extra_headers=caller.traced(
                "chat.completions",
                False,
                PROMPT_TOKENS,
                2 * COMPLETION_TOKENS_PER_CHOICE,
                model=FAITHFUL_MODEL,
            ),
        ),
        model=FAITHFUL_MODEL,
    )
    assert [c.message.content for c in completion.choices] == ["Answer 0.", "Answer 1."]
    for choice in completion.choices:
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert [len(t.top_logprobs) for t in choice.logprobs.content] == [2, 2]


RESPONSES_ROW = (INPUT_TOKENS, OUTPUT_TOKENS, CACHED_INPUT_TOKENS, REASONING_TOKENS)


def test_a_response_with_a_tool_and_its_answer_streamed(caller: Caller) -> None:
    question: Any = [{"role": "user", "content": "Weather in Paris?"}]
    first = caller.forwarded_by(
        lambda: caller.sdk.responses.create(
            model=RESPONSES_MODEL,
            input=question,
            tools=[RESPONSES_TOOL],
            tool_choice="auto",
            metadata={"ticket": "T-1"},
            extra_body={"future_param": {"x": 1}},
            extra_headers=caller.traced("responses", False, *RESPONSES_ROW, model=RESPONSES_MODEL),
        ),
        model=RESPONSES_MODEL,
    )
    (call,) = first.output
    assert (call.type, call.name, call.arguments) == (
        "function_call",
        "get_weather",
        RESPONSES_TOOL_ARGUMENTS,
    )
    assert first.model_extra == {"future_field": {"kept": True}}
    answered = [
        *question,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"c": 21.5}'},
    ]
    events = caller.forwarded_by(
        lambda: list(
            caller.sdk.responses.create(
                model=RESPONSES_MODEL,
                input=answered,
                tools=[RESPONSES_TOOL],
                stream=True,
                extra_headers=caller.traced(
                    "responses", True, *RESPONSES_ROW, model=RESPONSES_MODEL
                ),
            )
        ),
        model=RESPONSES_MODEL,
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == TOOL_ANSWER
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS


def test_embeddings_and_models_retrieve(caller: Caller) -> None:
    texts = ["The quarterly ledger", "balances"]
    reply = caller.forwarded_by(
        lambda: caller.sdk.embeddings.create(
            model=EMBED_MODEL,
            input=texts,
            dimensions=3,
            extra_headers=caller.traced(
                "embeddings", False, 2 * TOKENS_PER_INPUT, 0, model=EMBED_MODEL
            ),
        ),
        model=EMBED_MODEL,
    )
    assert [d.embedding for d in reply.data] == [vector(0, 3), vector(1, 3)]  # base64, decoded
    assert caller.sent[-1]["encoding_format"] == "base64"
    served = caller.sdk.models.retrieve(FAITHFUL_MODEL)
    assert (served.id, served.owned_by) == (FAITHFUL_MODEL, "openai")
    with pytest.raises(openai.NotFoundError):
        caller.sdk.models.retrieve("no-such-model")


# --- the anthropic SDK, by the sim and by an OpenAI-compatible upstream -----------------


def test_anthropic_messages_with_tools_by_an_openai_upstream(caller: Caller) -> None:
    received_before = len(caller.upstream.received)
    first = caller.claude.messages.create(
        model=FAITHFUL_MODEL,
        max_tokens=200,
        system="You are terse.",
        messages=ASK,
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "auto"},
        extra_headers=caller.traced("messages", False, *FAITHFUL_ROW, model=FAITHFUL_MODEL),
    )
    assert first.stop_reason == "tool_use"
    (tool_use,) = first.content
    assert tool_use.type == "tool_use"
    assert (tool_use.name, tool_use.input) == ("get_weather", json.loads(TOOL_ARGUMENTS))
    assert caller.upstream.received[received_before:] == [
        {
            "model": FAITHFUL_MODEL,
            "messages": [{"role": "system", "content": "You are terse."}, *ASK],
            "max_tokens": 200,
            "tools": [TRANSLATED_TOOL],
            "tool_choice": "auto",
        }
    ]
    with caller.claude.messages.stream(
        model=FAITHFUL_MODEL,
        max_tokens=100,
        messages=ASK,
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "any"},
        extra_headers=caller.traced("messages", True, *FAITHFUL_ROW, model=FAITHFUL_MODEL),
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", json.loads(TOOL_ARGUMENTS))
    ]
    assert kinds.count("input_json") == 2  # the upstream's two argument pieces
    assert caller.upstream.received[received_before + 1 :] == [
        {
            "model": FAITHFUL_MODEL,
            "messages": ASK,
            "max_tokens": 100,
            "tools": [TRANSLATED_TOOL],
            "tool_choice": "required",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ]


def test_anthropic_messages_with_tools_by_the_sim(caller: Caller) -> None:
    received_before = len(caller.upstream.received)
    trace = caller.traced("messages", False, model="sim-small")
    first = caller.claude.messages.create(
        model="sim-small", max_tokens=50, messages=ASK, tools=[CLAUDE_TOOL], extra_headers=trace
    )
    assert first.stop_reason == "tool_use"
    (tool_use,) = first.content
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    _set_counts(caller, trace, first.usage.input_tokens, first.usage.output_tokens)
    result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "21.5 C"}
    answered: Any = [
        *ASK,
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [result]},
    ]
    trace = caller.traced("messages", True, model="sim-small")
    with caller.claude.messages.stream(
        model="sim-small",
        max_tokens=50,
        messages=answered,
        tools=[CLAUDE_TOOL],
        extra_headers=trace,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", text)]
    assert text
    _set_counts(caller, trace, final.usage.input_tokens, final.usage.output_tokens)
    assert caller.upstream.received[received_before:] == []  # the sim served both


def _set_counts(caller: Caller, headers: dict[str, str], prompt: int, completion: int) -> None:
    """The row of a sim call holds the tokens its reply reported."""
    trace_id = headers["traceparent"].split("-")[1]
    caller.expected_rows[trace_id][3:5] = [str(prompt), str(completion)]


# Checks the calls of every test above: keep it last.
def test_each_call_above_is_one_lineage_row_with_its_api_and_token_counts(
    caller: Caller,
) -> None:
    if not caller.expected_rows:
        pytest.skip("no call traced: run with the module's other tests")
    caller.assert_recorded()
