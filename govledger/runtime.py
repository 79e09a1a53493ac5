"""`govledger up`: the whole stack as child processes — broker (embedded unless
GOVLEDGER_KAFKA_BOOTSTRAP is set), sink with the store (chDB unless
GOVLEDGER_CLICKHOUSE_DSN is set), stream worker, gateway — and a clean stop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import IO

from govledger.admin_token import resolve_admin_token
from govledger.broker import start_tansu
from schemas.authn import resolve_keyring
from schemas.kafka import ensure_topics
from schemas.settings import RuntimeSettings, env_name
from streams.intake import READY_PATH

STOP_GRACE_S = 30.0


@dataclass
class Child:
    """A started service."""

    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    """Block until url answers 200, or fail if the process died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not up after {timeout_s}s")


class Stack:
    """The embedded runtime's children, started in dependency order, stopped in reverse."""

    def __init__(self, settings: RuntimeSettings, environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.children: list[Child] = []
        self.bootstrap = settings.kafka_bootstrap
        self.log_dir = settings.data_path / "logs"

    def _open_log(self, name: str) -> IO[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return (self.log_dir / f"{name}.log").open("ab")

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if k != env_name("broker_port")}
        env[env_name("kafka_bootstrap")] = self.bootstrap
        env[env_name("clickhouse_dsn")] = self.settings.effective_clickhouse_dsn
        env[env_name("data_dir")] = str(self.settings.data_path)
        env[env_name("admin_token")] = resolve_admin_token(self.settings, create=True)
        # Made once here, before the children start, so none of them races to make it.
        resolve_keyring(self.settings.data_path, self.settings.root_secret_file, create=True)
        env.pop(env_name("start_timeout_s"), None)
        return env

    def _spawn(self, name: str) -> Child:
        log = self._open_log(name)
        process = subprocess.Popen(
            [sys.executable, "-m", "govledger", name],
            env=self._child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start every part and wait until each is ready."""
        timeout = self.settings.start_timeout_s
        try:
            if not self.bootstrap:
                log = self._open_log("broker")
                broker = start_tansu(self.settings.broker_port, log)
                self.children.append(Child("broker", broker, log))
                self.bootstrap = f"127.0.0.1:{self.settings.broker_port}"
            asyncio.run(ensure_topics(self.bootstrap, self.settings.topic_partitions))
            sink = self._spawn("sink")
            wait_for_http(f"{self.settings.query_url}/ping", timeout, sink.process)
            worker = self._spawn("worker")
            gateway = self._spawn("gateway")
            wait_for_http(f"{self.settings.gateway_url}/healthz", timeout, gateway.process)
            web_port = int(self.environ.get(env_name("worker_web_port"), "6066"))
            if web_port > 0:
                wait_for_http(f"http://127.0.0.1:{web_port}{READY_PATH}", timeout, worker.process)
            if worker.process.poll() is not None:
                raise RuntimeError("the stream worker exited at start; see its log")
        except BaseException:
            self.stop()
            raise

    def dead_child(self) -> Child | None:
        """A child that exited on its own, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        """Stop in reverse order: producers first, then the sink drains, then the broker."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
                try:
                    child.process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
            child.log.close()
        self.children.clear()
