"""The operator console in a real browser (issue 19).

Debian's Chromium, driven by Selenium through Debian's chromedriver (nothing downloaded), uses
the console of the real service (``mail-proxy serve`` in a subprocess) with a real SMTP server
behind it; mail goes in through the API, and the tests then look and act as a person would.
One service and one browser serve the whole module (fixtures of module scope).

The screenshots linked from docs/console.md are taken here (docs/console/*.png).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.service import ServiceProcess
from mail_proxy.core.testing.smtp import SmtpTestServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
ADMIN_TOKEN = "console-admin-token-0123456789"
REFUSED = "refused@example.org"
SMTP_REFUSAL = "550 5.1.1 <refused@example.org>: Recipient address rejected: User unknown"
XSS_SUBJECT = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
#: In the other tenant's data only: it must never reach the first tenant's pages.
FOREIGN_MARK = "globex-confidential-7731"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (core+CE only)
        return False


HAS_MULTITENANCY = _installed("mail_proxy.ee.multitenancy")
HAS_BOUNCE = _installed("mail_proxy.ee.bounce")
T = TypeVar("T")


def _missing(reason: str) -> None:
    """Skip, except under CI=true where a missing component is a failure (QUALITY.md)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the dev extra installs it
    webdriver = None  # type: ignore[assignment]


class LoopThread:
    """An event loop in a thread for the asynchronous parts (SMTP server, service start),
    since Selenium's calls block."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Stack:
    """The running service, its SMTP server, and what the tests put in it."""

    service: ServiceProcess
    smtp: SmtpTestServer
    loop: LoopThread
    #: tenant id → API key (multitenancy installed only)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.service.url

    def api(
        self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN, expect: int = 200
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("X-API-Token", token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, answer = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, json.loads(exc.read())
        assert status == expect, (method, path, status, answer)
        return answer

    def wait_status(self, msg_id: str, status: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while True:
            msg: dict[str, Any] = self.api("GET", f"/messages/{msg_id}", token=token)["message"]
            if msg["status"] == status:
                return msg
            assert time.monotonic() < deadline, (msg_id, msg["status"], status)
            time.sleep(0.05)


def _msg(msg_id: str, subject: str, to: str = "ok@example.org", **extra: Any) -> dict[str, Any]:
    return {
        "id": msg_id,
        "from": "Billing <billing@example.com>",
        "to": [to],
        "subject": subject,
        "body": "Please find the invoice attached.",
        **extra,
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console")
    loop = LoopThread()

    async def start_smtp() -> SmtpTestServer:
        server = SmtpTestServer()
        server.script_rcpt = {REFUSED: SMTP_REFUSAL}
        return await server.start()

    smtp = loop.run(start_smtp())
    env = {
        "GMP_DATABASE_URL": f"sqlite:///{tmp / 'console.db'}",
        "GMP_API_TOKEN": ADMIN_TOKEN,
        "MAIL_PROXY_ENCRYPTION_KEY": generate_key(),
        "GMP_SEND_LOOP_INTERVAL": "0.05",
        "GMP_SYNC_INTERVAL": "3600",
        "GMP_LOG_LEVEL": "WARNING",
        "GMP_INSTANCE_NAME": "console-test",
        # the test suite's own plugins (tests/plugins) are installed in the dev venv: not shown
        "GMP_DISABLED_PLUGINS": "gmp_test,vault,example",
    }
    service = ServiceProcess(env, tmp / "service.log")
    stack = Stack(service, smtp, loop)
    try:
        loop.run(service.start())
        account = {"id": "main", "host": "127.0.0.1", "port": smtp.port, "default": True}
        stack.api("POST", "/account", account)
        stack.api("POST", "/commands/suspend", {"tenant_id": "default", "batch_code": "held"})
        messages = [
            _msg("invoice-acme-1", "Invoice 2026-001 for ACME", batch_code="spring"),
            _msg("invoice-acme-2", "Invoice 2026-002 for ACME", batch_code="spring"),
            _msg("refused-1", "Invoice for a closed mailbox", to=REFUSED),
            _msg("xss-1", XSS_SUBJECT),
            _msg("held-1", "Held until its batch is activated", batch_code="held"),
        ]
        stack.api("POST", "/commands/add-messages", {"messages": messages})
        for msg_id in ("invoice-acme-1", "invoice-acme-2", "xss-1"):
            stack.wait_status(msg_id, "sent")
        stack.wait_status("refused-1", "error")
        if HAS_MULTITENANCY:
            for tenant in ("acme", "globex"):
                answer = stack.api("POST", "/tenant", {"id": tenant, "name": tenant}, expect=201)
                stack.keys[tenant] = answer["api_key"]
                stack.api("POST", "/account", account, token=answer["api_key"])
            stack.api(
                "POST",
                "/commands/add-messages",
                {"messages": [_msg("acme-order-1", "ACME order confirmation")]},
                token=stack.keys["acme"],
            )
            secret = _msg("globex-secret-1", f"Globex merger {FOREIGN_MARK}")
            stack.api(
                "POST",
                "/commands/add-messages",
                {"messages": [secret]},
                token=stack.keys["globex"],
            )
            stack.wait_status("globex-secret-1", "sent", token=stack.keys["globex"])
        yield stack
    finally:
        service.stop()
        loop.run(smtp.stop())
        loop.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if webdriver is None:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            _missing(f"{path} not found: scripts/ci-packages installs chromium and chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


# -- what a person does ---------------------------------------------------------------------
def wait(driver: WebDriver, seconds: float = 10) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds, poll_frequency=0.05)


def find(driver: WebDriver, test: str, seconds: float = 10) -> WebElement:
    """The visible element marked ``data-test=<test>`` (waits for it)."""
    locator = (By.CSS_SELECTOR, f'[data-test="{test}"]')
    element: WebElement = wait(driver, seconds).until(ec.visibility_of_element_located(locator))
    return element


def text_of(driver: WebDriver, test: str, expected: Callable[[str], bool]) -> str:
    """Wait until the ``data-test=<test>`` element's text satisfies ``expected``."""
    seen: list[str] = []

    def check(d: WebDriver) -> bool:
        try:
            text = d.find_element(By.CSS_SELECTOR, f'[data-test="{test}"]').text
        except Exception:
            return False
        seen.append(text)
        return expected(text)

    try:
        wait(driver).until(check)
    except TimeoutException:
        raise AssertionError(f"{test}: last text {seen[-1:]!r}") from None
    return seen[-1]


