"""The doctor's checks, each joining probes (`govledger.doctor.probes`) to a pure judgement
(`govledger.doctor.checks`), and the run: every check at once, each under its own
timeout, the whole under another; one result per check, in a fixed order."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from govledger.doctor import checks
from govledger.doctor.checks import CheckResult, Status
from govledger.doctor.contradictions import contradictions
from govledger.doctor.probes import HttpReply, NotAllowedError, ProbeError, Probes, my_uid
from schemas.settings import (
    DoctorSettings,
    GatewaySettings,
    RuntimeSettings,
    SinkSettings,
    StreamSettings,
)
from schemas.topics import CATALOGUE, CONTROL, LINEAGE

# The Faust worker's page that answers 200 once its intake is assigned (streams.intake).
WORKER_READY_PATH = "/ready/"
# What the worker's intake reads (streams.intake; the agents read its channels).
INTAKE_TOPICS = (LINEAGE.name, CONTROL.name)


@dataclasses.dataclass(frozen=True)
class Context:
    """What the checks read: every service's settings, as this environment gives them,
    and the probes."""

    runtime: RuntimeSettings
    gateway: GatewaySettings
    sink: SinkSettings
    stream: StreamSettings
    doctor: DoctorSettings
    probes: Probes
    admin_token: str | None  # None when there is none to find

    @property
    def embedded(self) -> bool:
        """The embedded runtime (`govledger up` with no broker configured)."""
        return not self.runtime.kafka_bootstrap

    @property
    def worker_ready_url(self) -> str | None:
        port = self.stream.worker_web_port
        return f"http://127.0.0.1:{port}{WORKER_READY_PATH}" if port > 0 else None


def bootstrap_of(runtime: RuntimeSettings) -> str:
    """The broker doctor asks: the configured one, else the embedded broker's port."""
    return runtime.kafka_bootstrap or f"127.0.0.1:{runtime.broker_port}"


Check = Callable[[Context], Awaitable[CheckResult]]


def _result(name: str, found: tuple[Status, str], hint: str) -> CheckResult:
    return CheckResult(name, found[0], found[1], hint)


# --- the checks, in report order -----------------------------------------------------------


async def check_settings(ctx: Context) -> CheckResult:
    values: dict[str, Any] = {}
    for settings in (ctx.runtime, ctx.gateway, ctx.sink, ctx.stream, ctx.doctor):
        values.update(dataclasses.asdict(settings))
    found = contradictions(values)
    if not found:
        return CheckResult("settings", Status.OK, "no settings contradict each other")
    status = checks.worst([c.rule.status for c in found])
    return CheckResult(
        "settings",
        status,
        "; ".join(c.text() for c in found),
        "; ".join(c.rule.hint for c in found),
    )


async def check_broker(ctx: Context) -> CheckResult:
    hint = (
        "start the stack (`govledger up`)"
        if ctx.embedded
        else "start the broker or fix GOVLEDGER_KAFKA_BOOTSTRAP and the broker login"
    )
    try:
        await ctx.probes.topics([])  # lists the topics: the broker answered
    except ProbeError as exc:
        return CheckResult("broker", Status.FAIL, str(exc), hint)
    return CheckResult("broker", Status.OK, f"reachable at {bootstrap_of(ctx.runtime)}")


async def check_topics(ctx: Context) -> CheckResult:
    expected = {t.name: t.compacted for t in CATALOGUE}
    found = await ctx.probes.topics(list(expected))
    return _result(
        "topics",
        checks.topic_findings(expected, found, ctx.runtime.topic_partitions),
        "start the sink (it creates the topics) or create them as compose/kafka-init.sh does",
    )


async def check_store(ctx: Context) -> CheckResult:
    from sinks.store import migrations

    hint = "start the sink (`govledger sink`; it applies migrations at start)"
    try:
        rows = await ctx.probes.query("SELECT number FROM schema_migrations ORDER BY number")
    except ProbeError as exc:
        return CheckResult("store", Status.FAIL, str(exc), hint)
    applied = [int(row[0]) for row in rows]
    shipped = [number for number, _, _ in migrations()]
    return _result("store", checks.migration_findings(shipped, applied), hint)


async def _service(
    ctx: Context, name: str, url: str, hint: str
) -> tuple[CheckResult, HttpReply | None]:
    try:
        reply = await ctx.probes.get(url)
    except ProbeError as exc:
        return CheckResult(name, Status.FAIL, str(exc), hint), None
    if reply.status != 200:
        return CheckResult(name, Status.FAIL, f"{url} answered {reply.status}", hint), reply
    return CheckResult(name, Status.OK, f"{url} answered 200"), reply


