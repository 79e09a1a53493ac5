"""Commands that no integration test drives (escalations, keys revoke), against a fake
admin API: what they send and what they print, and the admin API's errors as exit 1."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from govledger.cli import main
from govledger.commands import escalations, keys

HOUR_MS = 3_600_000
ESCALATION = {
    "escalation_id": "esc-1",
    "tenant_id": "acme",
    "team_id": "support",
    "queue": "team:support",
    "priority": "high",
    "status": "open",
    "claimed_by": None,
    "age_ms": 2 * HOUR_MS + 3 * 60_000,
    "deadline_at_ms": 0,
    "overdue": True,
}


class FakeAdminApi:
    """Answers each request with the next canned reply; keeps what was asked."""

    def __init__(self, *replies: tuple[int, dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.asked: list[tuple[str, str, dict[str, Any] | None]] = []

    def client(self, settings: Any) -> httpx.Client:
        def answer(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            self.asked.append(
                (request.method, request.url.path + "?" + request.url.query.decode(), body)
            )
            status, data = self.replies.pop(0)
            return httpx.Response(status, json=data)

        return httpx.Client(base_url="http://gateway", transport=httpx.MockTransport(answer))


def _install(monkeypatch: pytest.MonkeyPatch, api: FakeAdminApi) -> None:
    monkeypatch.setattr(escalations, "admin_client", api.client)
    monkeypatch.setattr(keys, "admin_client", api.client)


def test_escalations_list_prints_age_and_an_overdue_deadline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeAdminApi((200, {"data": [ESCALATION]}))
    _install(monkeypatch, api)
    assert main(["escalations", "list", "--queue", "central"]) == 0
    assert api.asked == [("GET", "/v1/admin/escalations?status=open&queue=central", None)]
    header, row = capsys.readouterr().out.splitlines()
    assert header.split("\t")[-2:] == ["age", "deadline"]
    assert row.split("\t") == [
        "esc-1", "acme", "support", "team:support", "high", "open", "-", "2h03m",
        "1970-01-01T00:00:00+00:00 OVERDUE",
    ]  # fmt: skip


def test_escalations_claim_reassign_and_resolve_post_their_decision(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeAdminApi(
        (200, {"claimed_by": "ana"}),
        (200, {"queue": "central", "claimed_by": "bo"}),
        (200, {}),
    )
    _install(monkeypatch, api)
    assert main(["escalations", "claim", "esc-1"]) == 0
    assert main(["escalations", "reassign", "esc-1", "--queue", "central", "--reviewer", "bo"]) == 0
    assert main(["escalations", "resolve", "esc-1", "--decision", "reject", "--note", "no"]) == 0
    assert api.asked == [
        ("POST", "/v1/admin/escalations/esc-1/claim?", None),
        ("POST", "/v1/admin/escalations/esc-1/reassign?", {"queue": "central", "reviewer": "bo"}),
        ("POST", "/v1/admin/escalations/esc-1/resolve?", {"decision": "reject", "note": "no"}),
    ]
    assert capsys.readouterr().out.splitlines() == [
        "esc-1: claimed by ana",
        "esc-1: reassigned to central, claimed by bo",
        "esc-1: reject",
    ]


def test_an_admin_api_error_is_exit_1_with_its_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = {"error": {"message": "no such key", "type": "invalid_request", "code": "not_found"}}
    api = FakeAdminApi((404, error))
    _install(monkeypatch, api)
    assert main(["keys", "revoke", "k-1", "--reason", "lost"]) == 1
    assert api.asked == [("POST", "/v1/admin/keys/k-1/revoke?", {"reason": "lost"})]
    assert capsys.readouterr().err == "govledger: 404 not_found: no such key\n"


def test_keys_revoke_says_which_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(monkeypatch, FakeAdminApi((200, {"key_id": "k-1", "status": "revoked"})))
    assert main(["keys", "revoke", "k-1"]) == 0
    assert capsys.readouterr().out == "revoked k-1\n"
