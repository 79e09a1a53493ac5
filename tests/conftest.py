"""What every tier shares: the order modules run in, and the one shared stack.

The shared stack: one real stack (broker, sink with chDB, worker, gateway) with the
default test settings and SHARED_STACK_SETTINGS (tests/integration/stack.py), its
OpenAI-compatible upstream the component tier's recording fake (`shared_upstream`),
booted once per test process on first use and stopped when the process moves on to the
modules that start no stack (or at the end). A boot costs about 7 s
of wall time and 5 s of CPU; every module that needs nothing else takes this one instead
of booting its own. Such a module keeps to tenants (and so wallets, keys, rows) of its
own, named with a run id, and scopes every count to them: other modules' traffic is in
the same store.

    @pytest.fixture(scope="module")
    def stack(shared_stack: RunningStack) -> RunningStack:
        return shared_stack

A module that needs a setting of its own may add it to SHARED_STACK_SETTINGS when it
changes nothing for the other modules (a setting of its own model, queue or tenant); one
that needs other global settings, or stops, restarts or tampers with its stack, or changes
the org's baseline, boots its own (`running_stack(stack_environ(...))`). Under
`make test` (four processes, --dist loadfile) each process boots the shared stack once, at
the first module that takes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.component.responses_upstream import ResponsesUpstream
    from tests.integration.stack import RunningStack


@pytest.fixture(scope="session")
def shared_upstream_served() -> Iterator[tuple[ResponsesUpstream, str]]:
    """The shared stack's OpenAI-compatible upstream: the component tier's recording fake
    (chat, embeddings, legacy completions, responses) on a loopback port, and its URL."""
    from tests.component.responses_upstream import ResponsesUpstream
    from tests.integration.upstream import recording_upstream

    fake = ResponsesUpstream()
    with recording_upstream(fake.handle) as base_url:
        yield fake, base_url


@pytest.fixture(scope="session")
def shared_upstream(shared_upstream_served: tuple[ResponsesUpstream, str]) -> ResponsesUpstream:
    """What the shared stack's upstream received (SHARED_UPSTREAM_MODELS are its models)."""
    return shared_upstream_served[0]


class SharedStackHolder:
    """This test process's shared stack: booted by the first module that takes it, stopped
    once the modules left to this process need no stack (`pytest_runtest_teardown`), else
    at the end of the session. An idle stack is not free (its parts poll the broker: about
    a sixth of a core), and under `make test` each process runs the seconds-long modules
    last, after every module that boots a stack (`pytest_collection_modifyitems`)."""

    def __init__(self) -> None:
        self.running: RunningStack | None = None
        self._exit = contextlib.ExitStack()

    def get(self, data_dir: Path, upstream_url: str) -> RunningStack:
        if self.running is None:
            # Imported here: unit runs collect this file and need none of the stack's imports.
            from tests.integration.stack import (
                SHARED_STACK_SETTINGS,
                free_port,
                running_stack,
                stack_environ,
            )

            # The shared stack serves the web console too (test_console_browser.py). Its
            # Overview refreshes every second, so a test sees a new call without waiting 5 s.
            console = {
                "GOVLEDGER_CONSOLE_PORT": str(free_port()),
                "GOVLEDGER_CONSOLE_REFRESH_S": "1",
            }
            env = stack_environ(
                data_dir,
                GOVLEDGER_UPSTREAM_BASE_URL=upstream_url,
                **SHARED_STACK_SETTINGS,
                **console,
            )
            self.running = self._exit.enter_context(running_stack(env))
        return self.running

    def stop(self) -> None:
        self.running = None
        self._exit.close()


_SHARED_STACK = SharedStackHolder()


@pytest.fixture(scope="session")
def shared_stack_holder(
    shared_upstream_served: tuple[ResponsesUpstream, str],
) -> Iterator[SharedStackHolder]:
    # Depends on the upstream so that the stack stops before its upstream does.
    try:
        yield _SHARED_STACK
    finally:
        _SHARED_STACK.stop()


