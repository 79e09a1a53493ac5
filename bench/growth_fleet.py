"""Start-up growth: a stack whose store holds N keys and N key wallets comes up on an empty
broker the way a real one does (`bench/growth.py` runs it per size).

The store is seeded first, in a process of its own (`python -m bench.growth_fleet seed`):
the admin log of 8 tenants x 25 teams (one funding per team wallet) and, per key, its
`key.issued` and the `wallet.allocated` that moves money from its team's wallet into the
key's own wallet; signed records, stored with their auth header as the sink stores them
(an Avro container per schema). So N keys make 2N control rows and N + 200 wallets.

Then, on a fresh Tansu broker (its memory storage is empty, as after a restart), each
real service process in turn, as `govledger up` starts them:

- `govledger sink`: migrates, finds the broker empty and restores it from the store
  (`replay/restore.py`: the admin log re-published, every wallet folded and published
  to wallet-state), reads the control topic into its views, then answers `/ping`;
- `govledger gateway`: `GatewayProcess.start` reads control, wallet-state, escalations
  and breaker-state to the end before it listens (`/healthz`); its log line says how
  many keys it knows;
- `govledger worker`: ready (`/ready/`) once assigned and its wallets reloaded from
  wallet-state; then measured again once its CPU is idle (the control topic folded).

Per process: seconds from spawn to ready (imports included: see the N = 0 row), CPU
seconds, RSS and peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, cpu_seconds
from bench.gateway_procs import Children, base_env, free_port
from bench.growth_memory import process_figures

TENANTS = 8
TEAMS = 25
INSERT_ROWS = 50_000
READY_TIMEOUT_S = 900.0
IDLE_CPU_S = 0.05  # CPU a process may use in a second and still count as idle


def control_records(keys: int) -> list[tuple[bytes, bytes]]:
    """The seeded admin log, sealed and signed by one admin producer: (value, auth)."""
    from schemas import authn
    from schemas.auth import key_sha256
    from schemas.ids import new_producer_id, now_ms, uuid7
    from schemas.records import Event, KeyIssued, WalletAllocated, WalletFunded
    from streams.wallets.logic import key_wallet_id, team_wallet_id

    chain = authn.SignedChain(new_producer_id("admin"), "admin")
    assert chain.credential is not None, "a keyring is installed"
    at_ms = now_ms() - 86_400_000
    out: list[tuple[bytes, bytes]] = []

    def add(record: Event) -> None:
        _, value = chain.seal_encoded(record)
        out.append((value, chain.credential.header(value)))  # type: ignore[union-attr]

    def envelope(kind: type[Event], tenant: str) -> dict[str, Any]:
        nonlocal at_ms
        at_ms += 1
        return {"event_id": uuid7(at_ms), "event_type": kind.event_type_name,
                "occurred_at": at_ms, "tenant_id": tenant, "producer_id": "", "seq": 0}  # fmt: skip

    teams = [(f"tenant-{t}", f"team-{m}") for t in range(TENANTS) for m in range(TEAMS)]
    for tenant, team in teams:
        wallet_id = team_wallet_id(tenant, team)
        add(WalletFunded(**envelope(WalletFunded, tenant), wallet_id=wallet_id, team_id=team,
                         amount_nanousd=10**18, memo="growth", funded_by="bench"))  # fmt: skip
    for index in range(keys):
        tenant, team = teams[index % len(teams)]
        key_id = f"key_{index:016x}"
        secret = f"gk_growth_{index:016x}_{secrets.token_hex(8)}"
        add(KeyIssued(**envelope(KeyIssued, tenant), key_id=key_id, key_prefix=secret[:12],
                      key_sha256=key_sha256(secret), team_id=team,
                      wallet_id=team_wallet_id(tenant, team), name=f"svc-{index}",
                      issued_by="bench", requests_per_minute=600))  # fmt: skip
        add(WalletAllocated(**envelope(WalletAllocated, tenant),
                            from_wallet_id=team_wallet_id(tenant, team),
                            to_wallet_id=key_wallet_id(tenant, team, key_id), team_id=team,
                            amount_nanousd=10**9, memo="growth", allocated_by="bench"))  # fmt: skip
    return out


def seed(data_dir: Path, keys: int) -> dict[str, Any]:
    """Store the admin log of `keys` keys (and their wallets) as the sink stores it."""
    from schemas import authn, codec
    from schemas.settings import SinkSettings, load
    from sinks.avro_batch import container_file, insert_columns
    from sinks.store import Store
    from sinks.tables import TABLE_FOR

    settings = load(SinkSettings, environ={}, data_dir=str(data_dir))
    authn.install(authn.resolve_keyring(settings.data_path, settings.root_secret_file, create=True))
    began = time.perf_counter()
    records = control_records(keys)
    made_s = time.perf_counter() - began
    store = Store(settings.effective_clickhouse_dsn)
    store.migrate()
    by_schema: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for value, auth in records:
        by_schema.setdefault(codec.schema_of(value).fingerprint, []).append((value, auth))
    began = time.perf_counter()
    for group in by_schema.values():
        entry = codec.schema_of(group[0][0])
        table = TABLE_FOR[entry.record_type]
        columns = [*insert_columns(entry, store.table_columns(table)), "auth"]
        for start in range(0, len(group), INSERT_ROWS):
            chunk = group[start : start + INSERT_ROWS]
            data = container_file(entry, [v for v, _ in chunk], [a for _, a in chunk])
            token = hashlib.sha256(chunk[0][0] + chunk[-1][0]).hexdigest()
            store.insert_avro(table, columns, data, token)
    stored = int(store.query_rows("SELECT count() FROM control_events")[0][0])
    store.close()
    assert stored == len(records), (stored, len(records))
    return {"control_rows": stored, "made_s": round(made_s, 2),
            "inserted_s": round(time.perf_counter() - began, 2)}  # fmt: skip


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> float:
    """Seconds until `url` answers 200 (the process must not exit first)."""
    from govledger.runtime import wait_for_http

    wait_for_http(url, READY_TIMEOUT_S, process)
    return time.perf_counter()


def wait_idle(pid: int, timeout_s: float = 300.0) -> float:
    """Block until the process uses under IDLE_CPU_S of CPU in a second; seconds waited."""
    began = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - began < timeout_s:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - last < IDLE_CPU_S:
            break
        last = now
    return time.perf_counter() - began


def logged(log: Path, message: str, name: str) -> int | None:
    """A number its process logged (`name=` of the first line saying `message`)."""
    for line in log.read_text(errors="replace").splitlines():
        if message in line and f" {name}=" in line:
            return int(line.split(f" {name}=", 1)[1].split()[0].strip(',}"'))
    return None


def run_size(keys: int, root: Path) -> dict[str, Any]:
    """Seed a store with `keys` keys, then start sink, gateway and worker on it."""
    from govledger.broker import start_tansu
    from schemas.kafka import ensure_topics

    data_dir = root / f"fleet-{keys}"
    children = Children(root)
    result: dict[str, Any] = {"keys": keys}
    try:
        began = time.perf_counter()
        argv = [sys.executable, "-m", "bench.growth_fleet", "seed", "--dir", str(data_dir)]
        done = subprocess.run(
            [*argv, "--keys", str(keys)], cwd=REPO_ROOT, env=base_env(), check=True,
            capture_output=True,
        )  # fmt: skip
        result["seed"] = json.loads(done.stdout.splitlines()[-1])
        result["seed"]["seconds"] = round(time.perf_counter() - began, 2)
        port = free_port()
        log = children.log_path(f"broker-{keys}").open("ab")
        children.adopt("broker", start_tansu(port, log), log)
        bootstrap = f"127.0.0.1:{port}"
        asyncio.run(ensure_topics(bootstrap, 4))
        ports = {name: free_port() for name in ("gateway", "query", "worker")}
        env = base_env()
        env.update({
            "GOVLEDGER_DATA_DIR": str(data_dir),
            "GOVLEDGER_KAFKA_BOOTSTRAP": bootstrap,
            "GOVLEDGER_ADMIN_TOKEN": "adm_growth_" + secrets.token_hex(16),
            "GOVLEDGER_GATEWAY_PORT": str(ports["gateway"]),
            "GOVLEDGER_QUERY_PORT": str(ports["query"]),
            "GOVLEDGER_WORKER_WEB_PORT": str(ports["worker"]),
            "GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "GOVLEDGER_LOG_LEVEL": "info",
        })  # fmt: skip
        readiness = (
            ("sink", f"http://127.0.0.1:{ports['query']}/ping"),
            ("gateway", f"http://127.0.0.1:{ports['gateway']}/healthz"),
            ("worker", f"http://127.0.0.1:{ports['worker']}/ready/"),
        )
        for name, url in readiness:
            began = time.perf_counter()
            process = children.spawn(
                f"{name}-{keys}", [sys.executable, "-m", "govledger", name], env
            )
            ready = wait_ready(url, process) - began
            figures: dict[str, Any] = {"ready_s": round(ready, 2), **process_figures(process.pid)}
            if name == "worker":
                figures["idle_after_s"] = round(wait_idle(process.pid), 1)
                figures["idle"] = process_figures(process.pid)
            log_file = children.log_path(f"{name}-{keys}")
            if name == "gateway":
                figures["keys_known"] = logged(log_file, "gateway listening", "keys")
            if name == "sink":
                figures["wallets_restored"] = logged(log_file, "restored from store", "wallets")
            result[name] = figures
        result["broker"] = process_figures(children.pid("broker"))
    finally:
        children.stop_all()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed", help="seed a store (run in a process of its own)")
    seeding.add_argument("--dir", type=Path, required=True)
    seeding.add_argument("--keys", type=int, required=True)
    running = commands.add_parser("run", help="seed, then start sink, gateway and worker")
    running.add_argument("--dir", type=Path, required=True)
    running.add_argument("--keys", type=int, required=True)
    args = parser.parse_args()
    from govledger.logs import configure

    configure("warning", "bench")  # to stderr: stdout is the JSON line
    if args.command == "seed":
        print(json.dumps(seed(args.dir, args.keys)))
    else:
        print(json.dumps(run_size(args.keys, args.dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
