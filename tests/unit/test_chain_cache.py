"""The gateway's cache of effective chains (gateway.policy.baseline.ChainCache): the same
chain until the baseline or the tenant's pack is republished, then the new one."""

from __future__ import annotations

from gateway.policy.baseline import (
    DEFAULT_BASELINE,
    DEFAULT_BASELINE_YAML,
    ChainCache,
    effective_pack,
    parse_baseline,
)


def test_a_chain_is_built_once_and_again_when_the_baseline_is_republished() -> None:
    cache = ChainCache()
    first = cache.chain("acme", "default", DEFAULT_BASELINE, None)
    assert first == effective_pack(DEFAULT_BASELINE, None)
    assert cache.chain("acme", "default", DEFAULT_BASELINE, None) is first
    republished = parse_baseline(DEFAULT_BASELINE_YAML)  # a new version, equal in content
    again = cache.chain("acme", "default", republished, None)
    assert again is not first and again == effective_pack(republished, None)
    other_tenant = cache.chain("globex", "default", republished, None)
    assert other_tenant is not again  # one entry per tenant and pack name
