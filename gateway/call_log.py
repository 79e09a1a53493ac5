"""The gateway's access line: one structured line per call (event `gateway call`), made
from the call's lineage record as it is published, so the line and the record agree.

It names the call (trace id, event id: join it to its lineage row and its trace), who
made it (tenant, team and the key's public prefix, never the secret), what was asked and
what answered (API, model requested and selected, provider, attempts), and how it ended
(decision, status, error code, latency). Never prompt or completion text, the user field
or a header: those stay out of logs (tests/component/test_logs.py scans for them).
"""

from __future__ import annotations

import structlog

from schemas.records import LineageRecord

log = structlog.get_logger("gateway.access")


def log_call(record: LineageRecord, key_prefix: str) -> None:
    """One access line for the call the record describes (one log call: a few µs)."""
    log.info(
        "gateway call",
        trace_id=record.trace_id,
        event_id=record.event_id,
        tenant=record.tenant_id,
        team=record.team_id,
        key_prefix=key_prefix,
        api=record.api,
        model=record.model_requested,
        model_selected=record.model_selected,
        provider=record.provider,
        attempts=len(record.attempts),
        stream=record.stream,
        decision=record.decision,
        status=record.http_status,
        error_code=record.error_code,
        latency_ms=round(record.latency_ms, 3),
        overhead_ms=round(record.gateway_overhead_ms, 3),
        cost_nanousd=record.cost_nanousd,
    )
