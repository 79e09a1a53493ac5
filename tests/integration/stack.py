"""Starting the real stack for tests, and talking to it as a user would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from govledger.admin_token import resolve_admin_token
from govledger.broker import start_tansu
from govledger.runtime import Child, Stack, wait_for_http
from schemas import authn
from schemas.kafka import ensure_topics
from schemas.settings import ENV_PREFIX, RuntimeSettings, load
from tests.component.api_upstream import EMBED_MODEL
from tests.component.openai_upstream import FAITHFUL_MODEL
from tests.component.responses_upstream import RESPONSES_MODEL

# The shared stack's settings beyond stack_environ's (tests/conftest.py). Each changes
# nothing for a module that does not use it: P1 escalations are due 6 s after they open and
# looked for every 0.25 s; legal and security escalations go to the central queue
# (test_quotas_escalations); an open breaker half-opens after 2 s (test_demo's sim-flaky:
# no other target fails on this stack).
# Long enough for test_quotas_escalations to claim and reassign the late escalation (two
# command-line runs) before it pages, on a loaded machine: at 6 s it paged first once.
ESCALATION_P1_SLA_S = 12
ESCALATION_TICK_S = 0.25
SHARED_UPSTREAM_MODELS = (FAITHFUL_MODEL, RESPONSES_MODEL, EMBED_MODEL)
SHARED_UPSTREAM_ALIAS = "sdk-alias"
SHARED_STACK_SETTINGS = {
    "GOVLEDGER_ESCALATION_SLA_S": f"P1={ESCALATION_P1_SLA_S},P2=7200,P3=28800,P4=86400",
    "GOVLEDGER_ESCALATION_TICK_S": str(ESCALATION_TICK_S),
    "GOVLEDGER_ESCALATION_CENTRAL_CATEGORIES": "legal,security",
    "GOVLEDGER_BREAKER_RESET_TIMEOUT_S": "2",
    # test_sdk_stack's: the models of the recording upstream tests/conftest.py starts (its
    # base URL is added there), and an alias that maps onto one of them.
    "GOVLEDGER_UPSTREAM_MODELS": ",".join(SHARED_UPSTREAM_MODELS),
    "GOVLEDGER_MODEL_GROUPS": f"{SHARED_UPSTREAM_ALIAS}={FAITHFUL_MODEL}:1",
    # Every part's log file is JSON lines: tests/integration/test_logs.py reads them.
    "GOVLEDGER_LOG_FORMAT": "json",
    # test_export_schedules' schedules run every second (60 s is the least by default).
    "GOVLEDGER_EXPORT_SCHEDULE_MIN_INTERVAL_S": "1",
    # ...and notify a webhook receiver the test runs on loopback (plain http).
    "GOVLEDGER_NOTIFY_ALLOWED_HOSTS": "http://127.0.0.1",
    "GOVLEDGER_NOTIFY_PRIVATE_HOSTS": "127.0.0.1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_environ(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            "GOVLEDGER_DATA_DIR": str(data_dir),
            "GOVLEDGER_GATEWAY_PORT": str(free_port()),
            "GOVLEDGER_QUERY_PORT": str(free_port()),
            "GOVLEDGER_BROKER_PORT": str(free_port()),
            "GOVLEDGER_WORKER_WEB_PORT": str(free_port()),
            "GOVLEDGER_LOG_LEVEL": "info",
            # Tansu completes a group join in half the session timeout rounded up to a
            # whole second: 1 s (2 s at 3000 ms) for each of the sink, the worker and its
            # intake, one after the other: 3 s less per boot, and boots are most of the
            # suite. Heartbeats go every sixth of it (333 ms), so a busy machine still
            # keeps its members.
            "GOVLEDGER_KAFKA_SESSION_TIMEOUT_MS": "2000",
            # No web console (a process per boot); the shared stack runs one for the
            # browser tests (tests/conftest.py).
            "GOVLEDGER_CONSOLE_PORT": "0",
            # No notifier unless a module routes notifications (test_notifications): one
            # process less to boot per stack, and no module here adds a route.
            "GOVLEDGER_NOTIFIER_ENABLED": "0",
            # The embedded broker holds an empty fetch for its whole wait (it does not answer
            # early when records come): the intake's 20 ms default is 50 fetches a second
            # of an idle stack, half its broker's CPU. At 100 ms an idle stack costs a fifth
            # less CPU (15.9 % of a core against 12.8 %: the broker 8.5 -> 6.8 %, the worker
            # 3.8 -> 2.0 %), and a balance shows at most 80 ms later.
            "GOVLEDGER_WORKER_FETCH_WAIT_MS": "100",
            # Likewise the sink's (100 ms by default): at its flush interval (250 ms) a record
            # reaches the store at most 150 ms later, and an idle stack costs 12.8 % of a
            # core against 10.8 % (the broker 6.8 -> 5.3 %, the sink 2.5 -> 2.1 %).
            "GOVLEDGER_SINK_FETCH_WAIT_MS": "250",
        }
    )
    env.update(extra)
    return env


def govledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command line run as a user runs it, against the stack `env` describes."""
    return subprocess.run(
        [sys.executable, "-m", "govledger", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def wait_for(check: Callable[[], Any], timeout_s: float = 15.0, every_s: float = 0.05) -> Any:
    """Poll until check() returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s}s; last value: {last!r}")


@dataclass
class RunningStack:
    """A started stack and the ways a user reaches it."""

    env: dict[str, str]
    settings: RuntimeSettings
    stack: Stack
    token: str = field(init=False)

    def __post_init__(self) -> None:
        self.token = resolve_admin_token(self.settings, create=False)

    def install_keyring(self) -> None:
        """Records this test process publishes straight to the broker are signed with the
        stack's keyring, as a registered producer's would be (schemas.authn). One keyring
        per process: a module on the shared stack installs it again at its start, since a
        module run before it may have booted a stack of its own."""
        authn.install(
            authn.resolve_keyring(
                self.settings.data_path, self.settings.root_secret_file, create=False
            )
        )

    @property
    def base_url(self) -> str:
        return f"{self.settings.gateway_url}/v1"

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.settings.gateway_url}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kwargs,
        )

    def create_key(self, team: str, tenant: str = "default", **fields: Any) -> dict[str, Any]:
        response = self.admin(
            "POST", "/v1/admin/keys", json={"team": team, "tenant": tenant, **fields}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def fund(self, team: str, usd: str, tenant: str = "default") -> None:
        response = self.admin(
            "POST", "/v1/admin/wallets/fund", json={"team": team, "tenant": tenant, "usd": usd}
        )
        assert response.status_code == 201, response.text

    def balance_nanousd(self, team: str, tenant: str = "default") -> int:
        response = self.admin(
            "GET", "/v1/admin/wallets/balance", params={"team": team, "tenant": tenant}
        )
        assert response.status_code == 200, response.text
        return int(response.json()["balance_nanousd"])

    def sql(self, query: str) -> list[list[str]]:
        response = httpx.post(
            f"{self.settings.query_url}/",
            content=query.encode(),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return [line.split("\t") for line in response.text.splitlines()]


@contextlib.contextmanager
def running_stack(env: dict[str, str], *, supervise: bool = False) -> Iterator[RunningStack]:
    """A started stack; with supervise=True, parts that exit are restarted as `govledger
    up` restarts them (off by default: a test that kills a part sees it stay down)."""
    settings = load(RuntimeSettings, env)
    stack = Stack(settings, env)
    stack.start()
    if supervise:
        stack.start_supervising()
    try:
        running = RunningStack(env, settings, stack)
        running.install_keyring()
        yield running
    finally:
        stack.stop()


class StoreOwner(Stack):
    """The embedded broker and the sink alone (the store's owner and its query API), started
    as `Stack.start` starts them: no stream worker, no gateway."""

    def start(self) -> None:
        try:
            log = self._open_log("broker")
            broker = start_tansu(self.settings.broker_port, log)
            self.children.append(Child("broker", broker, log))
            self.bootstrap = f"127.0.0.1:{self.settings.broker_port}"
            asyncio.run(ensure_topics(self.bootstrap, self.settings.topic_partitions))
            sink = self._spawn("sink")
            wait_for_http(
                f"{self.settings.query_url}/ping", self.settings.start_timeout_s, sink.process
            )
        except BaseException:
            self.stop()
            raise


@contextlib.contextmanager
def running_store(env: dict[str, str]) -> Iterator[RunningStack]:
    """A stopped stack's store served again, for what reads it through the query API
    (`govledger audit verify`, SQL, a retention run): about 3 s to start and 1 s to stop,
    against 7 s and 3 s for the whole stack. Checks that need calls, processors or the
    admin API restart the whole stack (`running_stack`)."""
    settings = load(RuntimeSettings, env)
    stack = StoreOwner(settings, env)
    stack.start()
    try:
        running = RunningStack(env, settings, stack)
        running.install_keyring()
        yield running
    finally:
        stack.stop()
