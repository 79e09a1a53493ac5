"""`govledger up` (the whole stack) and `govledger gateway | sink | worker | notifier` (one
service in the foreground)."""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

from schemas.settings import (
    ConsoleSettings,
    GatewaySettings,
    NotifySettings,
    RuntimeSettings,
    SinkSettings,
    StreamSettings,
    load,
)


def cmd_up(args: argparse.Namespace) -> int:
    """Run the whole stack until Ctrl-C or SIGTERM."""
    import structlog

    from govledger.logs import configure
    from govledger.runtime import Stack

    settings = load(RuntimeSettings)
    configure(settings.log_level, "runtime", settings.log_format)
    # What goes to stderr is a log line in the format set; the banner goes to stdout.
    log = structlog.get_logger("govledger.up")
    stack = Stack(settings)
    stopping = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        # Ctrl-C reaches the children too: they exit on purpose, not to be restarted.
        stack.stop_restarting()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("starting govledger (broker, store, processors, gateway)")
    stack.start()
    console = load(ConsoleSettings)
    console_line = f"  console  {console.console_url}/\n" if console.console_port else ""
    print(
        f"govledger is up\n  gateway  {settings.gateway_url}/v1\n"
        f"  query    {settings.query_url}/?query=SELECT+1\n{console_line}"
        f"  data     {settings.data_path}\n  logs     {stack.log_dir}\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    # A part that exits is restarted (govledger.supervision); one that keeps exiting
    # stops the stack with the reason.
    stack.start_supervising()
    try:
        while not stopping:
            if stack.gave_up is not None:
                log.error(f"{stack.gave_up}; stopping", logs=str(stack.log_dir))
                return 1
            time.sleep(0.2)
    finally:
        log.info("stopping")
        stack.stop()
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    """Run one service in the foreground."""
    from gateway.processes import resolve_processes, usable_cores
    from govledger.logs import configure

    if args.command == "gateway":
        gateway_settings = load(GatewaySettings)
        configure(gateway_settings.log_level, "gateway", gateway_settings.log_format)
        processes = resolve_processes(gateway_settings.gateway_processes, usable_cores())
        if processes > 1 and not gateway_settings.gateway_process_index:
            # The parent serves nothing: it imports none of the services (a quick start).
            from govledger import gateway_parent
            from govledger.supervision import restart_policy

            return gateway_parent.run(processes, restart_policy(load(RuntimeSettings)), os.environ)
    from govledger import services

    if args.command == "gateway":
        services.run(services.gateway_main(gateway_settings))
    elif args.command == "sink":
        sink_settings = load(SinkSettings)
        configure(sink_settings.log_level, "sink", sink_settings.log_format)
        services.run(services.sink_main(sink_settings))
    elif args.command == "notifier":
        notify_settings = load(NotifySettings)
        configure(notify_settings.log_level, "notifier", notify_settings.log_format)
        services.run(services.notifier_main(notify_settings))
    elif args.command == "console":
        from console.server import console_main

        console_settings = load(ConsoleSettings)
        configure(console_settings.log_level, "console")
        services.run(console_main(console_settings))
    else:
        stream_settings = load(StreamSettings)
        configure(stream_settings.log_level, "worker", stream_settings.log_format)
        services.worker_main(stream_settings)
    return 0


def add_parser(commands: Any) -> None:
    """`govledger up`, `gateway`, `sink` and `worker`."""
    commands.add_parser(
        "up", help="run the whole stack (embedded broker and store by default)"
    ).set_defaults(func=cmd_up)
    for name, text in (
        ("gateway", "run a gateway"),
        ("sink", "run the sink and query API"),
        ("worker", "run the stream processors"),
        ("notifier", "run the notifier (alerts to webhooks)"),
        ("console", "run the web console (pages over the admin and query APIs)"),
    ):
        commands.add_parser(name, help=text).set_defaults(func=cmd_service)