async def check_gateway(ctx: Context) -> CheckResult:
    url = f"{ctx.gateway.gateway_url}/healthz"
    result, reply = await _service(
        ctx, "gateway", url, "start the gateway, or set GOVLEDGER_GATEWAY_HOST/_PORT to reach it"
    )
    if result.status is not Status.OK or reply is None:
        return result
    try:
        body = json.loads(reply.body)
    except ValueError:
        body = {}
    overflow = body.get("lineage_overflow", 0) if isinstance(body, dict) else 0
    if isinstance(overflow, int) and overflow > 0:
        return CheckResult(
            "gateway",
            Status.WARN,
            f"served {overflow} call(s) whose lineage the outbox could not keep",
            "free the gateway's data dir, raise GOVLEDGER_LINEAGE_SPOOL_MAX_BYTES",
        )
    return result


async def check_query_api(ctx: Context) -> CheckResult:
    result, _ = await _service(
        ctx,
        "query-api",
        f"{ctx.sink.query_url}/ping",
        "start the sink (it serves the query API), or set GOVLEDGER_QUERY_HOST/_PORT",
    )
    return result


async def _group(ctx: Context, group_id: str, topics: tuple[str, ...]) -> tuple[Status, str]:
    view = await ctx.probes.group(group_id, topics)
    return checks.group_findings(
        view,
        ctx.probes.now_ms(),
        int(ctx.stream.worker_commit_stall_s * 1000),
        ctx.doctor.doctor_lag_warn_records,
    )


async def _group_or_why(ctx: Context, group_id: str, topics: tuple[str, ...]) -> tuple[Status, str]:
    """The group's findings, or why the broker could not give them (an ACL refusal is
    this user's limit, not the group's fault: a warning)."""
    try:
        return await _group(ctx, group_id, topics)
    except NotAllowedError as exc:
        return Status.WARN, f"group {group_id}: {exc}"
    except ProbeError as exc:
        return Status.FAIL, f"group {group_id}: {exc}"


async def check_worker(ctx: Context) -> CheckResult:
    hint = "start the worker (`govledger worker`); a stall clears with a worker restart"
    found: list[tuple[Status, str]] = []
    url = ctx.worker_ready_url
    if url is not None:
        try:
            reply = await ctx.probes.get(url)
            ready = (Status.OK if reply.status == 200 else Status.FAIL, f"ready {reply.status}")
        except ProbeError as exc:
            # Outside the embedded stack the worker's web page is on its own host.
            ready = (Status.FAIL if ctx.embedded else Status.WARN, str(exc))
        found.append(ready)
    found.append(await _group_or_why(ctx, f"{ctx.stream.worker_app_id}-intake", INTAKE_TOPICS))
    status = checks.worst([s for s, _ in found])
    return CheckResult("worker", status, "; ".join(d for _, d in found), hint)


async def check_sink(ctx: Context) -> CheckResult:
    from sinks.writer import CONSUMER_GROUP, SINK_TOPICS

    found = await _group_or_why(ctx, CONSUMER_GROUP, SINK_TOPICS)
    return _result("sink", found, "start the sink (`govledger sink`); see its log for the store")


async def check_clock(ctx: Context) -> CheckResult:
    urls = {
        "gateway": f"{ctx.gateway.gateway_url}/healthz",
        "query-api": f"{ctx.sink.query_url}/ping",
    }
    if ctx.embedded and ctx.worker_ready_url is not None:
        urls["worker"] = ctx.worker_ready_url

    async def one(url: str) -> Any:
        # A part that does not answer is its own check's failure; the others' clocks
        # still count (within half this check's time).
        try:
            return await asyncio.wait_for(
                ctx.probes.get(url), ctx.doctor.doctor_check_timeout_s / 2
            )
        except (ProbeError, TimeoutError):
            return None

    replies = await asyncio.gather(*(one(u) for u in urls.values()))
    skews: dict[str, int] = {}
    for name, reply in zip(urls, replies, strict=True):
        server_ms = None if reply is None else checks.date_header_ms(reply.date)
        if reply is not None and server_ms is not None:
            skews[name] = checks.skew_ms(reply.sent_ms, reply.received_ms, server_ms)
    found = checks.skew_findings(skews, ctx.doctor.doctor_clock_skew_max_ms)
    hint = "run NTP (chrony, systemd-timesyncd) on every host"
    return _result("clock", found, hint if skews else "start the parts the checks above name")


async def check_data_dir(ctx: Context) -> CheckResult:
    path = ctx.runtime.data_path
    found = ctx.probes.stat(path)
    hint = f"chmod o-w {path}" if found else "start the stack once, or set GOVLEDGER_DATA_DIR"
    return _result("data-dir", checks.data_dir_findings(str(path), found), hint)


