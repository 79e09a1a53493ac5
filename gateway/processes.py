"""One gateway per core: how many processes serve the one port, and what each is (pure).

`GOVLEDGER_GATEWAY_PROCESSES=N` runs N gateway processes on one port (SO_REUSEPORT: the
kernel spreads new connections over them). Each is a producer of its own (its own id,
hash chain and outbox file) and reads keys, balances and breakers from the topics as
separate gateways do; their parent (`govledger up`, or `govledger gateway` itself) gives
each its index 1..N in `GOVLEDGER_GATEWAY_PROCESS_INDEX` and restarts one that exits.
"""

from __future__ import annotations

import math
import os

from schemas.settings import GatewaySettings

# CPU the other parts of `govledger up` spend per gateway call, as a share of the
# gateway's own: the worker folds a lineage record in ~0.13 ms and the sink stores a row
# in ~0.02 ms, against ~1 ms (the issue-18 bar) to ~5 ms of gateway CPU a call
# (docs/performance-gateway.md). So N gateway processes keep about 0.15 x N cores busy
# elsewhere.
OTHER_PARTS_SHARE = 0.15


def auto_processes(cores: int) -> int:
    """Gateway processes for a machine of `cores` cores running the whole stack: as many
    as leave the other parts their share, at least one core for them, at least one."""
    return max(1, min(cores - 1, math.floor(cores / (1 + OTHER_PARTS_SHARE))))


def usable_cores() -> int:
    """Cores this process may run on (its affinity: a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_processes(configured: int, cores: int) -> int:
    """The setting's value, 0 meaning "by cores"."""
    assert configured >= 0 and cores >= 1, "a count, on a machine"
    return configured or auto_processes(cores)


def serving_processes(settings: GatewaySettings) -> int:
    """How many processes share this one's port (and its rate limits): N for a child
    its parent numbered, 1 for a lone gateway."""
    return max(settings.gateway_processes, 1) if settings.gateway_process_index else 1


def shares_port(settings: GatewaySettings) -> bool:
    """Whether this process listens with SO_REUSEPORT (it is one of several)."""
    return settings.gateway_process_index > 0


def metrics_port(settings: GatewaySettings) -> int:
    """The port of this process's own /metrics (0: none): a scrape of the shared port
    reads whichever process takes the connection, so each of several serves its own."""
    if not (settings.gateway_metrics_port and settings.gateway_process_index):
        return 0
    return settings.gateway_metrics_port + settings.gateway_process_index - 1


def part_name(index: int) -> str:
    """The name of gateway process `index` among the parts of `govledger up` (and its
    log file): the first keeps the name `gateway`."""
    assert index >= 1, "processes count from 1"
    return "gateway" if index == 1 else f"gateway-{index}"


def part_index(name: str) -> int:
    """The index of a part named by `part_name`; 0 for a part that is no gateway."""
    if name == "gateway":
        return 1
    head, _, tail = name.partition("-")
    return int(tail) if head == "gateway" and tail.isdigit() and int(tail) >= 2 else 0


def child_env(environ: dict[str, str], processes: int, index: int) -> dict[str, str]:
    """The environment of gateway process `index` of `processes`."""
    assert 1 <= index <= processes, "an index among the processes"
    env = dict(environ)
    env["GOVLEDGER_GATEWAY_PROCESSES"] = str(processes)
    env["GOVLEDGER_GATEWAY_PROCESS_INDEX"] = str(index)
    return env
