"""`govledger demo`: realistic traffic through a running stack, then a report from the store.

Three teams of one fresh tenant call the gateway with the `openai` SDK, each under a
different policy pack: a provider outage trips a circuit breaker and calls fail over, a
support agent's prompt carries personal data (redacted) and a prompt injection (escalated
to a human), and a research team spends past 80 % and 100 % of its monthly budget. Every
step says what it did and why; then the demo waits, within a bound, until ClickHouse shows
the effects, and reports them from there, not from what the client saw, because the audit
trail is what the demo is about.

Exit codes: 0 every expected effect is in the store; 1 one is not (named); 2 the stack
cannot be reached.

Its command-line arguments live in `govledger/commands/demo.py`, which imports
`govledger.demo.command` (and with it the `openai` SDK) only when the demo runs.
"""
