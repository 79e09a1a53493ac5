"""GOVLEDGER_LOG_FORMAT: our lines and the libraries' (aiokafka, Faust/mode, aiohttp,
Python warnings, an uncaught exception) come out in one format, with their logger and
level. Each format runs in a child process: configuring logs is process-wide."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from typing import Any

import orjson
import pytest

from govledger.commands import up
from schemas.settings import GatewaySettings, SettingsError, load

EMIT = textwrap.dedent(
    """
    import logging, sys, warnings
    import structlog
    from govledger.logs import configure

    configure("info", "gateway", sys.argv[1])
    structlog.get_logger("gateway.pipeline").info(
        "gateway call", tenant="t1", latency_ms=1.5, note="two\\nlines"
    )
    structlog.get_logger("gateway.pipeline").debug("below the level")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group %r", "g1")
    logging.getLogger("faust.worker").warning("[^Worker]: Starting...")
    logging.getLogger("aiohttp.server").error("Error handling request")
    logging.getLogger("httpx").info("one line per upstream request: quieted")
    warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
    raise RuntimeError("the process dies")
    """
)


def emitted(log_format: str) -> list[str]:
    finished = subprocess.run(
        [sys.executable, "-W", "always", "-c", EMIT, log_format],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 1, finished.stderr
    return finished.stderr.splitlines()


def test_json_is_one_object_per_line_for_ours_and_the_libraries() -> None:
    lines = [orjson.loads(line) for line in emitted("json")]
    assert [(ln["logger"], ln["level"], ln["event"]) for ln in lines] == [
        ("gateway.pipeline", "info", "gateway call"),
        ("aiokafka.consumer.group_coordinator", "info", "Joined group 'g1'"),
        ("faust.worker", "warning", "[^Worker]: Starting..."),
        ("aiohttp.server", "error", "Error handling request"),
        ("py.warnings", "warning", lines[4]["event"]),
        ("govledger", "critical", "uncaught exception"),
    ]
    assert all(ln["service"] == "gateway" and ln["timestamp"].endswith("Z") for ln in lines)
    assert (lines[0]["tenant"], lines[0]["latency_ms"], lines[0]["note"]) == (
        "t1",
        1.5,
        "two\nlines",
    )
    assert "DeprecationWarning: a deprecation" in lines[4]["event"]
    assert lines[5]["exception"].endswith("RuntimeError: the process dies")
    assert list(lines[0])[:4] == ["timestamp", "level", "logger", "event"]


def test_console_lines_are_aligned_plain_text_with_the_logger() -> None:
    lines = emitted("console")
    assert "gateway call" in lines[0] and "[gateway.pipeline]" in lines[0]
    assert "tenant=t1" in lines[0] and "service=gateway" in lines[0]
    assert "note='two\\nlines'" in lines[0]  # a value cannot start a line of its own
    assert "[info     ] Joined group 'g1'" in lines[1]
    assert "[aiokafka.consumer.group_coordinator]" in lines[1]
    assert "[warning  ] [^Worker]: Starting..." in lines[2]
    assert lines[-1] == "RuntimeError: the process dies"  # the traceback, after its line
    assert not any("\x1b[" in line for line in lines)  # no colours into a file
    assert not any(line.startswith("{") for line in lines)


def test_an_unknown_format_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="GOVLEDGER_LOG_FORMAT"):
        load(GatewaySettings, environ={"GOVLEDGER_LOG_FORMAT": "xml"})


class Configured(Exception):
    """Raised by the stand-in configure: the command got as far as configuring logs."""


@pytest.mark.parametrize(
    ("command", "service"),
    [("up", "runtime"), ("gateway", "gateway"), ("sink", "sink"), ("worker", "worker")],
)
def test_every_process_configures_logs_in_the_format_set(
    command: str, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, ...]] = []

    def configure(*args: Any) -> None:
        seen.append(args)
        raise Configured

    monkeypatch.setattr("govledger.logs.configure", configure)
    monkeypatch.setenv("GOVLEDGER_LOG_FORMAT", "json")
    run = up.cmd_up if command == "up" else up.cmd_service
    with pytest.raises(Configured):
        run(argparse.Namespace(command=command))
    assert seen == [("info", service, "json")]
