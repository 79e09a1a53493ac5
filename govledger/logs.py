"""Structured logs for every govledger process.

One line per event on stderr, in one of two formats (`GOVLEDGER_LOG_FORMAT`):
- `console`: time, level, event, logger, then key=value pairs; for a person reading a
  terminal or `.govledger/logs/*.log` (the default, so `make up` stays readable);
- `json`: one JSON object per line (orjson), for a log collector.

Our loggers (structlog) and the libraries' (aiokafka, Faust and mode, aiohttp, httpx,
asyncio, chDB's Python side: anything on the standard `logging` module) come out the same
way, with their logger name and level: the libraries' records go through one root
handler whose formatter is structlog's `ProcessorFormatter` with the same processors.
Our own lines skip the standard `logging` machinery (cheaper per line: the gateway writes
one access line per call).
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from schemas.settings import LOG_FORMATS

# Libraries whose info lines would be one per upstream request or poll: the gateway
# records every call in lineage and logs one access line per call instead.
QUIETER_LOGGERS = ("httpx", "httpcore")


class NamedWriteLogger(structlog.WriteLogger):
    """structlog's plain writer, with the name it was asked for (`get_logger(__name__)`),
    so our lines carry their logger's name as the libraries' do."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class NamedWriteLoggerFactory:
    """Makes a NamedWriteLogger on stderr as it is when the logger is first used."""

    def __call__(self, *args: Any) -> NamedWriteLogger:
        name = args[0] if args and isinstance(args[0], str) else ""
        return NamedWriteLogger(sys.stderr, name)


def add_logger_name(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """`logger`: the stdlib record's name for a library's line, else our logger's name."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", "")
    if name:
        event_dict["logger"] = name
    return event_dict


def render_json(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """One JSON object, time, level, logger and event first; a value JSON cannot hold is
    written as its str()."""
    line = {
        "timestamp": event_dict.pop("timestamp", None),
        "level": event_dict.pop("level", None),
        "logger": event_dict.pop("logger", None),
        "event": event_dict.pop("event", None),
        **event_dict,
    }
    return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


LEVEL_COLOURS = {
    "debug": "\x1b[34m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[31;1m",
}
RESET = "\x1b[0m"


def console_value(value: object) -> str:
    """A value as key=value shows it: plain when it is one printable word, else repr()
    (quotes and escapes: a value cannot fake a line break or a second field)."""
    if isinstance(value, str) and value.isprintable() and " " not in value and value:
        return value
    return repr(value)


class ConsoleLine:
    """`time [level   ] event   [logger] key=value ...`, then the traceback if any.

    structlog's ConsoleRenderer looks the same but costs ~34 µs of CPU a line (column
    styles, padding per field) against ~12 µs here, and the gateway writes one per call."""

    def __init__(self, colors: bool) -> None:
        self.colors = colors

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        timestamp = event_dict.pop("timestamp", "")
        level = str(event_dict.pop("level", ""))
        event = str(event_dict.pop("event", "")).rstrip()
        name = event_dict.pop("logger", "")
        exception = event_dict.pop("exception", None)
        if not event.isprintable():
            event = repr(event)
        shown = f"[{level:<9}]"
        if self.colors:
            shown = LEVEL_COLOURS.get(level, "") + shown + RESET
        fields = " ".join(f"{key}={console_value(value)}" for key, value in event_dict.items())
        line = f"{timestamp} {shown} {event:<30} [{name}] {fields}".rstrip()
        return f"{line}\n{exception}" if exception else line


def renderers(log_format: str, colors: bool) -> list[Processor]:
    """The last processors: exception to text, then the line."""
    render = render_json if log_format == "json" else ConsoleLine(colors)
    return [structlog.processors.format_exc_info, render]


class ServiceName:
    """Adds the process's service name to every line, from any thread (a context
    variable would not reach the threads chDB and the executors run in)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        event_dict["service"] = self.service
        return event_dict


def shared_processors(service: str) -> list[Processor]:
    """What every line gets, ours or a library's: the service, level, logger and time."""
    return [
        ServiceName(service),
        structlog.processors.add_log_level,
        add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def level_number(level: str) -> int:
    """The numeric level of a name (debug, info, warning, error); unknown is info."""
    numeric = logging.getLevelName(level.upper())
    return numeric if isinstance(numeric, int) else logging.INFO


def library_handler(log_format: str, colors: bool, stream: TextIO, service: str) -> logging.Handler:
    """The root handler the libraries' records go through, formatted as ours."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors(service),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *renderers(log_format, colors),
            ],
        )
    )
    return handler


def configure(level: str, service: str, log_format: str = "console") -> None:
    """Logs to stderr in `log_format` (json or console), tagged with the service name."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    numeric = level_number(level)
    colors = log_format == "console" and sys.stderr.isatty()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(library_handler(log_format, colors, sys.stderr, service))
    root.setLevel(numeric)
    for name in QUIETER_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # A Python warning is a line of the same format too (logger `py.warnings`).
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared_processors(service), *renderers(log_format, colors)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=NamedWriteLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    sys.excepthook = log_uncaught


def log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """An exception that ends the process: one line of the same format, not a bare
    traceback among them."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger("govledger").critical(
        "uncaught exception", exc_info=(kind, error, traceback)
    )
