"""Webhook destinations: the hostile URL corpus is refused at parse or at the allow-list,
and every resolved address is checked (no private, loopback or link-local address unless
the host is listed as private)."""

from __future__ import annotations

import pytest

from schemas.webhook_destinations import (
    AllowList,
    DestinationRefusedError,
    destination,
    display_url,
    refused_addresses,
)

ALLOW = AllowList.parse(
    "hooks.example.com,*.pagerduty.com,http://127.0.0.1,http://receiver.internal",
    "127.0.0.1,receiver.internal",
)

HOSTILE = [
    "http://127.0.0.1.nip.io/x",  # not listed
    "https://[::1]/",
    "http://[::1]:8080/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://017700000001/",
    "http://127.1/",
    "http://localhost./",
    "http://localhost/",
    "https://hooks.example.com./x",
    "https://hooks.example.com@evil.example/x",
    "https://user:pw@hooks.example.com/x",
    "https://evil.example#@hooks.example.com/",
    "https://evil.example\\@hooks.example.com/",
    "https://h\u043e\u043eks.example.com/x",  # Cyrillic o's: an IDN look-alike
    "https://xn--hks-qdda.example.com/x",  # its punycode: not listed either
    "http://hooks.example.com/x",  # listed for https only
    "ftp://hooks.example.com/x",
    "file:///etc/passwd",
    "https://pagerduty.com/x",  # *.pagerduty.com is for names under it
    "https://evilpagerduty.com/x",
    "https://hooks.example.com:99999/x",
    "https://hooks.example.com/x y",
    "https://169.254.169.254/latest/meta-data/",
    "",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_refused(url: str) -> None:
    with pytest.raises(DestinationRefusedError):
        destination(url, ALLOW)


def test_allowed_urls_pass_with_their_port_and_private_flag() -> None:
    slack = destination("https://hooks.example.com/services/T/B", ALLOW)
    assert (slack.host, slack.port, slack.private_ok) == ("hooks.example.com", 443, False)
    pd = destination("https://events.pagerduty.com/v2/enqueue", ALLOW)
    assert pd.host == "events.pagerduty.com"
    local = destination("http://127.0.0.1:8765/hook", ALLOW)
    assert (local.port, local.private_ok) == (8765, True)
    assert destination("HTTPS://HOOKS.EXAMPLE.COM/x", ALLOW).host == "hooks.example.com"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "224.0.0.1",
        "not-an-address",
    ],
)
def test_private_and_reserved_addresses_are_refused(address: str) -> None:
    assert refused_addresses([address], private_ok=False) == [address]


def test_one_private_address_among_public_ones_refuses_and_private_hosts_may_be_local() -> None:
    assert refused_addresses(["93.184.216.34", "10.0.0.1"], private_ok=False) == ["10.0.0.1"]
    assert refused_addresses(["93.184.216.34", "2606:2800:220:1::"], private_ok=False) == []
    assert refused_addresses(["127.0.0.1", "::1"], private_ok=True) == []
    assert refused_addresses(["0.0.0.0", "224.0.0.1"], private_ok=True) == ["0.0.0.0", "224.0.0.1"]


def test_an_empty_allow_list_refuses_everything() -> None:
    with pytest.raises(DestinationRefusedError, match="GOVLEDGER_NOTIFY_ALLOWED_HOSTS"):
        destination("https://hooks.example.com/x", AllowList.parse(""))


def test_the_shown_url_hides_the_path_and_query_that_may_be_a_credential() -> None:
    slack = destination("https://hooks.example.com/services/T0/B0/XXXXsecret?x=1", ALLOW)
    assert display_url(slack) == "https://hooks.example.com/…"
    assert (
        display_url(destination("http://127.0.0.1:8765/hook", ALLOW)) == "http://127.0.0.1:8765/…"
    )
