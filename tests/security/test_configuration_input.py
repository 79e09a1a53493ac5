"""Hostile input to `PUT /v1/configurations/{name}` and the pack version routes: names that
try to leave their place, oversized or foreign bodies, forged preconditions. Each is a 4xx
with a stable code, and nothing is published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.admin.requests import MAX_ADMIN_BODY_BYTES
from schemas.records import PolicyPackPublished
from tests.component.support import Component, running_component

PACK = (
    "name: ok\npolicies:\n  chain:\n    - name: audit-logger\n      policy: {retention_days: 30}\n"
)
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Component]:
    async with running_component(tmp_path) as running:
        yield running


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/configurations/..%2Fbaseline", 400),
        ("/v1/configurations/%2e%2e", 404),  # the client resolves it to /v1/: no route
        ("/v1/configurations/OK", 400),
        ("/v1/configurations/ok%00", 400),
        ("/v1/configurations/" + "a" * 65, 400),
        ("/v1/configurations/ok/extra", 404),
    ],
)
async def test_names_outside_the_allow_list_are_refused(
    stack: Component, path: str, status: int
) -> None:
    response = await stack.admin("PUT", path, data=PACK.encode(), headers=YAML)
    assert response.status == status, await response.text()
    assert stack.control.of_type(PolicyPackPublished) == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"x" * (MAX_ADMIN_BODY_BYTES + 1), YAML, 413, None),
        (b"\xff\xfe not text", YAML, 400, "invalid_request"),
        (b"", YAML, 400, "invalid_request"),
        (b'{"source_yaml": 42}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b"[1, 2", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (PACK.encode(), {**YAML, "If-Match": '"1", "2"'}, 400, "invalid_request"),
        (PACK.encode(), {**YAML, "If-Match": '"99999999999"'}, 400, "invalid_request"),
        (PACK.encode(), {**YAML, "If-Match": "*"}, 400, "invalid_request"),
    ],
)
async def test_bodies_and_preconditions_that_do_not_parse_publish_nothing(
    stack: Component, body: bytes, headers: dict[str, str], status: int, code: str | None
) -> None:
    response = await stack.admin("PUT", "/v1/configurations/ok", data=body, headers=headers)
    assert response.status == status, await response.text()
    if code is not None:
        assert (await response.json())["error"]["code"] == code
    assert stack.control.of_type(PolicyPackPublished) == []


@pytest.mark.parametrize("version", ["0", "-1", "1.5", "true", '"2"', "null"])
async def test_a_revert_needs_a_kept_version_number(stack: Component, version: str) -> None:
    body = f'{{"to_version": {version}}}'.encode()
    response = await stack.admin(
        "POST",
        "/v1/admin/policies/ok/revert",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    assert stack.control.of_type(PolicyPackPublished) == []
