"""One gateway process for the gateway benchmark: the real GatewayProcess built from
GOVLEDGER_* settings, served like `govledger gateway` serves it.

With `--lineage plain`, lineage goes through a publisher without an outbox (as before
it; nothing kept on disk), to measure what the outbox costs per call.
With `--lineage off` (a benchmark-only mode; there is no such production setting) the
process's lineage publisher is swapped, before it starts, for a no-op that seals nothing
and sends nothing; everything else (views, admin API, budget, providers, HTTP) stays
real. `--profile FILE` runs the event loop under cProfile from when the gateway is ready until
it is told to stop (start-up left out) and writes the stats to FILE when it stops.

Run:  GOVLEDGER_...=... .venv/bin/python bench/gateway_runner.py --lineage on|off
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

E = TypeVar("E")


class NoopPublisher:
    """Stands in for the gateway's lineage ChainedPublisher: `publish` hands the record
    back numbered but unsealed and sends nothing; `start` and `stop` do nothing.

    Every other attribute (pending, degraded, accepting, producer_id, ...) is read from
    the real publisher, which is never started: it reports the state of an idle, healthy
    publisher whatever attributes the gateway comes to ask for."""

    def __init__(self, original: Any) -> None:
        self._original = original
        self.published = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    async def start(self) -> None:
        return None

    async def publish(self, topic: str, key: str, record: E) -> E:
        # Numbered like sealed records (seqs grow per producer, which the gateway's budget
        # relies on), but not hashed, encoded or sent.
        self.published += 1
        return dataclasses.replace(record, seq=self.published)  # type: ignore[type-var]

    async def publish_and_wait(self, topic: str, key: str, record: E) -> E:
        return await self.publish(topic, key, record)

    async def stop(self) -> None:
        return None


def plain_publisher(process: Any) -> Any:
    """The lineage publisher as it was before the outbox (`--lineage plain`): sealed,
    signed and sent with acks=all, spooled only while the broker is away; the outbox's
    cost per call is the difference to `on` (bench/gateway.py figure 5)."""
    from schemas.publisher import ChainedPublisher
    from schemas.spool import Spool

    settings = process.settings
    producer_id = process.lineage.producer_id
    return ChainedPublisher(
        settings.kafka_bootstrap,
        producer_id,
        linger_ms=settings.lineage_linger_ms,
        spool=Spool(settings.data_path / "spool", producer_id, settings.lineage_spool_max_bytes),
        checkpoint_every=settings.checkpoint_every_records,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        role="gateway",
    )


def swap_lineage(process: Any, replacement: Any = None) -> Any:
    """Replace every reference to the process's lineage publisher (on the process and on
    the objects it holds, one level down) with a no-op (or `replacement`); fail if the
    gateway kept one."""
    original = process.lineage
    noop = NoopPublisher(original) if replacement is None else replacement
    holders = [process, *(v for v in vars(process).values() if hasattr(v, "__dict__"))]
    swapped = []
    for holder in holders:
        for name, value in list(vars(holder).items()):
            if value is original:
                setattr(holder, name, noop)
                swapped.append(f"{type(holder).__name__}.{name}")
    kept: object = process.gateway.lineage  # typed, so `is` below leaves `noop` typed
    assert kept is noop, "the gateway's lineage publisher was not swapped"
    print(f"lineage swapped in {', '.join(swapped)}", file=sys.stderr, flush=True)
    return noop


async def serve(lineage: str, profile: cProfile.Profile | None = None) -> None:
    from gateway.server import GatewayProcess
    from govledger.admin_token import resolve_admin_token
    from schemas import authn
    from schemas.settings import GatewaySettings, StreamSettings, load
    from streams.escalations.logic import config_of

    settings = load(GatewaySettings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    token = resolve_admin_token(settings, create=True)
    # Sign records as `govledger gateway` does: consumers drop unsigned ones (schemas.authn),
    # so without the keyring the worker never sees the funding and every call is refused.
    authn.install(authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=True))
    process = GatewayProcess(settings, token, escalation_config=config_of(load(StreamSettings)))
    if lineage == "off":
        swap_lineage(process)
    elif lineage == "plain":
        process.lineage.outbox.remove()  # the outbox publisher never starts
        process.confirmations.publishers.remove(process.lineage)
        swap_lineage(process, plain_publisher(process))
    await process.start()
    print(f"gateway ready on {settings.gateway_url} (lineage {lineage})")
    sys.stdout.flush()
    # Profiled from here to the stop: the steady state, without imports and start-up.
    if profile is not None:
        profile.enable()
    try:
        await stop.wait()
    finally:
        if profile is not None:
            profile.disable()
        await process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lineage", choices=("on", "off", "plain"), default="on")
    parser.add_argument("--profile", help="write cProfile stats of the process here")
    args = parser.parse_args()

    import uvloop

    from govledger.logs import configure
    from schemas.settings import GatewaySettings, load

    settings = load(GatewaySettings)
    configure(settings.log_level, "gateway", settings.log_format)
    # Timed by this thread's CPU clock, not the wall: on a shared machine, time spent
    # preempted (or blocked in fsync) would otherwise be charged to whatever was running.
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    try:
        uvloop.run(serve(args.lineage, profile))
    finally:
        if profile is not None:
            profile.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
