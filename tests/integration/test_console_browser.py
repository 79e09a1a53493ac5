"""The web console in Debian's chromium (headless, through Selenium and the system's
chromedriver), against the shared stack, which serves the console: a user logs in with
an admin key and works each page. Tenants are named with this run's id. Screenshots of
each page go to the module's output folder (printed), and to CONSOLE_SCREENSHOTS_DIR when
that is set (how docs/console-*.png are made).

Without chromium, chromedriver or Selenium these tests skip and say which is missing."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.stack import RunningStack, wait_for

WINDOW = (1280, 800)
NARROW = (420, 800)


def _browser_missing() -> str | None:
    """Why no browser can be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for names in (("chromium", "chromium-browser"), ("chromedriver",)):
        if not any(shutil.which(name) for name in names):
            return f"no {names[0]} on PATH (apt-get install chromium chromium-driver)"
    return None


MISSING = _browser_missing()
# Skipped before any fixture runs (the shared stack is not booted for nothing).
pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(MISSING is not None, reason=f"no browser for the console tests: {MISSING}"),
]


@pytest.fixture(scope="module")
def stack(shared_stack: RunningStack) -> RunningStack:
    return shared_stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert MISSING is None, MISSING
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    options.binary_location = str(binary)
    driver = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class World:
    """This run's tenants: one with traffic and a tenant admin, another with traffic of
    its own the first's admin must never see."""

    tenant: str
    other: str
    tenant_admin: str
    developer: str
    console_url: str
    shots: Path


def call(stack: RunningStack, key: str, model: str = "sim-small") -> None:
    sdk = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])


