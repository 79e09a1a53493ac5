"""`govledger demo`: run the scenario, wait for the store, print the report."""

from __future__ import annotations

import argparse
import secrets
import sys

import openai

from govledger.demo.report import print_report
from govledger.demo.run import DemoError, Run, StackUnreachableError, clients, now_ms, say
from govledger.demo.scenario import budget, outage, pii, recover, review, setup, traffic
from govledger.demo.store import wait_for_store
from schemas.settings import GatewaySettings, load

EXIT_MISSING = 1
EXIT_UNREACHABLE = 2


def run_demo(args: argparse.Namespace) -> int:
    """Drive the demo traffic, wait for the store, print the report."""
    settings = load(GatewaySettings)
    tenant = args.tenant or f"demo-{secrets.token_hex(3)}"
    try:
        with clients(settings) as (admin, store):
            run = Run(tenant, settings, admin, store, started_ms=now_ms())
            say(
                "demo",
                f"tenant {tenant} at {settings.gateway_url}/v1, every call through the openai SDK",
            )
            setup(run)
            outage(run)
            traffic(run, args.calls)
            pii(run)
            problems = review(run)
            budget(run)
            recover(run)
            seen, absent = wait_for_store(run)
            print_report(run, seen)
    except StackUnreachableError as exc:
        sys.stderr.write(
            f"govledger demo: cannot reach the stack ({exc}); start it with `make up` "
            "(or `govledger up`) and run the demo in another terminal\n"
        )
        return EXIT_UNREACHABLE
    except DemoError as exc:
        sys.stderr.write(f"govledger demo: {exc}\n")
        return EXIT_MISSING
    except openai.APIStatusError as exc:
        sys.stderr.write(
            f"govledger demo: the gateway refused a call the demo needs answered: "
            f"{exc.status_code} {exc.code}: {exc.message}\n"
        )
        return EXIT_MISSING
    problems += absent
    if problems:
        sys.stdout.write("\nexpected but not shown by the store:\n")
        sys.stdout.write("".join(f"  - {p}\n" for p in problems))
        return EXIT_MISSING
    sys.stdout.write("\nevery expected effect is in the audit store\n")
    return 0
