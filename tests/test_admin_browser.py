"""The console in a real browser: Debian's chromium, driven by Selenium through chromedriver.

Against a live Django server in a thread (Django's own ``LiveServerThread``, the
admin's static files served), a real SQLite store in a temporary directory, a
real SMTP server and the flusher run in-process (``manage.py mailqueue flush``).
One browser for the module.

The screenshots in the docs (docs/_static/console/) are taken here, and written
there only when the environment variable ``MAILQUEUE_SCREENSHOTS`` is set (to
``1``, or to the directory to write them to); otherwise they go to a temporary
directory, so that a test run leaves the working tree as it was::

    MAILQUEUE_SCREENSHOTS=1 .venvs/django-5.2/bin/python -m pytest tests/test_admin_browser.py

Chromium and chromedriver must be installed (``apt-get install chromium
chromium-driver``; ``scripts/test`` does it): without them these tests fail,
they never skip.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.mail import EmailMultiAlternatives, send_mail
from django.core.management import call_command
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.convert import capture
from mailqueue_core.django_settings import get_store
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from tests.helpers import record
from tests.settings_admin import admin_project

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "_static" / "console"
CONSOLE = "/admin/mailqueue_core/queuedmail/"
WAIT = 10.0
WIDTH, HEIGHT = 1280, 900


class _Counting(BaseHTTPRequestHandler):
    """Counts what a page loads from it (it must load nothing)."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[str, list[str]]]:
    """A tiny HTTP server standing for the internet: its URL and the paths it served."""
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer() as server:
        yield server


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the screenshots go: the docs' directory only when asked (MAILQUEUE_SCREENSHOTS)."""
    wanted = os.environ.get("MAILQUEUE_SCREENSHOTS", "")
    if not wanted:
        return tmp_path_factory.mktemp("screenshots")
    return DOCS_SCREENSHOTS if wanted == "1" else Path(wanted)


@pytest.fixture(scope="module")
def site(tmp_path_factory, smtp_server) -> Iterator[str]:
    """The project with the admin, its queue in a SQLite file, the sent log on; the store's URL."""
    # A directory named as the quick start's, so that the screenshots show a path a
    # reader recognises (still a temporary one: the pages show the real location).
    spool = tmp_path_factory.mktemp("spool", numbered=False) / "mailqueue"
    spool.mkdir()
    store = f"sqlite:///{spool}/queue.db"
    conf = {
        "STORE": store,
        "TRANSPORT": f"smtp://127.0.0.1:{smtp_server.port}",
        "SENT_LOG": {"KEEP": "30d"},
    }
    with admin_project(MAILQUEUE=conf):
        from django.contrib.auth.models import User

        User.objects.create_superuser("boss", "boss@example.com", "console-pw")
        yield store


@pytest.fixture(scope="module")
def live_server(site) -> Iterator[str]:
    """Django's live server thread (as StaticLiveServerTestCase runs it); its URL."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.db import connections
    from django.test.testcases import LiveServerThread

    # The test database is SQLite in memory: the server thread shares its connection.
    shared = {
        conn.alias: conn
        for conn in connections.all()
        if conn.vendor == "sqlite" and conn.is_in_memory_db()
    }
    for conn in shared.values():
        conn.inc_thread_sharing()
    thread = LiveServerThread("127.0.0.1", StaticFilesHandler, connections_override=shared)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()
        # A request thread closes the shared connection when its keep-alive socket
        # ends (the browser has quit by now): it must still be shareable then.
        for handler in threading.enumerate():
            if handler.name.endswith("(process_request_thread)"):
                handler.join(WAIT)
        for conn in shared.values():
            conn.dec_thread_sharing()


@pytest.fixture(scope="module")
def browser(live_server: str) -> Iterator[object]:
    """Chromium, quit before the live server stops (it holds keep-alive connections)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the console's browser tests need {' and '.join(missing)}: install Debian's "
            "chromium and chromium-driver (apt-get install chromium chromium-driver; "
            "scripts/test installs them)",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # run as root in a container
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(lambda: driver.execute_script("return document.readyState") == "complete", url)


def _by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _press(driver, css: str) -> None:
    """Click the button and wait for the page it leads to."""
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    _wait(lambda: not _attached(old), "the next page")
    _wait(lambda: driver.execute_script("return document.readyState") == "complete", "loading")