async def check_admin_token(ctx: Context) -> CheckResult:
    from govledger.admin_token import TOKEN_FILE

    if ctx.runtime.admin_token:
        found = checks.admin_token_findings(ctx.runtime.admin_token, generated=False)
        return _result("admin-token", found, "set GOVLEDGER_ADMIN_TOKEN to 32+ random characters")
    path = ctx.runtime.data_path / TOKEN_FILE
    present = ctx.probes.stat(path)
    hint = (
        f"chmod 600 {path}"
        if present
        else f"start the stack once (it makes {path}) or set GOVLEDGER_ADMIN_TOKEN"
    )
    stat_found = checks.secret_file_findings("admin token", str(path), present, my_uid(), ours=True)
    if stat_found[0] is Status.FAIL or ctx.admin_token is None:
        return _result("admin-token", stat_found, hint)
    shape = checks.admin_token_findings(ctx.admin_token, generated=True)
    found = (checks.worst([stat_found[0], shape[0]]), f"{shape[1]}; {stat_found[1]}")
    return _result("admin-token", found, hint)


async def check_root_secret(ctx: Context) -> CheckResult:
    from schemas import authn

    path = authn.keyring_path(ctx.runtime.data_path, ctx.runtime.root_secret_file)
    ours = not ctx.runtime.root_secret_file
    present = ctx.probes.stat(path)
    if present is None:
        hint = f"restore {path} from its backup (a new install: start the stack once)"
    elif ours:
        hint = f"chmod 600 {path}"
    else:
        hint = f"protect {path} (chmod 600; compose: keep compose/secrets/ at 0700)"
    stat_found = checks.secret_file_findings(
        "root keyring", str(path), present, my_uid(), ours=ours
    )
    if stat_found[0] is Status.FAIL:
        return _result("root-secret", stat_found, hint)
    try:
        keyring = authn.resolve_keyring(
            ctx.runtime.data_path, ctx.runtime.root_secret_file, create=False
        )
    except (authn.KeyringError, OSError) as exc:
        return CheckResult("root-secret", Status.FAIL, str(exc), hint)
    detail = f"{len(keyring.ids)} root(s), signing {keyring.signing_id}; {stat_found[1]}"
    return CheckResult("root-secret", stat_found[0], detail, hint)


async def check_schemas(_: Context) -> CheckResult:
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    folder = resources.files("schemas") / "avro"
    published = json.loads((resources.files("schemas") / "published.json").read_text())
    current: dict[str, tuple[str, str]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".avsc"):
            continue
        raw = entry.read_bytes()
        source = json.loads(raw)
        crc = bytes.fromhex(fingerprint(to_parsing_canonical_form(source), "CRC-64-AVRO"))
        # published.json keeps the fingerprint little-endian, as the wire carries it.
        current[entry.name] = (hashlib.sha256(raw).hexdigest(), crc.hex())
        sources[entry.name] = source
    found = checks.schema_findings(published, current, sources)
    return _result(
        "schemas",
        found,
        "restore the published .avsc files; change a schema by adding name.vN+1.avsc",
    )


CHECKS: tuple[tuple[str, Check], ...] = (
    ("settings", check_settings),
    ("broker", check_broker),
    ("topics", check_topics),
    ("store", check_store),
    ("query-api", check_query_api),
    ("sink", check_sink),
    ("worker", check_worker),
    ("gateway", check_gateway),
    ("clock", check_clock),
    ("data-dir", check_data_dir),
    ("admin-token", check_admin_token),
    ("root-secret", check_root_secret),
    ("schemas", check_schemas),
)


async def _bounded(name: str, check: Check, ctx: Context, timeout_s: float) -> CheckResult:
    try:
        return await asyncio.wait_for(check(ctx), timeout=timeout_s)
    except TimeoutError:
        return CheckResult(
            name,
            Status.FAIL,
            f"no answer within {timeout_s:g} s",
            "see the part's log; GOVLEDGER_DOCTOR_CHECK_TIMEOUT_S sets the limit",
        )
    except ProbeError as exc:
        return CheckResult(name, Status.FAIL, str(exc), "see the `broker` check and its fix")


async def run_checks(
    ctx: Context, selected: tuple[tuple[str, Check], ...] = CHECKS
) -> list[CheckResult]:
    """Every check at once, each within GOVLEDGER_DOCTOR_CHECK_TIMEOUT_S, all within
    GOVLEDGER_DOCTOR_TIMEOUT_S; one result per check in `selected`'s order."""
    per_check_s = ctx.doctor.doctor_check_timeout_s
    tasks = [
        asyncio.create_task(_bounded(name, check, ctx, per_check_s)) for name, check in selected
    ]
    _, pending = await asyncio.wait(tasks, timeout=ctx.doctor.doctor_timeout_s)
    for task in pending:
        task.cancel()
    results: list[CheckResult] = []
    for (name, _), task in zip(selected, tasks, strict=True):
        if task in pending:
            results.append(
                CheckResult(
                    name,
                    Status.FAIL,
                    f"not done within the run's {ctx.doctor.doctor_timeout_s:g} s",
                    "raise GOVLEDGER_DOCTOR_TIMEOUT_S or see the part's log",
                )
            )
        else:
            results.append(task.result())
    return results
