"""The processes under test in the gateway benchmark (broker, worker, upstream, gateway,
LiteLLM), the runs against them, and the step search for the highest rate kept up with."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO_ROOT, cpu_seconds
from bench.gateway_load import MODEL, REQUEST_BODY, Phase, open_loop
from bench.gateway_procs import Children, base_env, free_port, tree_cpu_seconds

TEAM = "bench"
FUND_USD = "100000"
UPSTREAM_DELAY_MS = 50.0
SEARCH_STEP = 25.0
SEARCH_PROBES = 5
LITELLM_VENV = REPO_ROOT / "bench" / ".venv" / "litellm"
# The LiteLLM release compared against, installed by this exact version (never "latest",
# so two runs compare the same thing). 1.106.12: the newest whose `proxy` extra resolves
# from the package index this machine reaches (later ones pin litellm-proxy-extras
# releases it lacks). Change it on purpose, and say so beside the figures.
LITELLM_VERSION = "1.106.12"
LITELLM_KEY = "sk-bench-" + secrets.token_hex(8)


@dataclass
class Bench:
    args: argparse.Namespace
    children: Children
    data_dir: Path
    bootstrap: str = ""
    upstream_url: str = ""
    floor_url: str = ""
    admin_token: str = field(default_factory=lambda: "adm_" + secrets.token_urlsafe(24))
    gateway_url: str = ""
    gateway_name: str = ""
    key: str = ""
    litellm_url: str = ""
    otlp_url: str = ""
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # --- processes ---

    def start_broker(self) -> None:
        from govledger.broker import start_tansu
        from schemas.kafka import ensure_topics

        port = free_port()
        log = self.children.log_path("broker").open("ab")
        self.children.adopt("broker", start_tansu(port, log), log)
        self.bootstrap = f"127.0.0.1:{port}"
        asyncio.run(ensure_topics(self.bootstrap, 4))

    def renew_broker(self, lineage: str = "on", **gateway: Any) -> None:
        """A new, empty embedded broker and worker, and a gateway on them (`start_gateway`'s
        arguments) with a key issued and funded. The embedded broker's CPU grows with the
        batches it holds (docs/performance.md, `bench.broker_history`): after a few
        thousand calls it takes a good part of a core, and on 2 cores every later figure
        would measure it as much as the gateway. So each figure group starts on a new one."""
        for name in (self.gateway_name, "worker", "broker"):
            if name:
                self.children.stop(name)
        # What the worker and a spooling gateway kept belongs to the old broker's offsets.
        for kept in ("faust", "sla", "spool"):
            shutil.rmtree(self.data_dir / kept, ignore_errors=True)
        self.start_broker()
        self.start_worker()
        self.start_gateway(lineage, **gateway)
        self.issue_key_and_fund()

    def start_broker_and_upstream(self) -> None:
        from govledger.broker import wait_for_port

        self.start_broker()
        port = free_port()
        self.children.spawn(
            "upstream",
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "upstream.py"),
                "--port",
                str(port),
                "--delay-ms",
                str(UPSTREAM_DELAY_MS),
            ],
            base_env(),
        )
        wait_for_port("127.0.0.1", port, 20)
        self.upstream_url = f"http://127.0.0.1:{port}/v1"

    def start_floor_proxy(self) -> None:
        """The least a Python proxy spends a call (bench/floor_proxy.py), on the upstream."""
        from govledger.broker import wait_for_port

        port = free_port()
        argv = [sys.executable, str(REPO_ROOT / "bench" / "floor_proxy.py"), "--port", str(port)]
        self.children.spawn("floor", [*argv, "--upstream", self.upstream_url], base_env())
        wait_for_port("127.0.0.1", port, 20)
        self.floor_url = f"http://127.0.0.1:{port}/v1"

    def start_otlp_sink(self) -> None:
        """A local OTLP/HTTP trace receiver (bench/otlp_sink.py) for tracing variants."""
        from govledger.broker import wait_for_port

        port = free_port()
        argv = [sys.executable, str(REPO_ROOT / "bench" / "otlp_sink.py"), "--port", str(port)]
        self.children.spawn("otlp-sink", argv, base_env())
        wait_for_port("127.0.0.1", port, 20)
        self.otlp_url = f"http://127.0.0.1:{port}"

    def otlp_spans(self) -> int:
        """Spans the OTLP receiver has counted."""
        return int(httpx.get(f"{self.otlp_url}/count", timeout=10).json()["spans"])

    def govledger_env(self, **extra: str) -> dict[str, str]:
        env = base_env()
        # A gateway traces only when a variant says so (gateway.tracing reads OTEL_*).
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        env.update(
            {
                "GOVLEDGER_KAFKA_BOOTSTRAP": self.bootstrap,
                "GOVLEDGER_DATA_DIR": str(self.data_dir),
                "GOVLEDGER_ADMIN_TOKEN": self.admin_token,
                "GOVLEDGER_LOG_LEVEL": "info",
            }
        )
        env.update(extra)
        return env

    def start_worker(self) -> None:
        """The stream worker: it turns fundings and settlements into the wallet balances
        the gateway's budget check reads (without it every call is budget_exhausted)."""
        env = self.govledger_env(GOVLEDGER_WORKER_WEB_PORT="0")
        self.children.spawn("worker", [sys.executable, "-m", "govledger", "worker"], env)

    def start_gateway(
        self,
        lineage: str,
        profile: Path | None = None,
        *,
        variant: str = "",
        env_overrides: Mapping[str, str] | None = None,
    ) -> None:
        """A gateway process (bench/gateway_runner.py); `variant` names one started with
        `env_overrides` on top of the benchmark's environment (GOVLEDGER_* settings,
        OTEL_* variables)."""
        from govledger.runtime import wait_for_http

        port = free_port()
        env = self.govledger_env(
            GOVLEDGER_GATEWAY_PORT=str(port),
            GOVLEDGER_UPSTREAM_BASE_URL=self.upstream_url,
            GOVLEDGER_UPSTREAM_MODELS=MODEL,
            GOVLEDGER_UPSTREAM_API_KEY="sk-upstream-bench",
            # No sink runs here, so nothing is confirmed: no resends inside a run either
            # (the outbox's figure is its write and fsync cost per call).
            GOVLEDGER_OUTBOX_RESEND_AFTER_S="3600",
        )
        env.update(env_overrides or {})
        # Each gateway starts without the outboxes an earlier one left (none is confirmed).
        shutil.rmtree(self.data_dir / "outbox", ignore_errors=True)
        argv = [sys.executable, str(REPO_ROOT / "bench" / "gateway_runner.py")]
        argv += ["--lineage", lineage]
        if profile is not None:
            argv += ["--profile", str(profile)]
        self.gateway_name = f"gateway-lineage-{lineage}" + (f"-{variant}" if variant else "")
        process = self.children.spawn(self.gateway_name, argv, env)
        self.gateway_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{self.gateway_url}/healthz", 60, process)

    def stop_gateway(self) -> None:
        self.children.stop(self.gateway_name)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.gateway_url}{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            **kwargs,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"admin {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def issue_key_and_fund(self) -> None:
        self.key = self.admin("POST", "/v1/admin/keys", json={"team": TEAM})["key"]
        self.admin("POST", "/v1/admin/wallets/fund", json={"team": TEAM, "usd": FUND_USD})
        funded = int(FUND_USD) * 1_000_000_000
        deadline = time.monotonic() + 120
        while True:
            balance = self.admin("GET", "/v1/admin/wallets/balance", params={"team": TEAM})
            if int(balance["balance_nanousd"]) >= funded:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not publish the funded balance in 120 s")
            if self.children.children and any(
                c.process.poll() is not None for c in self.children.children
            ):
                dead = [c.name for c in self.children.children if c.process.poll() is not None]
                raise RuntimeError(f"{dead} exited; see {self.children.log_dir}")
            time.sleep(0.2)

    # --- runs ---

    def watchers(self, target: str) -> dict[str, Callable[[], float]]:
        """CPU readers: the process under test first, then the rest for context."""
        watch: dict[str, Callable[[], float]] = {}
        for child in self.children.children:
            if child.name == "litellm":
                pid = child.process.pid
                watch["litellm"] = functools.partial(tree_cpu_seconds, pid)
            else:
                watch[child.name] = functools.partial(cpu_seconds, child.process.pid)
        watch["load generator"] = lambda: cpu_seconds(os.getpid())
        assert target in watch, f"no process {target}"
        return watch

    def run(
        self,
        label: str,
        target: str,
        rate: float,
        duration_s: float,
        *,
        quiet: bool = False,
        probe: bool = False,
    ) -> Phase:
        import uvloop

        headers: dict[str, str] = {}
        if target == "upstream":
            url = f"{self.upstream_url}/chat/completions"
        elif target == "floor":
            url = f"{self.floor_url}/chat/completions"
        elif target == "litellm":
            url = f"{self.litellm_url}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
        else:
            url = f"{self.gateway_url}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {self.key}"}
        phase = Phase(label, target, rate, duration_s, abort_backlog_s=1.0 if probe else None)
        watch = self.watchers(target)
        uvloop.run(open_loop(phase, url, headers, self.args.warmup_s, watch))
        self.phases.append(phase)
        if not quiet:
            print(phase.line(), flush=True)
        self.settle(watch[target])
        return phase

    @staticmethod
    def settle(cpu: Callable[[], float], quiet_percent: float = 10.0) -> None:
        """Wait until the process under test is idle: an overloaded run leaves calls it
        keeps working on after the load generator gave up, and the next run must not
        inherit them."""
        deadline = time.monotonic() + 90
        quiet, before = 0, cpu()
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu()
            quiet = quiet + 1 if (now - before) / 0.5 * 100 < quiet_percent else 0
            before = now

    def sanity(self, target: str) -> None:
        """One call: it must answer 200 with usage, or the benchmark measures errors."""
        if target == "upstream":
            url, auth = f"{self.upstream_url}/chat/completions", ""
        elif target == "floor":
            url, auth = f"{self.floor_url}/chat/completions", ""
        elif target == "litellm":
            url, auth = f"{self.litellm_url}/v1/chat/completions", LITELLM_KEY
        else:
            url, auth = f"{self.gateway_url}/v1/chat/completions", self.key
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        response = httpx.post(url, content=REQUEST_BODY, headers=headers, timeout=60)
        if response.status_code != 200 or "usage" not in response.json():
            raise RuntimeError(
                f"{target}: {response.status_code} {response.text[:300]} "
                f"(log: {self.children.log_path(target)})"
            )

    def search(self, label: str, target: str, lo: float, hi: float) -> tuple[float, list[Phase]]:
        """Highest rate between `lo` (kept up with, or 0) and `hi` (not) that `target` keeps
        up with, by bisection in steps of SEARCH_STEP; 0 if every probe failed."""
        probes: list[Phase] = []
        for _ in range(SEARCH_PROBES):
            mid = round((lo + hi) / 2 / SEARCH_STEP) * SEARCH_STEP
            if mid <= lo or mid >= hi:
                break
            phase = self.run(f"{label} probe", target, mid, self.args.search_duration_s, probe=True)
            probes.append(phase)
            if phase.keeps_up:
                lo = mid
            else:
                hi = mid
        return lo, probes

    # --- LiteLLM ---

    def ensure_litellm(self) -> Path | None:
        """The litellm command in bench/.venv/litellm at LITELLM_VERSION, installed (or
        re-pinned) when missing; None (and a note saying why) if that fails."""
        exe = LITELLM_VENV / "bin" / "litellm"
        if exe.exists() and litellm_version() == LITELLM_VERSION:
            return exe
        python = shutil.which("python3.11") or sys.executable
        log = self.children.log_path("litellm-install")
        wanted = f"litellm[proxy]=={LITELLM_VERSION}"
        print(f"[litellm] installing {wanted} into {LITELLM_VENV} (log {log})", flush=True)
        with log.open("ab") as out:
            steps = [
                [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", wanted],
            ]
            if not (LITELLM_VENV / "bin" / "python").exists():
                steps.insert(0, [python, "-m", "venv", str(LITELLM_VENV)])
            for step in steps:
                try:
                    done = subprocess.run(
                        step, check=False, stdout=out, stderr=subprocess.STDOUT, timeout=900
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    self.notes.append(f"LiteLLM not installed: {' '.join(step)}: {exc}")
                    return None
                if done.returncode != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    self.notes.append(
                        f"LiteLLM not installed: `{' '.join(step)}` exited {done.returncode}: "
                        + " | ".join(tail)
                    )
                    return None
        if not exe.exists() or litellm_version() != LITELLM_VERSION:
            self.notes.append(f"LiteLLM {LITELLM_VERSION} not installed in {LITELLM_VENV}")
            return None
        return exe

    def start_litellm(self, exe: Path) -> bool:
        """LiteLLM proxy (one worker) on the same upstream; False (with a note) on failure."""
        port = free_port()
        config = self.data_dir / "litellm.json"  # JSON is YAML: no YAML writer needed
        config.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": MODEL,
                            "litellm_params": {
                                "model": f"openai/{MODEL}",
                                "api_base": self.upstream_url,
                                "api_key": "sk-upstream-bench",
                            },
                        }
                    ],
                    "litellm_settings": {"drop_params": True, "set_verbose": False},
                    "general_settings": {"master_key": LITELLM_KEY},
                },
                indent=2,
            )
        )
        env = base_env()
        env.update(
            {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from the internet
                "LITELLM_LOG": "ERROR",
                "LITELLM_MODE": "PRODUCTION",
                "LITELLM_TELEMETRY": "False",
            }
        )
        argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--num_workers", "1"]
        process = self.children.spawn("litellm", argv, env)
        self.litellm_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self.children.log_path("litellm").read_text(errors="replace")
                self.notes.append(
                    f"LiteLLM exited with {process.returncode} at start: "
                    + " | ".join(tail.strip().splitlines()[-3:])
                )
                self.children.stop("litellm")
                return False
            try:
                if httpx.get(f"{self.litellm_url}/health/liveliness", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.notes.append("LiteLLM did not answer /health/liveliness within 180 s")
        self.children.stop("litellm")
        return False


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    try:
        done = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"