def _attached(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.tag_name  # noqa: B018 - touching it says whether the page is still there
    except StaleElementReferenceException:
        return False
    except WebDriverException as exc:
        # While the old document is being replaced, chromedriver may answer with this
        # inspector error instead of a stale reference: the element is gone all the same.
        if "does not belong to the document" in str(exc):
            return False
        raise
    return True


def _log_in(driver, live_server: str) -> None:
    """Log in through the admin's login page (the admin sends a logged-in user on)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(driver, f"{live_server}/admin/login/?next=/admin/")
    if driver.find_elements(By.ID, "id_username"):
        _by_id(driver, "id_username").send_keys("boss")
        _by_id(driver, "id_password").send_keys("console-pw", Keys.RETURN)
    _wait(lambda: driver.current_url == f"{live_server}/admin/", "the admin index")


def _notices(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "ul.messagelist li")]


def _counts(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#mq-counts tbody tr[data-state]")
    return {
        row.get_attribute("data-state"): row.find_element(By.CSS_SELECTOR, "td.mq-num").text
        for row in rows
    }


def _screenshot(driver, directory: Path, name: str) -> None:
    """The whole page (not only the window) as NAME.png in ``directory``."""
    # A taller window, not a capture beyond the viewport: that one leaves the
    # sandboxed frame (drawn by a process of its own) blank.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(
        WIDTH, height + driver.execute_script("return window.outerHeight - window.innerHeight")
    )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        assert driver.save_screenshot(str(directory / f"{name}.png"))
    finally:
        driver.set_window_size(WIDTH, HEIGHT)


def _flush() -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("mailqueue", "flush", stdout=out, stderr=err)
    return out.getvalue()


def _fill(site: str, remote: str, smtp_server: FaultySMTPServer) -> dict[str, str]:
    """The queue the screenshots show: mail sent a moment ago (a flusher was there), and a
    few messages in each state but in flight."""
    store = get_store(site, "default")
    for to, subject in (
        ("frank@example.com", "Your order #1041 has shipped"),
        ("gina@example.com", "Your receipt"),
    ):
        send_mail(subject, "Hello!", "Shop <shop@example.com>", [to])
    assert "sent 2," in _flush()
    smtp_server.wait_for(2)
    smtp_server.clear()
    now = time.time()
    for to, subject in (
        ("ann@example.com", "Your order #1042 has shipped"),
        ("bob@example.com", "Password reset"),
        ("carol@example.com", "Welcome to the shop"),
    ):
        send_mail(subject, "Hello!", "Shop <shop@example.com>", [to])
    mail = EmailMultiAlternatives(
        "Your invoice for March <b>#2024-03</b>",
        "Your invoice is attached.\nThanks for your order!",
        "Shop <billing@example.com>",
        ["dave@example.com"],
    )
    mail.attach_alternative(
        f"""<h1 style="font-family:sans-serif;color:#264b5d">Your invoice</h1>
<p id="greeting" style="font-family:sans-serif">Thanks for your order, Dave!</p>
<img id="tracker" src="{remote}/pixel.gif" alt="remote image" width="40" height="40">
<div style="background:url({remote}/background.gif)">a remote background</div>
<script>
document.getElementById("greeting").textContent = "the script ran";
new Image().src = "{remote}/script-ran";
</script>""",
        "text/html",
    )
    mail.attach("invoice-2024-03.pdf", b"%PDF-1.4 " + b"x" * 2400, "application/pdf")
    invoice = capture(mail)
    scheduled = dataclasses.replace(codec.to_record(invoice), created=now - 1500, due=now + 3600)
    store.enqueue([scheduled])
    dead = record("nobody@example.org", created=now - 5000, subject="Newsletter: spring sale")
    store.enqueue([dataclasses.replace(dead, due=now - 5000)])
    (claim,) = store.fetch_due(now - 4999, 1, 30)
    store.bury(claim, "550 5.1.1 <nobody@example.org>: Recipient address rejected", now - 600)
    return {"invoice": scheduled.id, "dead": dead.id}


def test_the_console_in_a_browser(
    browser, live_server, site, smtp_server, remote, screenshots
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    remote_url, hits = remote
    ids = _fill(site, remote_url, smtp_server)

    # Log in as staff do; the admin's index leads to the console.
    _log_in(driver, live_server)
    _press(driver, f'a[href="{CONSOLE}"]')

    # The overview counts each state; its stylesheet came from the admin's static files.
    assert _counts(driver) == {
        "ready": "3",
        "scheduled": "1",
        "in flight": "0",
        "stuck": "0",
        "dead": "1",
        "lost": "0",
    }
    assert "SQLiteStore" in _by_id(driver, "content-main").text
    assert _by_id(driver, "mq-sent-recently").text.startswith("Sent 2 in the last 24 h")
    assert _by_id(driver, "mq-flushers").text.endswith("s ago")
    assert not driver.find_elements(By.ID, "mq-no-flusher")
    color = driver.execute_script(
        "return getComputedStyle(document.querySelector('.mq-tabs')).listStyleType"
    )
    assert color == "none", "console.css was not served"
    _screenshot(driver, screenshots, "overview")

    # Search the scheduled mail; open the invoice.
    _open(driver, f"{live_server}{CONSOLE}state/scheduled/")
    _by_id(driver, "mq-q").send_keys("invoice")
    _press(driver, "#mq-search")
    rows = driver.find_elements(By.CSS_SELECTOR, "#mq-list tbody tr[data-id]")
    assert [row.get_attribute("data-id") for row in rows] == [ids["invoice"]]
    assert "1 found among 1 message read." in _by_id(driver, "mq-searched").text
    _screenshot(driver, screenshots, "list")
    _press(driver, f'#mq-list a[href$="/message/{ids["invoice"]}/"]')

    # The HTML body is shown in its sandbox: its script did not run, nothing remote loaded.
    assert "invoice-2024-03.pdf" in _by_id(driver, "mq-attachments").text
    assert _by_id(driver, "mq-preview").get_attribute("sandbox") == ""
    driver.switch_to.frame(_by_id(driver, "mq-preview"))
    _wait(lambda: driver.find_elements(By.ID, "greeting"), "the preview")
    assert _by_id(driver, "greeting").text == "Thanks for your order, Dave!"
    assert _by_id(driver, "tracker").get_attribute("naturalWidth") == "0"
    driver.switch_to.default_content()
    _screenshot(driver, screenshots, "message")
    assert hits == []

    # Send it now; the flusher delivers it to the SMTP server.
    _press(driver, "#mq-send_now")
    assert _notices(driver) == ["1 sent now"]
    assert "sent 4, deferred 0, buried 0" in _flush()
    received = smtp_server.wait_for(4)
    assert sorted(r.rcpt_tos[0] for r in received) == [
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert b"invoice-2024-03.pdf" in next(r.data for r in received if "dave" in r.rcpt_tos[0])

    # The Sent tab has it, newest first; a search by recipient finds it alone.
    _open(driver, f"{live_server}{CONSOLE}sent/")
    rows = driver.find_elements(By.CSS_SELECTOR, "#mq-sent tbody tr[data-id]")
    assert len(rows) == 6 and ids["invoice"] in [row.get_attribute("data-id") for row in rows]
    _screenshot(driver, screenshots, "sent")
    _by_id(driver, "mq-q").send_keys("dave@")
    _press(driver, "#mq-search")
    (row,) = driver.find_elements(By.CSS_SELECTOR, "#mq-sent tbody tr[data-id]")
    assert row.get_attribute("data-id") == ids["invoice"]
    assert "Your invoice for March <b>#2024-03</b>" in row.text and "smtp" in row.text

    # Deleting the dead letter asks first, then deletes it.
    _open(driver, f"{live_server}{CONSOLE}state/dead/")
    driver.find_element(By.CSS_SELECTOR, f'input[name="ids"][value="{ids["dead"]}"]').click()
    _press(driver, '#mq-selected button[value="delete"]')
    assert "Delete 1 message?" in _by_id(driver, "mq-confirm").text
    _press(driver, "#mq-yes")
    assert _notices(driver) == ["1 deleted"]
    assert not driver.find_elements(By.CSS_SELECTOR, "#mq-list tbody tr[data-id]")

    # Pause: the banner says so and the flusher holds the mail; resume: it goes.
    _open(driver, f"{live_server}{CONSOLE}")
    _press(driver, "#mq-pause")
    assert _notices(driver)[0].startswith("Delivery paused")
    assert "Delivery is paused." in _by_id(driver, "mq-paused").text
    send_mail("Held", "Held while paused.", "shop@example.com", ["erin@example.com"])
    assert "delivery is paused" in _flush()
    assert len(smtp_server.messages) == 4
    _press(driver, "#mq-resume")
    assert not driver.find_elements(By.ID, "mq-paused")
    assert "sent 1," in _flush()
    assert smtp_server.wait_for(5)[-1].rcpt_tos == ["erin@example.com"]
    assert hits == []


def test_a_store_that_cannot_be_reached_is_a_page_not_an_error(
    browser, live_server, site, unused_tcp_port
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    spec = f"redis://:pw-{uuid.uuid4().hex}@127.0.0.1:{unused_tcp_port}/0?socket_timeout=0.5"
    _log_in(driver, live_server)
    with override_settings(MAILQUEUE={"STORE": spec}):
        _open(driver, f"{live_server}{CONSOLE}")
        trouble = driver.find_element(By.ID, "mq-trouble").text
    assert trouble.startswith("The queue store cannot be reached")
    assert "pw-" not in driver.page_source
