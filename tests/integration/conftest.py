from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import RunningStack, free_port, running_stack, stack_environ

FAILING_MODEL = "broken-upstream"


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data_dir: Path = tmp_path_factory.mktemp("govledger")
    # An upstream on a port nothing listens on: calls routed there fail with 502.
    return stack_environ(
        data_dir,
        GOVLEDGER_UPSTREAM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        GOVLEDGER_UPSTREAM_MODELS=FAILING_MODEL,
        GOVLEDGER_UPSTREAM_TIMEOUT_S="2",
        GOVLEDGER_MAX_BODY_BYTES="65536",
    )


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[RunningStack]:
    with running_stack(stack_env) as running:
        yield running