@pytest.fixture(scope="module")
def world(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> World:
    run = secrets.token_hex(3)
    tenant, other = f"console-{run}", f"rival-{run}"
    stack.fund("alpha", "5", tenant=tenant)
    stack.fund("beta", "5", tenant=other)
    developer = stack.create_key("alpha", tenant=tenant)["key"]
    rival = stack.create_key("beta", tenant=other)["key"]
    admin = stack.create_key("ops", tenant=tenant, role="tenant-admin")["key"]
    wait_for(lambda: stack.balance_nanousd("alpha", tenant=tenant) > 0)
    wait_for(lambda: stack.balance_nanousd("beta", tenant=other) > 0)
    for _ in range(3):
        call(stack, developer)
    call(stack, developer, "sim-large")
    for _ in range(2):
        call(stack, rival)
    shots = tmp_path_factory.mktemp("console-screenshots")
    print(f"\n[console] screenshots in {shots}")
    port = stack.env["GOVLEDGER_CONSOLE_PORT"]
    return World(tenant, other, admin, developer, f"http://127.0.0.1:{port}", shots)


def screenshot(browser: Any, world: World, name: str) -> None:
    """The page as the user sees it, at 1280x800 and on a narrow window."""
    browser.save_screenshot(str(world.shots / f"{name}.png"))
    browser.set_window_size(*NARROW)
    browser.save_screenshot(str(world.shots / f"{name}-narrow.png"))
    browser.set_window_size(*WINDOW)
    published = os.environ.get("CONSOLE_SCREENSHOTS_DIR")
    if published:
        browser.save_screenshot(str(Path(published) / f"console-{name}.png"))


def login(browser: Any, world: World, key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{world.console_url}/login")
    assert browser.find_elements(By.CSS_SELECTOR, "label[for='key']")
    # From the keyboard: the key field has the focus; Enter submits.
    browser.switch_to.active_element.send_keys(key + Keys.ENTER)
    wait_for(lambda: browser.current_url.rstrip("/") == world.console_url, timeout_s=10)


def text_of(browser: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def clicked(browser: Any, css: str) -> bool:
    """Click the element, False if it is not there or a poll swapped it out between the
    find and the click (the queue tables refresh themselves), so `until` tries again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        browser.find_element(By.CSS_SELECTOR, css).click()
    except (NoSuchElementException, StaleElementReferenceException):
        return False
    return True


def until(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll (a loaded machine's store may take seconds to show a change)."""
    return wait_for(check, timeout_s=timeout_s, every_s=0.3)


def test_overview_shows_the_tenants_traffic_and_updates_without_reloading(
    browser: Any, world: World, stack: RunningStack
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, world, world.tenant_admin)

    def calls_shown() -> str:
        browser.get(f"{world.console_url}/?window=1h")
        return text_of(browser, "#total-calls")

    # The sink writes within a second or so; the tenant admin sees its 4 calls, not the
    # rival's 2.
    until(lambda: calls_shown() == "4")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "sim-large" in page and "sim-small" in page
    assert world.other not in browser.page_source
    screenshot(browser, world, "overview")
    header = browser.find_element(By.CSS_SELECTOR, "header.top")
    call(stack, world.developer)
    # The live fragment polls: the figure changes while the page itself stays (its header
    # element is the same one: no reload).
    until(lambda: text_of(browser, "#total-calls") == "5")
    assert header.is_displayed()
    # htmx ran under the content security policy, which refused nothing.
    assert browser.execute_script("return typeof htmx") == "object"
    refused = [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert refused == []
    browser.get(f"{world.console_url}/?tenant={world.other}")
    assert "may not see tenant" in browser.find_element(By.TAG_NAME, "main").text


def test_events_filter_by_provider_open_a_call_and_never_another_tenants(
    browser: Any, world: World, stack: RunningStack
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, world, world.tenant_admin)
    browser.get(f"{world.console_url}/events")
    browser.find_element(By.ID, "f-provider").send_keys("sim")
    browser.find_element(By.ID, "f-model").send_keys("sim-large")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    until(lambda: "provider=sim" in browser.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    assert len(rows) == 1 and "sim-large" in rows[0].text, [r.text for r in rows]
    screenshot(browser, world, "events")
    rows[0].find_element(By.TAG_NAME, "a").click()
    until(lambda: "/events/" in browser.current_url)
    record = browser.find_element(By.TAG_NAME, "main").text
    for shown in ("Attempts and fallbacks", "sim-large", "Hash chain", world.tenant):
        assert shown in record
    assert text_of(browser, "#call-cost").startswith("$0.")
    screenshot(browser, world, "event")
    # The rival's call, by its id: the engine filters the tenant admin's query to its
    # own tenant, so there is no such call.
    (rival_id,) = stack.sql(
        f"SELECT toString(event_id) FROM lineage WHERE tenant_id = '{world.other}' LIMIT 1"
    )[0]
    browser.get(f"{world.console_url}/events/{rival_id}")
    assert "no such call" in browser.page_source
    browser.get(f"{world.console_url}/events?tenant={world.other}")
    assert "may not see tenant" in browser.page_source


def test_cost_center_funds_a_team_and_shows_the_new_balance(
    browser: Any, world: World, stack: RunningStack
) -> None:
    from selenium.webdriver.common.by import By

    alpha = f"#wallets tr[data-wallet='{world.tenant}/alpha'] .balance"
    # A tenant admin sees its tree but no funding form (funding is for org admins).
    login(browser, world, world.tenant_admin)
    browser.get(f"{world.console_url}/costs")
    before = until(lambda: text_of(browser, alpha))
    assert browser.find_elements(By.ID, "fund-usd") == []
    assert world.other not in browser.page_source
    # The org admin funds the team through the form.
    login(browser, world, stack.token)
    browser.get(f"{world.console_url}/costs?tenant={world.tenant}")
    browser.find_element(By.ID, "fund-team").send_keys("alpha")
    browser.find_element(By.ID, "fund-usd").send_keys("2")
    browser.find_element(By.ID, "fund-memo").send_keys("from the console test")
    browser.find_element(By.CSS_SELECTOR, "form[action='/costs/fund'] button").click()
    until(lambda: "done=funded" in browser.current_url)
    assert "Funded." in browser.page_source

    def balance_now() -> str:
        browser.get(f"{world.console_url}/costs?tenant={world.tenant}")
        shown = text_of(browser, alpha)
        return shown if shown not in ("", before) else ""

    after = until(balance_now)
    assert float(after.lstrip("$")) - float(before.lstrip("$")) == pytest.approx(2, abs=1e-3)
    screenshot(browser, world, "costs")
    browser.find_element(By.LINK_TEXT, "alpha").click()
    until(lambda: "from the console test" in browser.page_source)
    # The org admin's Overview reads the stack's worker: its commit stalls are a count.
    browser.get(f"{world.console_url}/overview/live?tenant={world.tenant}")
    assert text_of(browser, "#commit-stalls-1").isdigit()


def test_access_keys_create_shows_the_secret_once_and_revoke_stops_it(
    browser: Any, world: World, stack: RunningStack
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, world, world.tenant_admin)
    browser.get(f"{world.console_url}/keys")
    assert world.other not in browser.page_source
    browser.find_element(By.ID, "key-team").send_keys("alpha")
    browser.find_element(By.ID, "key-name").send_keys("made-in-the-console")
    browser.find_element(By.CSS_SELECTOR, "form[action='/keys'] button").click()
    secret = until(lambda: text_of(browser, "#issued-secret"))
    screenshot(browser, world, "keys")
    call(stack, secret)  # the new key works
    browser.get(f"{world.console_url}/keys")
    assert secret not in browser.page_source  # shown once
    (row,) = [
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
        if "made-in-the-console" in r.text
    ]
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    until(lambda: "done=revoked" in browser.current_url)
    with pytest.raises(openai.AuthenticationError):
        call(stack, secret)


PACK = """name: {name}
policies:
  chain:
    - name: {step}
      policy: {{retention_days: {days}}}
"""


def test_policies_push_a_lint_error_fix_it_and_revert(browser: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    login(browser, world, world.tenant_admin)
    name = "console-pack"

    def push(text: str) -> None:
        source = browser.find_element(By.ID, "source")
        source.clear()
        source.send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "form[action='/policies/push'] button").click()

    browser.get(f"{world.console_url}/policies/pack?name={name}")
    push(PACK.format(name=name, step="audit-lagger", days=90))
    errors = until(lambda: text_of(browser, "#lint-errors"))
    assert "line 4" in errors and "audit-lagger" in errors
    assert "← here" in browser.find_element(By.CSS_SELECTOR, "ol.numbered li.bad").text
    screenshot(browser, world, "policy-lint")
    # The text as sent is still in the editor: fix the step's name and push again.
    push(PACK.format(name=name, step="audit-logger", days=90))
    until(lambda: "done=pushed" in browser.current_url)
    push(PACK.format(name=name, step="audit-logger", days=120))

    def newest_stored(version: str) -> str:
        # The versions are read from the audit store, a moment behind the admin API.
        browser.refresh()
        newest = text_of(browser, "details[open]")
        return newest if newest.startswith(version) else ""

    until(lambda: newest_stored("v2"))
    first = browser.find_elements(By.CSS_SELECTOR, "details")[-1]
    first.find_element(By.TAG_NAME, "summary").click()  # v1, folded
    first.find_element(By.CSS_SELECTOR, "form[action='/policies/revert'] button").click()
    until(lambda: "done=reverted" in browser.current_url)
    newest = until(lambda: newest_stored("v3"))
    assert newest.startswith("v3") and "-      policy: {retention_days: 120}" in newest
    assert "retention_days: 90" in browser.find_element(By.ID, "source").get_attribute("value")
    # Assign it to a team: the next version, narrowed by its top-level targeting.
    browser.find_element(By.ID, "assign-teams").send_keys("alpha")
    browser.find_element(By.CSS_SELECTOR, "#assign button").click()
    until(lambda: "done=assigned" in browser.current_url)
    screenshot(browser, world, "policies")


HELD_PACK = """name: held
policies:
  chain:
    - name: content-filter
      policy: {deny: [wire transfer], action: flag}
    - name: human-oversight
      policy:
        triggers: [content-filter]
        mode: hold
        hold_timeout_s: 30
        priority: P2
        category: fraud
"""


def test_escalations_claim_and_approve_and_the_held_call_completes(
    browser: Any, world: World, stack: RunningStack
) -> None:
    import threading

    pushed = stack.admin(
        "POST", "/v1/admin/policies", json={"tenant": world.tenant, "source_yaml": HELD_PACK}
    )
    assert pushed.status_code == 201, pushed.text
    held_key = stack.create_key("alpha", tenant=world.tenant, policy_pack="held")["key"]
    answers: list[Any] = []

    def held_call() -> None:
        sdk = openai.OpenAI(base_url=stack.base_url, api_key=held_key, max_retries=0, timeout=60)
        answers.append(
            sdk.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "a wire transfer"}]
            )
        )

    caller = threading.Thread(target=held_call, daemon=True)
    caller.start()
    login(browser, world, world.tenant_admin)
    browser.get(f"{world.console_url}/escalations")
    # The queue is polled: the held call's escalation shows without a reload.
    row = "table.escalations tr[data-escalation]"
    until(lambda: "held until decided" in text_of(browser, row))
    screenshot(browser, world, "escalations")
    # The held call's context, a link away: key prefix, model, the pack's steps.
    until(lambda: clicked(browser, f"{row} a[href^='/escalations/esc_']"))
    held = until(lambda: text_of(browser, "#held-call"))
    assert "sim-small" in held and "content-filter → human-oversight" in held
    assert "The call is held" in text_of(browser, "#no-call")
    browser.back()
    until(lambda: clicked(browser, f"{row} form[action$='/claim'] button"))
    until(lambda: "done=claimed" in browser.current_url)
    assert "claimed by key:" in text_of(browser, row)
    until(lambda: clicked(browser, f"{row} button.approve"))
    until(lambda: "done=approve" in browser.current_url)
    caller.join(timeout=30)
    assert answers and answers[0].choices[0].message.content


def test_audit_answers_who_used_which_model_and_exports_a_download(
    browser: Any, world: World, stack: RunningStack
) -> None:
    import datetime as dt
    import hashlib

    import httpx
    from selenium.webdriver.common.by import By

    login(browser, world, world.tenant_admin)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    browser.get(f"{world.console_url}/audit?at={now}&around=30&model=sim-large")
    rows = browser.find_elements(By.CSS_SELECTOR, "#who tbody tr")
    assert len(rows) == 1 and "sim-large" in rows[0].text and "alpha" in rows[0].text
    browser.find_element(By.ID, "exp-since").clear()
    browser.find_element(By.ID, "exp-since").send_keys("1d")
    browser.find_element(By.ID, "exp-desc").send_keys("console test")
    browser.find_element(By.CSS_SELECTOR, "form[action='/audit/exports'] button").click()
    until(lambda: "done=export" in browser.current_url)
    # The list polls while the export runs: its download link shows without a reload.
    link = until(lambda: browser.find_elements(By.CSS_SELECTOR, "#exports a.download"))[0]
    screenshot(browser, world, "audit")
    href = str(link.get_attribute("href"))
    cookie = browser.get_cookie("govledger_console")["value"]
    downloaded = httpx.get(href, cookies={"govledger_console": cookie}, timeout=30)
    assert downloaded.status_code == 200
    assert world.tenant in downloaded.text and world.other not in downloaded.text
    sha256 = hashlib.sha256(downloaded.content).hexdigest()
    assert downloaded.headers["X-Govledger-Sha256"] == sha256
    browser.find_element(By.LINK_TEXT, "Manifest").click()
    assert sha256 in text_of(browser, "#manifest")
