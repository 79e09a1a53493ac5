"""Typed settings: one frozen dataclass per service, every field an environment variable.

Each field is read from ``GOVLEDGER_<FIELD_NAME_UPPER>``. Any ``GOVLEDGER_*`` variable that
no settings class declares is rejected, so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

from schemas.settings_base import (
    CLUSTER_NAME,
    ENV_PREFIX,
    KAFKA_SASL_MECHANISMS,
    KAFKA_SECURITY_PROTOCOLS,
    LOG_FORMATS,
    CommonSettings,
    SettingsError,
    env_name,
    read_secret_file,
    setting,
)

# Re-exported: every module imports settings from here.
__all__ = [
    "CLUSTER_NAME",
    "ENV_PREFIX",
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "LOG_FORMATS",
    "CommonSettings",
    "SettingsError",
    "env_name",
    "read_secret_file",
    "setting",
]


@dataclasses.dataclass(frozen=True)
class RuntimeSettings(CommonSettings):
    """Settings of `govledger up`, the embedded runtime."""

    broker_port: int = setting(19092, "Port of the embedded Tansu broker on 127.0.0.1.")
    start_timeout_s: float = setting(60.0, "How long `up` waits for each child to become ready.")
    restart_limit: int = setting(
        5, "Restarts of one part within GOVLEDGER_RESTART_WINDOW_S past which `up` gives up."
    )
    restart_window_s: float = setting(60.0, "Window (seconds) of the crash-loop count.")
    restart_backoff_s: float = setting(
        0.5, "Wait before restarting a part that exited; doubles per restart in the window."
    )
    restart_backoff_max_s: float = setting(10.0, "Longest wait before restarting a part.")
    restart_stop_grace_s: float = setting(
        10.0, "How long parts get to stop on SIGTERM when a dead broker takes them down."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.restart_limit < 0 or self.restart_window_s <= 0:
            raise SettingsError("GOVLEDGER_RESTART_LIMIT must be >= 0, the window positive")
        if not 0 <= self.restart_backoff_s <= self.restart_backoff_max_s:
            raise SettingsError("GOVLEDGER_RESTART_BACKOFF_S must be within 0.._MAX_S")
        if self.restart_stop_grace_s <= 0:
            raise SettingsError("GOVLEDGER_RESTART_STOP_GRACE_S must be positive")


# A gateway serving "api" publishes no control record, so its broker user can be refused
# the control topic; "admin" runs the admin API alone (see compose/).
GATEWAY_SERVES = ("all", "api", "admin")


@dataclasses.dataclass(frozen=True)
class BreakerSettings(CommonSettings):
    """The breaker rules, declared once: the gateways' breakers and the worker's fleet-wide
    ones follow the same variables (documented with the gateway's settings)."""

    breaker_failure_threshold: int = setting(
        5, "Failures of one (provider, model) within the window that open its breaker."
    )
    breaker_failure_window_s: float = setting(30.0, "Window in which breaker failures count.")
    breaker_reset_timeout_s: float = setting(30.0, "How long a breaker stays open before probes.")


@dataclasses.dataclass(frozen=True)
class GatewaySettings(BreakerSettings):
    """Settings of the gateway."""

    max_body_bytes: int = setting(1_048_576, "Largest request body accepted; larger gets 413.")
    max_messages: int = setting(1024, "Most messages one chat request may carry.")
    default_tenant: str = setting("default", "Tenant of keys created without --tenant.")
    sim_latency_ms: float = setting(0.0, "Latency the sim provider adds per call.")
    sim_error_rate: float = setting(0.0, "Fraction of sim calls that fail with 503 (0..1).")
    sim_chunk_tokens: int = setting(4, "Tokens per streamed chunk from the sim provider.")
    sim_completion_tokens: int = setting(24, "Completion tokens the sim provider returns.")
    upstream_base_url: str = setting(
        "", "Base URL of an OpenAI-compatible upstream (e.g. http://host/v1); empty disables it."
    )
    upstream_api_key: str = setting("", "API key sent to the OpenAI-compatible upstream.")
    upstream_models: str = setting("", "Comma-separated models served by the upstream provider.")
    upstream_timeout_s: float = setting(60.0, "Timeout of one upstream attempt.")
    fallbacks: str = setting(
        "", "Fallback chains: model=fallback1|fallback2;other=… (tried in order on failure)."
    )
    upstream_retries: int = setting(1, "Retries of one target on a retryable failure.")
    retry_backoff_ms: int = setting(100, "First retry's backoff; doubles per retry, jittered.")
    retry_max_wait_ms: int = setting(2_000, "Longest wait before a retry, Retry-After included.")
    anthropic_api_key: str = setting("", "Anthropic API key; with anthropic_models, enables it.")
    anthropic_models: str = setting("", "Comma-separated Claude models served via Anthropic.")
    anthropic_base_url: str = setting("https://api.anthropic.com", "Anthropic API base URL.")
    azure_endpoint: str = setting("", "Azure OpenAI endpoint (https://NAME.openai.azure.com).")
    azure_api_key: str = setting("", "Azure OpenAI API key (sent as api-key).")
    azure_api_version: str = setting("2024-10-21", "Azure OpenAI api-version.")
    azure_deployments: str = setting(
        "", "Azure models as model=deployment pairs, comma-separated; enables Azure."
    )
    mistral_api_key: str = setting("", "Mistral API key; with mistral_models, enables it.")
    mistral_models: str = setting("", "Comma-separated models served via Mistral.")
    ollama_base_url: str = setting("", "Ollama's OpenAI-compatible URL (http://host:11434/v1).")
    ollama_models: str = setting("", "Comma-separated models served by Ollama.")
    lineage_linger_ms: int = setting(
        20,
        "Producer linger for lineage records: they are in the outbox before the answer and "
        "nothing waits for their acks, so a longer linger batches them (fewer requests).",
    )
    lineage_max_pending: int = setting(
        100_000, "Most lineage records awaiting broker acks; past it calls get 503 overloaded."
    )
    region: str = setting("local", "Region this gateway serves, recorded on every call.")
    gateway_name: str = setting(
        "", "Name packs target this gateway by (`targeting.gateways`); empty: none does."
    )
    model_groups: str = setting(
        "", "Weighted model groups: group=model:weight|model:weight;… (A/B splits, canaries)."
    )
    target_regions: str = setting(
        "", "Region of each served model, model=region,…; unlisted models are in `region`."
    )
    tenant_regions: str = setting(
        "", "Regions each tenant may be served in: tenant=region|region;… (data residency)."
    )
    breaker_half_open_requests: int = setting(1, "Probe calls a half-open breaker lets through.")
    team_rate_limits: str = setting(
        "", "Per-team limits on each gateway: tenant/team=rpm:tpm;… (0 is unlimited)."
    )
    max_header_bytes: int = setting(16_384, "Largest total size of request headers; more gets 431.")
    max_concurrent_upstream: int = setting(
        512, "Most upstream calls in flight; past it calls are shed at once with 503."
    )
    lineage_fail_closed: bool = setting(
        False, "Refuse calls (503) while lineage cannot be kept or sent, instead of serving."
    )
    lineage_spool_max_bytes: int = setting(
        256 * 1_048_576, "Largest outbox (records not yet stored) per producer; past it: overflow."
    )
    checkpoint_every_records: int = setting(
        1_000, "Records of a gateway's chain between two chain checkpoints."
    )
    checkpoint_interval_s: float = setting(
        60.0, "Seconds between chain checkpoints when records came (and one at stop)."
    )
    gateway_serves: str = setting(
        "all", "Routes served: all, api (chat and models, no admin API) or admin (admin API only)."
    )
    max_identifier_chars: int = setting(
        256, "Longest `model` and `user` a chat request may name; longer gets 400."
    )
    max_choices: int = setting(128, "Largest `n` (choices) a chat request may ask for.")
    max_json_depth: int = setting(32, "Deepest nesting of arrays and objects in a request body.")
    max_json_members: int = setting(
        4096, "Most members of one array or object in a request body; more gets 400."
    )
    outbox_fsync_interval_ms: int = setting(
        50, "Most milliseconds between two fsyncs of the outbox (batched, not per call)."
    )
    outbox_resend_after_s: float = setting(
        60.0, "Seconds a sent record may stay unconfirmed by the store before it is sent again."
    )
    max_embedding_dimensions: int = setting(
        16_384, "Largest `dimensions` an embeddings request may ask for; more gets 400."
    )
    metrics_tenant_labels_max: int = setting(
        20, "Tenants with their own metrics label (first seen); the rest count as `other`."
    )
    gateway_processes: int = setting(
        1, "Gateway processes on one port (SO_REUSEPORT), each a producer; 0: by cores (docs)."
    )
    gateway_process_index: int = setting(
        0, "Which of the gateway processes this is (1..N), set by their parent; 0: none."
    )
    gateway_metrics_port: int = setting(
        0, "With several processes, process k also serves /metrics on this port + k - 1; 0: no."
    )
    admission_target_delay_ms: float = setting(
        5.0, "Event-loop lag tolerated; above it for an interval, calls past a lower limit get 503."
    )
    admission_interval_ms: float = setting(
        100.0, "Window the loop lag must stay above its target in to count as overload."
    )
    admission_min_calls: int = setting(
        4, "Fewest calls in flight the adaptive admission limit lets through (at least 1)."
    )
    admission_retry_after_s: int = setting(
        1, "Retry-After, in seconds, of a call refused 503 overloaded by the admission limit."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gateway_serves not in GATEWAY_SERVES:
            raise SettingsError(
                f"GOVLEDGER_GATEWAY_SERVES={self.gateway_serves!r} is not one of "
                + ", ".join(GATEWAY_SERVES)
            )
        if not 0.0 <= self.sim_error_rate <= 1.0:
            raise SettingsError("GOVLEDGER_SIM_ERROR_RATE is a fraction between 0 and 1")
        for name in (
            "max_body_bytes",
            "max_messages",
            "sim_chunk_tokens",
            "sim_completion_tokens",
            "breaker_failure_threshold",
            "breaker_half_open_requests",
            "max_header_bytes",
            "max_concurrent_upstream",
            "checkpoint_every_records",
            "max_identifier_chars",
            "max_choices",
            "max_json_depth",
            "max_json_members",
            "outbox_fsync_interval_ms",
            "max_embedding_dimensions",
            "admission_min_calls",
            "admission_retry_after_s",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)} must be at least 1")
        if self.checkpoint_interval_s <= 0:
            raise SettingsError("GOVLEDGER_CHECKPOINT_INTERVAL_S must be positive")
        if self.outbox_resend_after_s <= 0:
            raise SettingsError("GOVLEDGER_OUTBOX_RESEND_AFTER_S must be positive")
        if self.gateway_processes < 0 or not 0 <= self.gateway_process_index <= 1024:
            raise SettingsError("GOVLEDGER_GATEWAY_PROCESSES must be >= 0, the index 0..1024")
        if not 0 <= self.gateway_metrics_port < 65536:
            raise SettingsError("GOVLEDGER_GATEWAY_METRICS_PORT must be a TCP port or 0")
        if self.admission_target_delay_ms < 0 or self.admission_interval_ms <= 0:
            raise SettingsError(
                "GOVLEDGER_ADMISSION_TARGET_DELAY_MS must be >= 0 (0: off) and "
                "GOVLEDGER_ADMISSION_INTERVAL_MS positive"
            )


@dataclasses.dataclass(frozen=True)
class SinkSettings(CommonSettings):
    """Settings of the sink and query API (the process that owns the store)."""

    sink_batch_rows: int = setting(100_000, "Most rows in one insert.")
    sink_flush_ms: int = setting(250, "Longest a record waits in the sink before its insert.")
    query_max_rows: int = setting(100_000, "Most rows one SQL query returns.")
    restore_on_start: bool = setting(
        True, "Restore control events and balances into an empty broker from the store."
    )
    retention_interval_s: float = setting(
        3_600.0, "Seconds between two runs of the per-tenant retention job."
    )
    query_max_header_bytes: int = setting(
        16_384, "Largest request header field the query API accepts; larger gets 431."
    )
    sink_store_retry_base_ms: int = setting(
        200, "First wait before the sink tries an unwell store again; doubles per try."
    )
    sink_store_retry_max_ms: int = setting(
        30_000, "Longest wait between two tries of an unwell store (the sink retries forever)."
    )
    export_schedule_min_interval_s: float = setting(
        60.0, "Shortest time between two runs of one export schedule (--every or --cron)."
    )
    export_schedules_max_per_tenant: int = setting(
        20, "Most export schedules of one tenant (and of the org-wide ones)."
    )
    export_schedule_runs_kept: int = setting(
        20, "Runs of each export schedule listed with their outcome; older ones are dropped."
    )
    audit_verify_timeout_s: float = setting(
        600.0, "Longest one chain verification of the query API (POST /v1/audit/verify) runs."
    )
    audit_verify_runs_kept: int = setting(
        20, "Chain verifications the query API remembers (per sink, newest kept)."
    )
    store_cluster: str = setting(
        "",
        "ClickHouse cluster: migrations run ON CLUSTER with replicated tables; empty: one server.",
    )
    sink_consume_process: bool = setting(
        False, "Consume and check records in a child process feeding the store owner."
    )
    sink_fetch_wait_ms: int = setting(
        100,
        "Longest the sink waits for records in one fetch (at most GOVLEDGER_SINK_FLUSH_MS); "
        "an idle sink fetches this often.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retention_interval_s <= 0:
            raise SettingsError("GOVLEDGER_RETENTION_INTERVAL_S must be positive")
        if self.sink_fetch_wait_ms < 1:
            raise SettingsError("GOVLEDGER_SINK_FETCH_WAIT_MS must be positive")
        if not 0 < self.sink_store_retry_base_ms <= self.sink_store_retry_max_ms:
            raise SettingsError(
                "GOVLEDGER_SINK_STORE_RETRY_BASE_MS must be positive and at most "
                "GOVLEDGER_SINK_STORE_RETRY_MAX_MS"
            )
        if (
            min(
                self.export_schedule_min_interval_s,
                self.export_schedules_max_per_tenant,
                self.export_schedule_runs_kept,
            )
            <= 0
        ):
            raise SettingsError("GOVLEDGER_EXPORT_SCHEDULE* settings must be positive")
        if self.audit_verify_timeout_s <= 0 or self.audit_verify_runs_kept < 1:
            raise SettingsError("GOVLEDGER_AUDIT_VERIFY_* settings must be positive")
        # Replicated tables need a server with Keeper: chDB (the embedded store) has neither.
        if self.store_cluster and (
            not CLUSTER_NAME.match(self.store_cluster)
            or not self.clickhouse_dsn.startswith(("http://", "https://"))
        ):
            raise SettingsError(
                "GOVLEDGER_STORE_CLUSTER must be a cluster name and needs a ClickHouse server "
                "in GOVLEDGER_CLICKHOUSE_DSN"
            )


@dataclasses.dataclass(frozen=True)
class StreamSettings(BreakerSettings):
    """Settings of the Faust stream processors."""

    worker_app_id: str = setting("govledger-streams", "Faust application id (consumer group).")
    worker_web_port: int = setting(6066, "Port of the Faust worker's web endpoint (0 disables).")
    worker_web_host: str = setting(
        "127.0.0.1", "Address of the worker's web endpoint (/metrics, /ready/); 0.0.0.0 in compose."
    )
    worker_checkpoint_interval_s: float = setting(
        60.0, "Seconds between checkpoints of the processors' hash chains (and one at stop)."
    )
    worker_commit_stall_s: float = setting(
        120.0,
        "Seconds a record a Faust agent read may stay uncommitted before the worker logs "
        "that its partition's commit position stalled (see streams/commit_watch.py).",
    )
    sla_grace_ms: int = setting(
        30_000, "How long after a minute ends its SLA window waits for records in flight."
    )
    sla_retention_ms: int = setting(
        3_600_000, "How long after a minute closed late records still correct it."
    )
    sla_tick_s: float = setting(5.0, "How often the SLA processor publishes the windows due.")
    sla_availability_min: float = setting(0.999, "SLA availability target of a minute (ratio).")
    sla_overhead_p99_max_ms: float = setting(50.0, "SLA target: gateway overhead p99 under this.")
    sla_min_eligible: int = setting(1, "Fewest eligible calls for a minute to be judged.")
    sla_resend_after_s: float = setting(
        60.0, "Seconds a sent SLA window may stay unconfirmed by the store before it is resent."
    )
    sla_outbox_max_bytes: int = setting(
        8 * 1_048_576, "Most bytes of unconfirmed SLA records kept per lineage partition (docs)."
    )
    escalation_central_categories: str = setting(
        "", "Escalation categories no one team owns, comma-separated; they go to `central`."
    )
    escalation_sla_s: str = setting(
        "P1=1800,P2=7200,P3=28800,P4=86400",
        "Seconds from opening to resolution per escalation priority (P1..P4), comma-separated.",
    )
    escalation_tick_s: float = setting(5.0, "How often overdue escalations are looked for.")
    topic_replication_factor: int = setting(
        1, "Replicas of the topics Faust creates (changelogs); 3 on a three-broker cluster."
    )
    worker_fetch_wait_ms: int = setting(
        20,
        "Longest the worker's intake waits for records in one fetch; bounds how late a "
        "balance shows on the embedded broker, and an idle worker fetches this often.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.worker_fetch_wait_ms <= 1_000:
            raise SettingsError("GOVLEDGER_WORKER_FETCH_WAIT_MS must be 1 to 1000")
        # Faust commits every few seconds: a shorter wait would call healthy partitions stalled.
        if self.worker_commit_stall_s < 10:
            raise SettingsError("GOVLEDGER_WORKER_COMMIT_STALL_S must be at least 10 seconds")
        if self.topic_replication_factor < 1:
            raise SettingsError("GOVLEDGER_TOPIC_REPLICATION_FACTOR must be at least 1")


@dataclasses.dataclass(frozen=True)
class DoctorSettings(CommonSettings):
    """Settings of `govledger doctor` (it also reads every service's settings)."""

    doctor_check_timeout_s: float = setting(
        5.0, "Longest one `govledger doctor` check may take; past it the check fails."
    )
    doctor_timeout_s: float = setting(20.0, "Longest a whole `govledger doctor` run may take.")
    doctor_clock_skew_max_ms: int = setting(
        2_000, "Largest clock difference doctor accepts between this host and a part."
    )
    doctor_lag_warn_records: int = setting(
        100_000, "Consumer-group lag (records) at which doctor warns."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.doctor_check_timeout_s <= 0 or self.doctor_timeout_s <= 0:
            raise SettingsError("GOVLEDGER_DOCTOR_CHECK_TIMEOUT_S and _TIMEOUT_S must be positive")
        if self.doctor_clock_skew_max_ms < 0 or self.doctor_lag_warn_records < 1:
            raise SettingsError("doctor's skew must be >= 0 ms and its lag warning >= 1 record")


@dataclasses.dataclass(frozen=True)
class ConsoleSettings(CommonSettings):
    """Settings of the web console (`govledger console`; `up` starts it on its port)."""

    console_host: str = setting("127.0.0.1", "Address the web console listens on.")
    console_port: int = setting(8125, "Port of the web console; 0: `up` does not start one.")
    console_session_ttl_s: float = setting(
        28_800.0, "How long a console login lasts (seconds) before it asks for the key again."
    )
    console_max_sessions: int = setting(
        1_000, "Most console sessions kept in memory; past it the oldest is logged out."
    )
    console_secure_cookie: bool = setting(
        False, "Mark the session cookie Secure (behind a TLS proxy); always so over TLS."
    )
    console_login_failures_per_minute: int = setting(
        10, "Failed console logins one address may make a minute; past it, 429 for a minute."
    )
    console_refresh_s: int = setting(5, "How often the Overview refreshes its figures (seconds).")
    console_api_timeout_s: float = setting(
        20.0, "Longest the console waits for the admin or query API on one request (seconds)."
    )
    console_worker_urls: str = setting(
        "http://127.0.0.1:6066",
        "Workers' web endpoints (comma-separated; dns+http://name:port: every address of "
        "name) whose /metrics the Overview reads; empty: none.",
    )
    console_worker_timeout_s: float = setting(
        2.0, "Longest the Overview waits for a worker's /metrics (seconds); then 'unknown'."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.console_port < 65536:
            raise SettingsError("GOVLEDGER_CONSOLE_PORT must be a TCP port, or 0 for none")
        if (
            self.console_session_ttl_s <= 0
            or self.console_max_sessions < 1
            or self.console_login_failures_per_minute < 1
        ):
            raise SettingsError(
                "the console session TTL, session count and login limit must be positive"
            )
        if not 1 <= self.console_refresh_s <= 3600 or self.console_api_timeout_s <= 0:
            raise SettingsError("GOVLEDGER_CONSOLE_REFRESH_S must be 1..3600, the timeout > 0")
        if self.console_worker_timeout_s <= 0:
            raise SettingsError("GOVLEDGER_CONSOLE_WORKER_TIMEOUT_S must be positive")
        for url in self.worker_metrics_urls:
            if not url.removeprefix("dns+").startswith(("http://", "https://")):
                raise SettingsError("GOVLEDGER_CONSOLE_WORKER_URLS are [dns+]http(s):// URLs")

    @property
    def console_url(self) -> str:
        """Base URL of the console."""
        return f"http://{self.console_host}:{self.console_port}"

    @property
    def worker_metrics_urls(self) -> tuple[str, ...]:
        """The /metrics URL of each worker the Overview reads."""
        bases = (u.strip().rstrip("/") for u in self.console_worker_urls.split(","))
        return tuple(f"{base}/metrics" for base in bases if base)


@dataclasses.dataclass(frozen=True)
class NotifySettings(CommonSettings):
    """Settings of the notifier (alerts to webhooks) and of the admin API's route checks."""

    notifier_enabled: bool = setting(True, "Whether `up` starts the notifier part.")
    notify_allowed_hosts: str = setting(
        "", "Webhook hosts allowed, comma-separated: name, *.suffix or http://name; empty: none."
    )
    notify_private_hosts: str = setting("", "Allowed hosts that may resolve to private addresses.")
    notify_max_attempts: int = setting(6, "Delivery attempts of one event to one route.")
    notify_backoff_s: float = setting(1.0, "Wait after a failed attempt; doubles per attempt.")
    notify_backoff_max_s: float = setting(60.0, "Longest wait between two delivery attempts.")
    notify_timeout_s: float = setting(10.0, "Longest one delivery request may take (seconds).")
    notify_max_routes: int = setting(50, "Most notification routes one tenant may have.")
    notify_dedup_entries: int = setting(100_000, "Delivered (route, event) pairs remembered.")
    notify_export_deliveries_max: int = setting(
        200, "Scheduled-export notices the sink delivers at once; more are recorded refused."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        counts = (self.notify_max_attempts, self.notify_max_routes, self.notify_dedup_entries)
        backoff_ok = 0 <= self.notify_backoff_s <= self.notify_backoff_max_s
        if min(counts) < 1 or not backoff_ok or self.notify_timeout_s <= 0:
            raise SettingsError("GOVLEDGER_NOTIFY_*: counts >= 1, timeout > 0, backoff <= max")
        if self.notify_export_deliveries_max < 1:
            raise SettingsError("GOVLEDGER_NOTIFY_EXPORT_DELIVERIES_MAX must be at least 1")


ALL_SETTINGS: tuple[type[CommonSettings], ...] = (
    RuntimeSettings,
    GatewaySettings,
    SinkSettings,
    StreamSettings,
    DoctorSettings,
    ConsoleSettings,
    NotifySettings,
)

S = TypeVar("S", bound=CommonSettings)


def known_env_names() -> frozenset[str]:
    """Every GOVLEDGER_* variable that some service declares."""
    return frozenset(env_name(f.name) for cls in ALL_SETTINGS for f in dataclasses.fields(cls))


def _convert(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc
    return raw


def load(cls: type[S], environ: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """Build settings from the environment; reject unknown GOVLEDGER_* variables."""
    env = os.environ if environ is None else environ
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known_env_names())
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(unknown)}")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = env_name(f.name)
        if name in env:
            values[f.name] = _convert(env[name], hints[f.name], name)
    for key, value in overrides.items():
        if key not in hints:
            raise SettingsError(f"unknown setting override: {key}")
        values[key] = value
    return cls(**values)


def describe() -> list[tuple[str, str, str, str]]:
    """Rows (service, env var, default, doc) for documentation, each setting once."""
    seen: set[str] = set()
    rows: list[tuple[str, str, str, str]] = []
    classes: tuple[type[CommonSettings], ...] = (CommonSettings, *ALL_SETTINGS)
    for cls in classes:
        own = {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if f.name in seen or f.name not in own:
                continue
            seen.add(f.name)
            service = cls.__name__.removesuffix("Settings").lower()
            rows.append((service, env_name(f.name), repr(f.default), f.metadata["doc"]))
    return rows