def sign_in(driver: WebDriver, stack: Stack, token: str) -> None:
    driver.get(stack.url + "/console")
    driver.execute_script("sessionStorage.clear()")
    driver.get(stack.url + "/console#/overview")
    field = find(driver, "signin-form").find_element(By.ID, "token")
    field.send_keys(token)
    find(driver, "signin").click()


def go(driver: WebDriver, stack: Stack, hash_path: str) -> None:
    driver.execute_script("window.location.hash = arguments[0]", hash_path)


def confirm(driver: WebDriver) -> None:
    """Accept the confirmation every action asks for."""
    wait(driver, 5).until(ec.alert_is_present())
    driver.switch_to.alert.accept()


def open_message(driver: WebDriver, msg_id: str) -> None:
    """Search a message by id from the messages page."""
    box = find(driver, "search-id")
    box.clear()
    box.send_keys(msg_id)
    find(driver, "search").click()
    text_of(driver, "message-id", lambda t: t == msg_id)


def events_of(driver: WebDriver) -> list[dict[str, str]]:
    """The events of the message page, read in one call (the page re-renders every 3 s, so
    elements found one by one could be replaced between two reads)."""
    script = """
        return Array.from(document.querySelectorAll('[data-test="event"]')).map((e) => ({
            type: e.dataset.type,
            text: e.textContent,
            metadata: (e.querySelector('[data-test="event-metadata"]') || {}).textContent || "",
            report: e.querySelector('[data-test="event-report"]').textContent,
        }));
    """
    events: list[dict[str, str]] = driver.execute_script(script)
    return events


