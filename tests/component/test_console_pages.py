"""Console pages over the real admin API (tests/component/console_support.py): what a
user does on them, beyond the attacks of tests/security/test_console_security.py."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

from aiohttp.test_utils import unused_port

from tests.component.console_support import running_console, serving_worker_metrics
from tests.component.support import ADMIN_TOKEN


async def test_a_pack_starts_from_a_seed_template_and_is_pushed_under_its_own_name(
    tmp_path: Path,
) -> None:
    async with running_console(tmp_path) as console:
        await console.login(ADMIN_TOKEN)
        listing = await (await console.client.get("/policies", params={"tenant": "acme"})).text()
        assert "the standard-saas template" in listing
        page = await console.client.get(
            "/policies/pack",
            params={"tenant": "acme", "name": "support-guard", "template": "standard-saas"},
        )
        text = await page.text()
        assert page.status == 200 and "starts from the template standard-saas" in text
        source = html.unescape(text.split('name="source_yaml"', 1)[1].split(">", 1)[1])
        source = source.split("</textarea>", 1)[0]
        assert "name: support-guard" in source and "name: standard-saas" not in source
        token = await console.csrf("/policies")
        pushed = await console.client.post(
            "/policies/push",
            data={"csrf": token, "tenant": "acme", "name": "support-guard", "source_yaml": source},
            allow_redirects=False,
        )
        assert pushed.status == 303, await pushed.text()
        published = console.component.views.packs[("acme", "support-guard")]
        assert published.version == 1 and published.source_yaml == source
        unknown = await console.client.get(
            "/policies/pack", params={"tenant": "acme", "name": "x", "template": "nope"}
        )
        assert unknown.status == 404


async def test_the_overview_shows_each_workers_commit_stalls_and_unknown_when_one_is_down(
    tmp_path: Path,
) -> None:
    async with serving_worker_metrics() as worker:
        worker.metrics.commit_stalled()
        worker.metrics.commit_stalled()
        worker.metrics.dead_lettered("wallets", "bad record")
        worker.metrics.folded("wallets", int(time.time() * 1000) - 3_000)
        worker.metrics.watch_lag(
            lambda: [("streams-agents", "lineage", 0, 5), ("streams-agents", "lineage", 1, 2)]
        )
        down = f"http://127.0.0.1:{unused_port()}"
        urls = f"{worker.url},{down}"
        async with running_console(tmp_path, console_worker_urls=urls) as console:
            await console.login(ADMIN_TOKEN)
            page = await (await console.client.get("/overview/live")).text()
    assert re.search(r'id="commit-stalls-1">2<', page), page
    assert 'lineage</td><td class="num">7 records' in page.replace("streams-agents · ", "")
    assert re.search(r"wallets \(fold\)</td><td class=\"num\">[34]\.\d s", page)
    # The worker that does not answer is unknown, never 0.
    assert re.search(r'id="commit-stalls-2">unknown: the worker did not answer', page)
    assert worker.scrapes == 1