@pytest.fixture(scope="module")
def shared_stack(
    shared_stack_holder: SharedStackHolder,
    shared_upstream_served: tuple[ResponsesUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> RunningStack:
    """The shared stack, its keyring installed for this module's own publishers."""
    running = shared_stack_holder.running
    if running is None:
        data_dir = tmp_path_factory.mktemp("govledger-shared")
        running = shared_stack_holder.get(data_dir, shared_upstream_served[1])
    running.install_keyring()
    return running


def module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


SOAKS, OWN_STACKS, SHARED_STACK, NO_STACK = range(4)
"""Module ranks, in the order they run: soaks (minutes long, each its own stack), the other
modules that boot stacks of their own, the modules on the shared stack, then the rest."""

# CPU seconds (user + sys of pytest and its children) of the slowest modules, each run
# alone on 2026-12-07 (`/usr/bin/time` around `pytest -p no:cacheprovider <module>`): within
# its rank a module listed here runs before the others, the longest first, so that the
# last ones handed out are the short ones. Tests of the shared stack count its boot.
KNOWN_CPU_S: dict[str, float] = {
    "tests/integration/test_kill_any_part.py": 94.6,
    "tests/integration/test_worker_kill.py": 83.8,
    "tests/integration/test_audit_verify.py": 48.6,
    "tests/integration/test_console_browser.py": 28.6,
    "tests/security/test_forged_records.py": 25.1,
    "tests/integration/test_pipeline.py": 25.0,
    "tests/security/test_root_rotation.py": 24.9,
    "tests/integration/test_export_schedules.py": 23.4,
    "tests/integration/test_query_api.py": 22.7,
    "tests/integration/test_sla_windows.py": 21.7,
    "tests/property/test_wallet_properties.py": 18.3,
    "tests/component/test_configurations.py": 7.3,
    "tests/component/test_cluster_store.py": 7.0,
    "tests/property/test_quotas_properties.py": 5.4,
    "tests/property/test_resends.py": 5.2,
}


def module_rank(items: list[pytest.Item]) -> int:
    """The rank of a module, from its tests (see SOAKS)."""
    if any(item.get_closest_marker("soak") for item in items):
        return SOAKS
    if any("shared_stack" in getattr(item, "fixturenames", ()) for item in items):
        return SHARED_STACK
    if any(
        item.get_closest_marker("integration") or item.nodeid.startswith("tests/integration/")
        for item in items
    ):
        return OWN_STACKS
    return NO_STACK


# Each collected module's rank.
_MODULE_RANKS: dict[str, int] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order modules run in. Under `make test` (`-n 4 --dist loadfile`) a module runs
    whole in one test process (its module-scoped stack boots once), and each process takes
    the next module in this order as it runs low: longest first (soaks minutes long, then
    modules that boot stacks, the slowest known first: KNOWN_CPU_S), so that the
    seconds-long ones fill in at the end and the processes finish close together. The
    modules on the shared stack come after those booting their own, so that a process's
    shared stack is up only while they run (it stops at the first module of the rest:
    `pytest_runtest_teardown`), not idle beside another stack. Whole modules move; tests
    within one keep their order (some rely on it: "keep it last"). Serially only the
    sequence changes.

    (Not `--dist loadgroup`, which could keep the shared stack's modules in one process:
    pytest-xdist 3.8 marks a group by rewriting `item._nodeid`, which pytest 9.2 no longer
    reads, so groups are silently ignored.)"""
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(module_of(item), []).append(item)
    rank = {module: module_rank(tests) for module, tests in by_module.items()}
    items.sort(key=lambda item: (rank[module_of(item)], -KNOWN_CPU_S.get(module_of(item), 0.0)))
    _MODULE_RANKS.update(rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """Stop the shared stack once this process moves on to the modules that start no stack:
    they come last (`pytest_collection_modifyitems`), and under xdist's `--dist loadfile
    --no-loadscope-reorder` each process is handed modules in that order, so none after
    needs it (one that did would boot it again). Its parts poll the broker while idle: four
    idle stacks (one a process) cost about two thirds of a core during the unit tests."""
    result = yield
    if (
        _SHARED_STACK.running is not None
        and nextitem is not None
        and module_of(nextitem) != module_of(item)
        and _MODULE_RANKS.get(module_of(nextitem), NO_STACK) == NO_STACK
    ):
        _SHARED_STACK.stop()
    return result
