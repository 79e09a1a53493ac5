"""Notifications on the running stack (issue 17, Done when): a local webhook receiver
gets a signed CloudEvent for a quota threshold, a P1 escalation and a fleet breaker open,
each exactly once per event id, across a notifier killed while a delivery of the same
event to another route was still retrying; that receiver, which fails twice, gets the
delivery on its third attempt; a destination outside the allow-list is refused at
`notify add`. Every attempt is in the `notifications` table."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.providers.sim import FLAKY_MODEL, OUTAGE_MARKER
from tests.component.support import review_pack
from tests.integration.stack import RunningStack, running_stack, stack_environ, wait_for

pytestmark = pytest.mark.integration

TENANT = f"clinic-{secrets.token_hex(3)}"
SECRET = "whsec_" + base64.b64encode(b"notifications-integration-secret").decode()
BACKOFF_S = 3.0  # the window in which the test kills the notifier mid-retry


class Receiver(ThreadingHTTPServer):
    """Records every request; `/flaky` answers 503 to the first two of each webhook-id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def requests_to(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.got if p == path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.lock:
            self.server.got.append((self.path, headers, body))
            seen = sum(
                1
                for p, h, _ in self.server.got
                if p == self.path and h.get("webhook-id") == headers.get("webhook-id")
            )
        status = 503 if self.path == "/flaky" and seen <= 2 else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def receiver_accepts(headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, from the Standard Webhooks spec (5-minute tolerance)."""
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in headers["webhook-signature"].split()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = stack_environ(
        tmp_path_factory.mktemp("govledger-notify"),
        GOVLEDGER_NOTIFIER_ENABLED="1",
        GOVLEDGER_NOTIFY_ALLOWED_HOSTS="http://127.0.0.1",
        GOVLEDGER_NOTIFY_PRIVATE_HOSTS="127.0.0.1",
        GOVLEDGER_NOTIFY_BACKOFF_S=str(BACKOFF_S),
        GOVLEDGER_BREAKER_FAILURE_THRESHOLD="2",
    )
    with running_stack(env, supervise=True) as running:
        yield running


def govledger(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "govledger", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_route(stack: RunningStack, url: str, on: str, *scope: str) -> str:
    done = govledger(
        stack, "notify", "add", "--on", on, "--webhook", url, "--secret", SECRET, *scope
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1].rstrip(":")


def notifier_starts(stack: RunningStack) -> int:
    log = Path(stack.settings.data_path) / "logs" / "notifier.log"
    return log.read_text().count("notifier ready") if log.exists() else 0


def cloudevents(receiver: Receiver, path: str) -> dict[str, str]:
    """The CloudEvents `path` got, type by id; each checked to be signed."""
    found = {}
    for headers, body in receiver.requests_to(path):
        assert receiver_accepts(headers, body), headers
        event = json.loads(body)
        assert event["specversion"] == "1.0" and event["id"] == headers["webhook-id"]
        found[event["id"]] = event["type"]
    return found


def test_signed_cloudevents_exactly_once_across_a_notifier_restart(
    stack: RunningStack, receiver: Receiver
) -> None:
    refused = govledger(
        stack, "notify", "add", "--on", "quota.threshold",
        "--webhook", "https://hooks.example.com/x", "--secret", SECRET, "--tenant", TENANT,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "400 invalid_request: destination refused" in refused.stderr
    ok, flaky = f"{receiver.url}/ok", f"{receiver.url}/flaky"
    add_route(stack, ok, "quota.threshold,escalation.p1", "--tenant", TENANT)
    add_route(stack, flaky, "quota.threshold", "--tenant", TENANT)
    add_route(stack, ok, "circuit.opened", "--org")
    wait_for(lambda: notifier_starts(stack) == 1, timeout_s=30)

    # (1) A quota threshold: one call spends ~76 % of a $0.00002 budget.
    stack.fund("ward", "1", tenant=TENANT)
    budget = {"tenant": TENANT, "team": "ward", "usd": "0.00002", "thresholds": [50]}
    assert stack.admin("POST", "/v1/admin/wallets/budget", json=budget).status_code == 201
    key = stack.create_key("ward", tenant=TENANT)["key"]
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    hi: Any = [{"role": "user", "content": "hi"}]
    sdk.chat.completions.create(model="sim-small", messages=hi, max_tokens=24)

    # The tenant route has it (the store shows it delivered); the flaky one failed once
    # and waits BACKOFF_S to retry: the notifier is killed now, before it could commit
    # the alert's offset, so the restarted one reads the alert again.
    wait_for(
        lambda: (
            stack.sql("SELECT count() FROM notifications WHERE status = 'delivered'") == [["1"]]
        ),
        timeout_s=20,
    )
    assert len(receiver.requests_to("/flaky")) == 1 and len(receiver.requests_to("/ok")) == 1
    stack.stack.kill("notifier")
    wait_for(lambda: notifier_starts(stack) == 2, timeout_s=30)

    # (2) A P1 escalation and (3) a fleet breaker opening, after the restart.
    pushed = stack.admin(
        "POST",
        "/v1/admin/policies",
        json={"tenant": TENANT, "source_yaml": review_pack("urgent", "P1", "clinical")},
    )
    assert pushed.status_code == 201, pushed.text
    reviewed = stack.create_key("ward", tenant=TENANT, policy_pack="urgent")["key"]
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(
            base_url=stack.base_url, api_key=reviewed, max_retries=0
        ).chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "a diagnosis please"}]
        )
    outage: Any = [{"role": "user", "content": f"{OUTAGE_MARKER} hi"}]
    for _ in range(2):
        sdk.chat.completions.create(model=FLAKY_MODEL, messages=outage, max_tokens=8)

    def all_three() -> dict[str, str] | None:
        found = cloudevents(receiver, "/ok")
        return found if len(found) == 3 else None

    types = wait_for(all_three, timeout_s=30)
    assert sorted(types.values()) == [
        "dev.govledger.circuit.opened",
        "dev.govledger.escalation.opened",
        "dev.govledger.quota.threshold",
    ]
    # The flaky receiver: its third request, made by the restarted notifier, succeeded.
    wait_for(lambda: len(receiver.requests_to("/flaky")) == 3, timeout_s=20)
    flaky_ids = {h["webhook-id"] for h, _ in receiver.requests_to("/flaky")}
    quota_id = next(i for i, t in types.items() if t.endswith("quota.threshold"))
    assert flaky_ids == {quota_id} and len(receiver.requests_to("/flaky")) == 3

    # Every attempt is in the store: the tenant route's once each, the flaky route's three.
    def attempts() -> list[list[str]] | None:
        rows = stack.sql(
            "SELECT destination_host, source_event_type, status, http_status "
            "FROM notifications ORDER BY occurred_at"
        )
        return rows if len(rows) >= 6 else None

    rows = wait_for(attempts, timeout_s=15)
    statuses = [(r[1], r[2], r[3]) for r in rows]
    assert statuses.count(("quota.threshold", "failed", "503")) == 2
    assert statuses.count(("quota.threshold", "delivered", "200")) == 2  # ok and flaky
    assert ("circuit.opened", "delivered", "200") in statuses
    assert ("escalation.opened", "delivered", "200") in statuses
    assert len(rows) == 6
    # Exactly once per event id at the tenant's receiver: the redelivered alert was skipped.
    assert len(receiver.requests_to("/ok")) == 3