def shoot(driver: WebDriver, name: str, height: int = 900) -> None:
    """Save docs/console/<name>.png, the window ``height`` pixels tall for the shot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1280, height)
    try:
        assert driver.save_screenshot(str(SHOTS / f"{name}.png"))
    finally:
        driver.set_window_size(1280, 900)


# -- the cases ------------------------------------------------------------------------------
def test_a_wrong_token_is_refused_with_a_clear_message(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, "not-the-right-token-0000")
    message = text_of(browser, "signin-error", lambda t: bool(t))
    assert "refused this token" in message and "invalid_token" in message
    assert browser.find_element(By.ID, "nav").get_attribute("hidden") is not None
    assert browser.execute_script("return sessionStorage.length") == 0


def test_admin_sees_a_delivered_message_and_its_events(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    text_of(browser, "who", lambda t: "admin" in t)
    text_of(browser, "count-sent", lambda t: t.isdigit() and int(t) >= 3)
    text_of(browser, "count-error", lambda t: t.isdigit() and int(t) >= 1)
    text_of(browser, "scheduler-state", lambda t: t == "running")
    text_of(browser, "recent-sent", lambda t: t.isdigit() and int(t) >= 3)
    shoot(browser, "overview")

    browser.find_element(By.CSS_SELECTOR, '[data-nav="messages"]').click()
    table = find(browser, "messages-table")
    ids = [a.text for a in table.find_elements(By.CSS_SELECTOR, '[data-test="message-link"]')]
    # newest first, the admin's default tenant only
    assert ids[:2] == ["held-1", "xss-1"] and "invoice-acme-1" in ids
    assert "globex-secret-1" not in ids
    shoot(browser, "messages")

    link = table.find_element(By.LINK_TEXT, "invoice-acme-1")
    link.click()
    text_of(browser, "message-id", lambda t: t == "invoice-acme-1")
    text_of(browser, "subject", lambda t: t == "Invoice 2026-001 for ACME")
    text_of(browser, "status", lambda t: t == "sent")
    text_of(browser, "message-fields", lambda t: "ok@example.org" in t)
    events = events_of(browser)
    assert [e["type"] for e in events] == ["queued", "sent"]
    sent = events[1]
    assert "ok@example.org" in sent["metadata"] and "250" in sent["metadata"]
    # no client application in this test: nobody acknowledged the report
    assert sent["report"] == "report not yet acknowledged"
    shoot(browser, "message", height=1250)
    # what the SMTP server really received
    received = [
        m for m in stack.smtp.messages if m.message["Subject"] == "Invoice 2026-001 for ACME"
    ]
    assert len(received) == 1 and received[0].rcpt_tos == ["ok@example.org"]


def test_find_a_failed_message_by_id_and_read_the_smtp_reply(
    browser: WebDriver, stack: Stack
) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-error")
    go(browser, stack, "#/messages?status=error")
    open_message(browser, "refused-1")
    error = text_of(browser, "error", lambda t: "550" in t)
    assert "5.1.1" in error and "User unknown" in error
    events = events_of(browser)
    assert [e["type"] for e in events] == ["queued", "error"]
    assert "550 5.1.1" in events[1]["text"]

    # re-queue it (the server still refuses: it fails again, with a requeued event between)
    find(browser, "requeue").click()
    confirm(browser)
    text_of(browser, "notice-ok", lambda t: t == "Queued again.")

    def story(d: WebDriver) -> list[str]:
        return [e["type"] for e in events_of(d)]

    wait(browser, 15).until(lambda d: story(d) == ["queued", "error", "requeued", "error"])


def test_suspend_and_activate_a_batch(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    go(browser, stack, "#/messages?tenant_id=default&batch_code=spring")
    text_of(browser, "batch-state", lambda t: t == "active")
    find(browser, "batch-toggle").click()
    confirm(browser)
    text_of(browser, "batch-state", lambda t: t == "suspended")
    suspended = stack.api("GET", "/suspended-batches?tenant_id=default")["suspensions"]
    assert ("default", "spring") in {(s["tenant_id"], s["batch_code"]) for s in suspended}

    find(browser, "batch-toggle").click()
    confirm(browser)
    text_of(browser, "batch-state", lambda t: t == "active")
    suspended = stack.api("GET", "/suspended-batches?tenant_id=default")["suspensions"]
    assert "spring" not in {s["batch_code"] for s in suspended}


def test_a_message_story_refreshes_by_itself(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    go(browser, stack, "#/message/held-1?tenant_id=default")
    text_of(browser, "status", lambda t: t == "pending")
    browser.execute_script("window.__sameDocument = true")
    stack.api("POST", "/commands/activate", {"tenant_id": "default", "batch_code": "held"})
    text_of(browser, "status", lambda t: t == "sent")
    assert browser.execute_script("return window.__sameDocument") is True  # no reload


def test_a_subject_with_markup_is_shown_as_text(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    go(browser, stack, "#/messages")
    open_message(browser, "xss-1")
    text_of(browser, "subject", lambda t: t == XSS_SUBJECT)
    made = "return document.querySelector('[data-test=\"subject\"]').children.length"
    assert browser.execute_script(made) == 0  # no element made from it
    assert browser.execute_script("return window.__pwned") is None
    go(browser, stack, "#/messages")
    find(browser, "messages-table")
    assert browser.execute_script("return window.__pwned") is None


@pytest.mark.skipif(
    not HAS_MULTITENANCY, reason="needs the multitenancy plugin (genro-mail-proxy[multitenancy])"
)
def test_a_tenant_token_sees_only_its_tenant(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, stack.keys["acme"])
    text_of(browser, "who", lambda t: "tenant acme" in t)
    navs = [a.get_attribute("data-nav") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")]
    assert "tenants" not in navs and "log" not in navs
    go(browser, stack, "#/messages")
    table = find(browser, "messages-table")
    ids = [a.text for a in table.find_elements(By.CSS_SELECTOR, '[data-test="message-link"]')]
    assert ids == ["acme-order-1"]

    open_box = find(browser, "search-id")
    open_box.send_keys("globex-secret-1")
    find(browser, "search").click()
    message = text_of(browser, "not-found", lambda t: bool(t))
    assert message.startswith("Not found")
    assert FOREIGN_MARK not in browser.page_source
    # the same message, for its own tenant's token: there it is
    sign_in(browser, stack, stack.keys["globex"])
    text_of(browser, "who", lambda t: "tenant globex" in t)
    go(browser, stack, "#/message/globex-secret-1")
    text_of(browser, "subject", lambda t: FOREIGN_MARK in t)


def test_test_connection_of_an_account(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    go(browser, stack, "#/accounts?tenant_id=default")
    button = find(browser, "test-main")
    received, connections = len(stack.smtp.messages), stack.smtp.connection_count
    button.click()
    result = text_of(browser, "probe-main", lambda t: t.startswith(("OK", "FAILED")))
    assert result.startswith(f"OK: connected to 127.0.0.1:{stack.smtp.port}, no TLS"), result
    # a connection of its own, and nothing sent on it
    assert stack.smtp.connection_count == connections + 1
    assert len(stack.smtp.messages) == received


def test_the_command_log_shows_the_console_s_actions(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    go(browser, stack, "#/log?period=3600")
    log = text_of(browser, "command-log", lambda t: "POST /commands/activate" in t)
    assert "POST /commands/suspend" in log and "POST /commands/requeue-messages" in log
    assert "admin" in log


@pytest.mark.skipif(
    not HAS_MULTITENANCY, reason="needs the multitenancy plugin (genro-mail-proxy[multitenancy])"
)
def test_create_a_tenant_and_rotate_its_key(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    browser.find_element(By.CSS_SELECTOR, '[data-nav="tenants"]').click()
    find(browser, "new-tenant-id").send_keys("initech")
    find(browser, "new-tenant-name").send_keys("Initech")
    find(browser, "create-tenant").submit()
    confirm(browser)
    first = text_of(browser, "secret-value", lambda t: len(t) >= 40)
    assert stack.api("GET", "/status", token=first)["token"]["tenant_id"] == "initech"
    text_of(browser, "tenants", lambda t: "initech" in t)

    find(browser, "rotate-initech").click()
    confirm(browser)
    second = text_of(browser, "secret-value", lambda t: len(t) >= 40 and t != first)
    assert stack.api("GET", "/status", token=second)["token"]["tenant_id"] == "initech"
    refused = stack.api("GET", "/status", token=first, expect=401)
    assert refused["code"] == "invalid_token"

    find(browser, "suspend-initech").click()
    confirm(browser)
    text_of(browser, "dispatch-initech", lambda t: t == "suspended")
    suspended = stack.api("GET", "/suspended-batches?tenant_id=initech")["suspensions"]
    assert [s["batch_code"] for s in suspended] == ["*"]
    find(browser, "suspend-initech").click()
    confirm(browser)
    text_of(browser, "dispatch-initech", lambda t: t == "running")


@pytest.mark.skipif(not HAS_BOUNCE, reason="needs the bounce plugin (genro-mail-proxy[bounce])")
def test_suppress_an_address_and_remove_it(browser: WebDriver, stack: Stack) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    find(browser, "count-sent")
    browser.find_element(By.CSS_SELECTOR, '[data-nav="suppressions"]').click()
    text_of(browser, "suppressions", lambda t: "No suppressed address" in t)
    find(browser, "suppress-address").send_keys("gone@example.org")
    find(browser, "suppress-address").submit()
    confirm(browser)
    text_of(browser, "suppressions", lambda t: "gone@example.org" in t and "manual" in t)
    listed = stack.api("GET", "/suppressions?tenant_id=default")["suppressions"]
    assert [s["address"] for s in listed] == ["gone@example.org"]
    # a message to it is now refused at the door
    answer = stack.api(
        "POST",
        "/commands/add-messages",
        {"messages": [_msg("to-gone-1", "Hello", to="gone@example.org")]},
    )
    assert answer["queued"] == 0 and "suppressed" in answer["rejected"][0]["reason"]

    find(browser, "suppressions").find_element(By.TAG_NAME, "button").click()
    confirm(browser)
    text_of(browser, "suppressions", lambda t: "No suppressed address" in t)
    assert stack.api("GET", "/suppressions?tenant_id=default")["suppressions"] == []
