"""The operator's console in the Django admin, through Django's test client.

A project with the admin is set up for the module (tests/settings_admin.py); each
test gets a memory store of its own, or a real SQLite, Redis or memcached store
where the test is about one.
"""

from __future__ import annotations

import dataclasses
import html
import io
import re
import time
import uuid
from collections.abc import Iterable, Iterator

import django
import pytest
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.management import call_command
from django.test import Client, override_settings

from mailqueue_core import codec
from mailqueue_core.console.views import PREVIEW_POLICY
from mailqueue_core.convert import capture
from mailqueue_core.django_settings import get_store
from mailqueue_core.store import (
    Capability,
    Entry,
    Page,
    Record,
    SentRecord,
    State,
    Stats,
    Store,
)
from mailqueue_stores.memory import MemoryStore
from tests.helpers import record
from tests.settings_admin import MIDDLEWARE, admin_project
from tests.test_configuration import install_stores

CONSOLE = "/admin/mailqueue_core/queuedmail/"
ACT = f"{CONSOLE}act/"
SENT = f"{CONSOLE}sent/"
SENT_LOG = {"KEEP": "30d"}


@pytest.fixture(scope="module", autouse=True)
def project() -> Iterator[None]:
    with admin_project():
        yield


@pytest.fixture(scope="module")
def users(project: None) -> dict[str, object]:
    """Staff users by what they may do with the queue."""
    from django.contrib.auth.models import Permission, User

    def staff(name: str, *codenames: str) -> User:
        user = User.objects.create_user(name, password="pw", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="mailqueue_core", codename__in=codenames
            )
        )
        return user

    return {
        "nobody": staff("nobody"),
        "viewer": staff("viewer", "view_queuedmail"),
        "changer": staff("changer", "change_queuedmail"),
    }


def console_admin() -> type:
    """The console's ModelAdmin class (importable once the admin is installed)."""
    from mailqueue_core.admin import QueuedMailAdmin

    return QueuedMailAdmin


def client(users: dict[str, object], name: str, **kwargs: object) -> Client:
    c = Client(**kwargs)
    c.force_login(users[name])
    return c


@pytest.fixture
def viewer(users) -> Client:
    return client(users, "viewer")


@pytest.fixture
def changer(users) -> Client:
    return client(users, "changer")


@pytest.fixture
def conf() -> Iterator[dict[str, object]]:
    c: dict[str, object] = {"STORE": f"memory://{uuid.uuid4().hex}"}
    with override_settings(MAILQUEUE=c):
        yield c


@pytest.fixture
def store(conf) -> Store:
    return get_store(conf["STORE"], "default")


def text(response) -> str:
    """The page as a reader sees its text: tags gone, entities decoded."""
    return html.unescape(re.sub(r"<[^>]*>", "", response.content.decode()))


def ids_on(response) -> list[str]:
    """The queue ids of a list page's rows, in order."""
    return re.findall(r'<tr data-id="([^"]+)">', response.content.decode())


def queue(store: Store, *recipients: str, ago: float = 60, due_in: float = 0, **kw) -> str:
    """One message queued ``ago`` seconds ago, due ``due_in`` from now; its id."""
    now = time.time()
    rec = record(*recipients, created=now - ago, **kw)
    rec = dataclasses.replace(rec, due=now + due_in if due_in else now - ago)
    store.enqueue([rec])
    return rec.id


def states(store: Store) -> dict[State, str]:
    """One message in each state; state -> id."""
    now = time.time()
    ids = {State.DEAD: queue(store, "dead@example.com", ago=2500)}
    (dead,) = store.fetch_due(now - 2400, 1, 30)
    store.bury(dead, "550 5.1.1 no such user", now - 30)
    ids[State.IN_FLIGHT] = queue(store, "flying@example.com", ago=2300)
    store.fetch_due(now - 2200, 1, 2500)  # the lease ends in 5m
    ids[State.STUCK] = queue(store, "stuck@example.com", ago=2100)
    store.fetch_due(now - 2000, 1, 10)  # the lease ran out 1990s ago
    ids[State.READY] = queue(store, "ready@example.com", ago=120, subject="Ready one")
    ids[State.SCHEDULED] = queue(store, "later@example.com", due_in=600, subject="Later")
    return ids


def state_of(store: Store, mid: str) -> State | None:
    entry = store.get(mid, time.time())
    return None if entry is None else entry.state


def act(c: Client, action: str, *ids: str, **fields: str):
    """Press a button; the page it leads back to (with its notice)."""
    data = {"action": action, "ids": list(ids), **fields}
    return c.post(ACT, data, follow=True)


def every_page(c: Client, url: str) -> list[str]:
    """The ids of a list's rows, following its "Next page" links to the end."""
    seen: list[str] = []
    page = c.get(url)
    assert 'id="mq-first"' not in page.content.decode()
    while True:
        seen += ids_on(page)
        found = re.search(r'<a href="([^"]+)" id="mq-next">', page.content.decode())
        if not found:
            return seen
        page = c.get(url + html.unescape(found.group(1)))
        assert 'id="mq-first"' in page.content.decode()


def form_of(page) -> dict[str, list[str]]:
    """The hidden fields of the confirmation page's form, as its "Yes" posts them."""
    form = page.content.decode().split('id="mq-confirm"', 1)[1].split("</form>")[0]
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form):
        fields.setdefault(name, []).append(html.unescape(value))
    return fields


def ask(c: Client, action: str, *ids: str, **fields: str):
    """Press a button that asks first: its confirmation page (nothing done yet)."""
    page = c.post(ACT, {"action": action, "ids": list(ids), **fields})
    assert page.status_code == 200 and 'id="mq-confirm"' in page.content.decode()
    return page


def confirm(c: Client, action: str, *ids: str, **fields: str):
    """Press a button that asks first, then its "Yes"; the page it leads back to."""
    return c.post(ACT, form_of(ask(c, action, *ids, **fields)), follow=True)


# -- where it is, who sees it ------------------------------------------------------------------


def test_migrate_makes_two_permissions_and_no_table(project):
    from django.contrib.auth.models import Permission
    from django.db import connection

    codenames = set(
        Permission.objects.filter(content_type__app_label="mailqueue_core").values_list(
            "codename", flat=True
        )
    )
    assert codenames == {"view_queuedmail", "change_queuedmail"}
    assert "mailqueue_core_queuedmail" not in connection.introspection.table_names()
    out = io.StringIO()
    # The app has no migrations module: nothing to make, nothing to check.
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
    # The admin's and the models' checks pass for the console's ModelAdmin and model.
    call_command("check", "--tag", "admin", "--tag", "models", stdout=out)
    assert "System check identified no issues" in out.getvalue()


def test_anonymous_is_sent_to_the_login_page(conf):
    for url in (CONSOLE, f"{CONSOLE}state/ready/", f"{CONSOLE}message/x/"):
        response = Client().get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Client().post(ACT, {"action": "pause"}).status_code == 302


def test_staff_without_the_permission_see_nothing_of_it(users, store):
    mid = queue(store, "a@example.com")
    c = client(users, "nobody")
    index = c.get("/admin/")
    assert index.status_code == 200 and "queuedmail" not in index.content.decode()
    for url in (
        CONSOLE,
        f"{CONSOLE}state/ready/",
        f"{CONSOLE}message/{mid}/",
        f"{CONSOLE}message/{mid}/preview/",
    ):
        assert c.get(url).status_code == 403, url
    assert c.post(ACT, {"action": "delete", "ids": [mid]}).status_code == 403
    assert c.get("/admin/mailqueue_core/").status_code in (403, 404)
    assert state_of(store, mid) is State.READY


def test_view_permission_shows_it_and_cannot_act(viewer, store):
    mid = queue(store, "a@example.com", due_in=600)
    index = viewer.get("/admin/").content.decode()
    assert f'href="{CONSOLE}"' in index and "Queued mail" in index
    listed = viewer.get(f"{CONSOLE}state/scheduled/")
    assert ids_on(listed) == [mid]
    assert 'name="ids"' not in listed.content.decode()  # no checkboxes, no buttons
    assert "Pause delivery" not in viewer.get(CONSOLE).content.decode()
    assert viewer.post(ACT, {"action": "send_now", "ids": [mid]}).status_code == 403
    assert viewer.post(ACT, {"action": "pause"}).status_code == 403
    assert state_of(store, mid) is State.SCHEDULED


def test_change_permission_acts(changer, store):
    mid = queue(store, "a@example.com", due_in=600)
    page = changer.get(f"{CONSOLE}state/scheduled/").content.decode()
    assert f'name="ids" value="{mid}"' in page and 'value="send_now"' in page
    assert "1 sent now" in text(act(changer, "send_now", mid))
    assert state_of(store, mid) is State.READY


def test_actions_need_a_csrf_token(users, store):
    mid = queue(store, "a@example.com", due_in=600)
    strict = client(users, "changer", enforce_csrf_checks=True)
    assert strict.post(ACT, {"action": "send_now", "ids": [mid]}).status_code == 403
    assert state_of(store, mid) is State.SCHEDULED
    strict.get(f"{CONSOLE}state/scheduled/")  # a page with a form sets the token
    token = strict.cookies["csrftoken"].value
    answer = strict.post(ACT, {"action": "send_now", "ids": [mid], "csrfmiddlewaretoken": token})
    assert answer.status_code == 302
    assert state_of(store, mid) is State.READY


def test_actions_are_posts_only(changer, conf):
    response = changer.get(ACT)
    assert response.status_code == 405 and response["Allow"] == "POST"


# -- the overview -------------------------------------------------------------------------------


def test_overview_counts_each_state(viewer, store):
    states(store)
    queue(store, "old@example.com", ago=7200)
    page = viewer.get(CONSOLE)
    assert page.status_code == 200
    counts = dict(
        re.findall(
            r'<tr data-state="([a-z ]+)">.*?<td class="mq-num">(\d+)</td>',
            page.content.decode(),
            re.S,
        )
    )
    assert counts == {
        "ready": "2",
        "scheduled": "1",
        "in flight": "1",
        "stuck": "1",
        "dead": "1",
        "lost": "0",
    }
    shown = text(page)
    assert "next due in 10m" in shown or "next due in 9m" in shown
    assert '<td class="mq-num">2h</td>' in page.content.decode()  # the oldest ready
    assert "held past their lease: is a flusher running?" in shown
    assert "Store MemoryStore, namespace default, at memory://" in shown
    assert "Delivery is paused" not in shown


def test_overview_shows_the_fallback_store(changer, conf):
    fallback = f"memory://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={**conf, "FALLBACK_STORE": fallback}):
        queue(get_store(fallback, "default"), "a@example.com")
        shown = text(changer.get(CONSOLE))
    assert "Fallback store" in shown
    assert "1 ready, 0 scheduled, 0 dead." in shown and "the next flush moves it back" in shown


@pytest.mark.parametrize("fallback", ["sqlite:///{tmp}/no-such-dir/fallback.db", "nosuch://x"])
def test_overview_says_when_the_fallback_store_cannot_be_read(changer, conf, tmp_path, fallback):
    with override_settings(MAILQUEUE={**conf, "FALLBACK_STORE": fallback.format(tmp=tmp_path)}):
        page = changer.get(CONSOLE)
    assert page.status_code == 200
    assert "The fallback store cannot be read: " in text(page)


def test_pause_and_resume(changer, store):
    page = text(act(changer, "pause"))
    assert "Delivery paused: flushers send nothing until you resume it" in page
    assert "Delivery is paused." in page and store.paused()
    for url in (f"{CONSOLE}state/ready/", CONSOLE):  # the banner is on every page
        assert 'id="mq-paused"' in changer.get(url).content.decode()
    page = text(act(changer, "resume"))
    assert "Delivery resumed: the next flush delivers what is due" in page
    assert "Delivery is paused." not in page and not store.paused()


def sent(store: Store, *to: str, ago: float = 60, **fields: object) -> SentRecord:
    """A sent log record of mail delivered ``ago`` seconds ago to ``to``."""
    now = time.time()
    logged = SentRecord(
        id=uuid.uuid4().hex,
        sent=now - ago,
        recipients=to,
        subject=str(fields.pop("subject", "Receipt")),
        message_id=f"<{uuid.uuid4().hex}@shop.example.com>",
        transport="smtp",
        **fields,  # type: ignore[arg-type]
    )
    store.log_sent([logged], now + 86400)
    return logged


def test_overview_counts_mail_sent_in_the_last_day(viewer, store, conf):
    for hours in (1, 5, 23):
        sent(store, "ann@example.com", ago=hours * 3600)
    sent(store, "old@example.com", ago=25 * 3600)
    with override_settings(MAILQUEUE={**conf, "SENT_LOG": SENT_LOG}):
        page = viewer.get(CONSOLE)
    row = page.content.decode().split('id="mq-sent-recently"')[1].split("</tr>")[0]
    assert f'<a href="{SENT}">Sent</a>' in row and '<td class="mq-num">3</td>' in row
    assert "in the last 24 h" in row


def test_overview_says_the_sent_log_is_off(viewer, store):
    sent(store, "ann@example.com")
    row = viewer.get(CONSOLE).content.decode().split('id="mq-sent-recently"')[1].split("</tr>")[0]
    assert '<td class="mq-num">&ndash;</td>' in row
    assert "The sent log is off: MAILQUEUE[&#x27;SENT_LOG&#x27;] is not set" in row


def test_overview_says_a_store_keeps_no_sent_log_or_heartbeats(viewer, blind):
    with override_settings(MAILQUEUE={**settings.MAILQUEUE, "SENT_LOG": SENT_LOG}):
        shown = text(viewer.get(CONSOLE))
    assert "This store (Blind) keeps no sent log: it lacks the 'sent_log' capability" in shown
    assert "This store (Blind) keeps no heartbeats: it lacks the 'heartbeat' capability" in shown
    assert "No flusher seen" not in shown


def test_overview_names_the_flushers_newest_first(viewer, store):
    now = time.time()
    store.beat("web2", now - 180, now + 86400)
    store.beat("web1", now - 12, now + 86400)
    store.beat("evil\x1b[2J", now - 240, now + 86400)
    page = viewer.get(CONSOLE)
    flushers = re.findall(r"<li><strong>(.*?)</strong> &mdash; (.*?)</li>", page.content.decode())
    assert flushers == [("web1", "12s ago"), ("web2", "3m ago"), ("evil\\x1b[2J", "4m ago")]
    assert 'id="mq-no-flusher"' not in page.content.decode()


def test_overview_names_ten_flushers_and_counts_the_rest(viewer, store):
    now = time.time()
    for i in range(12):
        store.beat(f"web{i:02}", now - i, now + 86400)
    page = viewer.get(CONSOLE).content.decode()
    assert page.count("&mdash;") == 10 and "(+2 more)" in page


@pytest.mark.parametrize(
    ("last", "warning"),
    [(None, "No flusher seen in the last day."), (1500, "No flusher seen for 25m.")],
)
def test_overview_warns_when_no_flusher_was_seen_lately(viewer, store, last, warning):
    now = time.time()
    if last is not None:
        store.beat("web1", now - last, now + 86400)
    page = viewer.get(CONSOLE).content.decode()
    assert f'<p class="mq-warning" id="mq-no-flusher"><strong>{warning}</strong>' in page
    assert ("web1</strong> &mdash; 25m ago" in page) is (last is not None)


STAGING = {"ALLOWED_DOMAINS": ["example.com"], "REDIRECT_TO": ["qa@example.com"]}


def test_staging_is_a_banner_on_every_console_page(changer, store, conf, unused_tcp_port):
    mid = queue(store, "a@example.com")
    line = "STAGING: mail to domains other than example.com is redirected to qa@example.com"
    with override_settings(MAILQUEUE={**conf, "STAGING": STAGING}):
        for url in (CONSOLE, f"{CONSOLE}state/ready/", SENT, f"{CONSOLE}message/{mid}/"):
            banner = re.search(
                r'id="mq-staging"><strong>(.*?)</strong>', changer.get(url).content.decode()
            )
            assert banner and banner.group(1) == line, url
        assert 'id="mq-staging"' in ask(changer, "delete", mid).content.decode()
    down = f"redis://127.0.0.1:{unused_tcp_port}/0?socket_timeout=0.5"
    with override_settings(MAILQUEUE={"STORE": down, "STAGING": STAGING}):
        page = changer.get(CONSOLE)  # the store is down; the setting is read
    assert page.status_code == 503 and line in text(page)
    assert 'id="mq-staging"' not in changer.get(CONSOLE).content.decode()
    with override_settings(MAILQUEUE={**conf, "STAGING": {"OTHERS": "drop"}}):
        page = changer.get(CONSOLE)  # a bad STAGING: the page says the setting is wrong
    assert page.status_code == 503 and 'id="mq-staging"' not in page.content.decode()


# -- the lists -----------------------------------------------------------------------------------


def test_each_state_lists_its_messages(viewer, store):
    ids = states(store)
    moments = {
        State.READY: "due now",
        State.SCHEDULED: "due in ",
        State.IN_FLIGHT: "lease ends in 5m",
        State.STUCK: "lease ran out 33m ago",
        State.DEAD: "buried 30s ago",
    }
    for state, mid in ids.items():
        page = viewer.get(f"{CONSOLE}state/{state.value}/")
        assert page.status_code == 200
        assert ids_on(page) == [mid], state
        assert moments[state] in text(page), state
    assert "550 5.1.1 no such user" in text(viewer.get(f"{CONSOLE}state/dead/"))
    assert viewer.get(f"{CONSOLE}state/sent/").status_code == 404


def test_lists_offer_the_buttons_their_state_allows(changer, store):
    states(store)

    def buttons(state: State) -> list[str]:
        page = changer.get(f"{CONSOLE}state/{state.value}/").content.decode()
        form = page.split('id="mq-selected"', 1)[-1] if 'id="mq-selected"' in page else ""
        return re.findall(r'name="action" value="([a-z_]+)"', form.split("</form>")[0])

    assert buttons(State.READY) == ["delete"]
    assert buttons(State.SCHEDULED) == ["send_now", "delete"]
    assert buttons(State.IN_FLIGHT) == []
    assert buttons(State.STUCK) == ["delete"]
    assert buttons(State.DEAD) == ["retry", "delete"]


def test_lists_page_with_a_cursor(viewer, store, monkeypatch):
    monkeypatch.setattr(console_admin(), "list_per_page", 2)
    ids = [queue(store, f"r{i}@example.com", ago=100 - i) for i in range(5)]
    url = f"{CONSOLE}state/ready/"
    assert every_page(viewer, url) == ids
    newest = viewer.get(url, {"order": "newest"})
    assert ids_on(newest) == ids[::-1][:2]
    assert "order=newest" in html.unescape(newest.content.decode()).split('id="mq-next"')[0]


def test_a_stale_cursor_gives_the_first_page(viewer, store):
    mid = queue(store, "a@example.com")
    page = viewer.get(f"{CONSOLE}state/ready/", {"cursor": "junk"})
    assert page.status_code == 200 and ids_on(page) == [mid]
    assert "That page link is out of date" in text(page)
    page = viewer.get(f"{CONSOLE}state/ready/", {"cursor": "junk", "q": "a@"})
    assert ids_on(page) == [mid]


def test_a_search_budget_below_one_is_a_bug_said_loudly(viewer, store, monkeypatch):
    monkeypatch.setattr(console_admin(), "search_budget", 0)
    for url in (f"{CONSOLE}state/ready/", SENT):
        with pytest.raises(ValueError, match="at least 1"):
            viewer.get(url, {"q": "x"})


def test_search_by_recipient_subject_and_message_id(viewer, store):
    mail = record("ann@example.com", created=time.time() - 30, subject="Invoice 42")
    store.enqueue([mail])
    queue(store, "bob@example.com", subject="Hello")
    message_id = codec.decode(mail).message_id
    assert message_id
    for needle in ("ANN@", "invoice 4", message_id.strip("<>")):
        page = viewer.get(f"{CONSOLE}state/ready/", {"q": needle})
        assert ids_on(page) == [mail.id], needle
        assert "1 found among 2 messages read." in text(page)
    markup = viewer.get(f"{CONSOLE}state/ready/", {"q": "<script>alert(1)</script>"})
    assert "<script>alert(1)" not in markup.content.decode()
    assert "No ready message matches “<script>alert(1)</script>”" in html.unescape(
        markup.content.decode()
    )
    nothing = viewer.get(f"{CONSOLE}state/ready/", {"q": "carol"})
    assert ids_on(nothing) == [] and "No ready message matches “carol” among the 2 read" in text(
        nothing
    )


def test_a_search_says_when_its_budget_ran_out(viewer, store, monkeypatch):
    monkeypatch.setattr(console_admin(), "search_budget", 3)
    hay = [queue(store, f"hay{i}@example.com", ago=100 - i) for i in range(4)]
    needle = queue(store, "needle@example.com", ago=10)
    page = viewer.get(f"{CONSOLE}state/ready/", {"q": "needle"})
    assert ids_on(page) == [] and len(hay) == 4
    assert "Searched 3 messages and stopped there; continue." in text(page)
    found = re.search(r'<a href="([^"]+)" id="mq-continue">', page.content.decode())
    assert found and 'id="mq-next"' not in page.content.decode()
    rest = viewer.get(f"{CONSOLE}state/ready/" + html.unescape(found.group(1)))
    assert ids_on(rest) == [needle]
    assert "1 found among 2 messages read." in text(rest)


# -- the sent log --------------------------------------------------------------------------------


@pytest.fixture
def logging_conf(conf) -> Iterator[dict[str, object]]:
    """The test's memory store with SENT_LOG on."""
    with override_settings(MAILQUEUE={**conf, "SENT_LOG": SENT_LOG}):
        yield conf


def test_the_sent_tab_lists_the_log_newest_first(viewer, store, logging_conf):
    older = sent(store, "ann@example.com", ago=3600, subject="Your order #1042")
    newer = sent(
        store,
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "erin@example.com",
        ago=12,
        subject="Hi <b>there</b> \x1b[31m",
        provider_id="prov-77",
        attempts=3,
    )
    page = viewer.get(SENT)
    assert page.status_code == 200 and ids_on(page) == [newer.id, older.id]
    source = page.content.decode()
    assert '<li class="mq-active"><a href="' + SENT + '">Sent</a></li>' in source
    cells = [
        text_of(cell)
        for cell in re.findall(
            r"<td[^>]*>(.*?)</td>", source.split(f'data-id="{newer.id}"')[1], re.S
        )[:7]
    ]
    assert cells[0].endswith("12s ago") and re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[0]
    )
    assert cells[1:] == [
        "bob@example.com, carol@example.com, dave@example.com (+1 more)",
        "Hi <b>there</b> \\x1b[31m",
        newer.message_id,
        "smtp",
        "prov-77",
        "3",
    ]
    assert "<b>there" not in source and "\x1b" not in source
    older_cells = re.findall(
        r"<td[^>]*>(.*?)</td>", source.split(f'data-id="{older.id}"')[1], re.S
    )
    assert [text_of(cell) for cell in older_cells[4:7]] == ["smtp", "-", "1"]
    assert 'id="mq-sent-log-off"' not in source


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", " ", fragment)).strip().replace("  ", " ")


def test_the_sent_tab_pages_with_the_logs_cursor(viewer, store, logging_conf, monkeypatch):
    monkeypatch.setattr(console_admin(), "list_per_page", 2)
    logged = [sent(store, f"r{i}@example.com", ago=100 - i) for i in range(5)]
    assert every_page(viewer, SENT) == [r.id for r in reversed(logged)]


def test_the_sent_tab_searches_recipients_message_ids_and_provider_ids(
    viewer, store, logging_conf
):
    ann = sent(store, "ann@example.com", provider_id="mg-0042", ago=30)
    sent(store, "bob@example.com", provider_id="mg-0043", ago=20)
    assert ann.message_id
    for needle in ("ANN@", ann.message_id.strip("<>"), "mg-0042"):
        page = viewer.get(SENT, {"q": needle})
        assert ids_on(page) == [ann.id], needle
        assert "1 found among 2 logged messages read." in text(page)
    nothing = viewer.get(SENT, {"q": "<script>carol"})
    assert ids_on(nothing) == [] and "<script>carol" not in nothing.content.decode()
    assert "No sent message matches “<script>carol” among the 2 read." in text(nothing)


def test_a_sent_search_says_when_its_budget_ran_out(viewer, store, logging_conf, monkeypatch):
    monkeypatch.setattr(console_admin(), "search_budget", 3)
    needle = sent(store, "needle@example.com", ago=100)
    for i in range(4):
        sent(store, f"hay{i}@example.com", ago=10 + i)
    page = viewer.get(SENT, {"q": "needle"})
    assert ids_on(page) == []
    assert "Searched 3 logged messages and stopped there; continue." in text(page)
    found = re.search(r'<a href="([^"]+)" id="mq-continue">', page.content.decode())
    assert found and 'id="mq-next"' not in page.content.decode()
    rest = viewer.get(SENT + html.unescape(found.group(1)))
    assert ids_on(rest) == [needle.id] and "1 found among 2 logged messages read." in text(rest)


def test_a_stale_sent_cursor_gives_the_first_page(viewer, store, logging_conf):
    logged = sent(store, "a@example.com")
    for query in ({}, {"q": "a@"}):
        page = viewer.get(SENT, {"cursor": "junk", **query})
        assert page.status_code == 200 and ids_on(page) == [logged.id]
        assert "That page link is out of date" in text(page)


def test_the_sent_tab_says_when_the_log_is_off(viewer, store):
    empty = viewer.get(SENT)
    assert "The sent log is off: MAILQUEUE['SENT_LOG'] is not set" in text(empty)
    assert "No sent mail logged." in text(empty)
    logged = sent(store, "a@example.com")  # logged while it was on: still there until pruned
    assert ids_on(viewer.get(SENT)) == [logged.id]


def test_the_sent_tab_of_a_store_that_keeps_no_log(changer, blind):
    for sent_log in (None, SENT_LOG):
        with override_settings(MAILQUEUE={**settings.MAILQUEUE, "SENT_LOG": sent_log}):
            page = changer.get(SENT)
        assert page.status_code == 200
        assert "This store (Blind) keeps no sent log" in text(page)
        assert 'name="q"' not in page.content.decode()
    # The tab is there (it says why it is empty), as the dead letters' one is.
    strip = page.content.decode().split('<ul class="mq-tabs">')[1].split("</ul>")[0]
    tabs = re.findall(r'<a href="([^"]+)">', strip)
    assert tabs == [CONSOLE, f"{CONSOLE}state/dead/", SENT]


def test_the_sent_tab_needs_the_view_permission(users, logging_conf):
    assert client(users, "nobody").get(SENT).status_code == 403
    assert Client().get(SENT).status_code == 302


# -- one message ---------------------------------------------------------------------------------


def _rich(store: Store) -> str:
    mail = EmailMultiAlternatives(
        "Your order <b>42</b> \x1b[31m",
        "Thanks!\r\nSee you.\x07",
        "Shop <shop@example.com>",
        ["to@example.com"],
        bcc=["hidden@example.com"],
        headers={"X-Campaign": "<script>alert(1)</script>"},
    )
    mail.attach_alternative(
        "<p id='greeting'>Thanks</p><script>document.body.innerHTML='ran'</script>", "text/html"
    )
    mail.attach("report.pdf", b"%PDF-1.4 hello", "application/pdf")
    queued = capture(mail)
    store.enqueue([dataclasses.replace(codec.to_record(queued), created=time.time() - 90)])
    return queued.id


def test_a_message_shows_envelope_headers_attachments_and_bodies(viewer, store):
    mid = _rich(store)
    page = viewer.get(f"{CONSOLE}message/{mid}/")
    assert page.status_code == 200
    source = page.content.decode()
    shown = text(page)
    for part in (
        "to@example.com, hidden@example.com",  # the envelope: Bcc included
        "shop@example.com",
        "Your order <b>42</b> \\x1b[31m",  # markup escaped, control characters written out
        "X-Campaign",
        "report.pdf",
        "application/pdf",
        "14\xa0bytes",
        "Thanks!\nSee you.\\x07",
    ):
        assert part in shown, part
    assert "<b>42</b>" not in source and "<script>alert(1)</script>" not in source
    assert "\x1b" not in source and "\x07" not in source
    # The HTML body is only in the sandboxed frame (and as escaped source).
    frame = re.search(r"<iframe [^>]*>", source)
    assert frame
    assert ' sandbox="" ' in frame.group(0)
    assert f'src="{CONSOLE}message/{mid}/preview/"' in frame.group(0)
    assert "<script>document.body" not in source


def test_the_preview_forbids_scripts_and_remote_loads(viewer, store):
    mid = _rich(store)
    response = viewer.get(f"{CONSOLE}message/{mid}/preview/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == PREVIEW_POLICY
    policy = dict(p.strip().partition(" ")[::2] for p in PREVIEW_POLICY.split(";"))
    assert policy["default-src"] == "'none'" and policy["img-src"] == "data:"
    assert "script-src" not in policy and "sandbox" in policy
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response["Referrer-Policy"] == "no-referrer"
    assert b"<p id='greeting'>Thanks</p>" in response.content


@pytest.mark.skipif(django.VERSION < (6, 0), reason="Django's own CSP middleware came in 6.0")
def test_a_site_wide_policy_leaves_the_preview_its_own(viewer, store):
    from django.utils.csp import CSP

    mid = _rich(store)
    middleware = [*MIDDLEWARE, "django.middleware.csp.ContentSecurityPolicyMiddleware"]
    # What the docs tell a site with a strict policy to allow: frames from itself.
    site = {"default-src": [CSP.NONE], "style-src": [CSP.SELF], "frame-src": [CSP.SELF]}
    with override_settings(MIDDLEWARE=middleware, SECURE_CSP=site):
        page = viewer.get(f"{CONSOLE}message/{mid}/")
        preview = viewer.get(f"{CONSOLE}message/{mid}/preview/")
    assert page["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'self'; frame-src 'self'"
    )
    assert preview["Content-Security-Policy"] == PREVIEW_POLICY


def test_a_message_without_html_has_no_preview(viewer, store):
    mid = queue(store, "a@example.com")
    assert "<iframe" not in viewer.get(f"{CONSOLE}message/{mid}/").content.decode()
    response = viewer.get(f"{CONSOLE}message/{mid}/preview/")
    assert response.status_code == 404
    assert response["Content-Security-Policy"] == PREVIEW_POLICY
    assert viewer.get(f"{CONSOLE}message/nope/preview/").status_code == 404


def test_a_message_that_is_gone_says_so(viewer, conf):
    page = viewer.get(f"{CONSOLE}message/gone_2Fbye/")
    assert page.status_code == 404
    assert "There is no message gone/bye in the queue" in text(page)


def test_a_message_page_offers_what_its_state_allows(changer, store):
    ids = states(store)

    def buttons(state: State) -> list[str]:
        page = changer.get(f"{CONSOLE}message/{ids[state]}/").content.decode()
        return re.findall(r'name="action" value="([a-z_]+)"', page.split("mq-fields")[0])

    assert buttons(State.SCHEDULED) == ["send_now", "delete"]
    assert buttons(State.DEAD) == ["retry", "delete"]
    assert buttons(State.READY) == ["delete"]
    assert buttons(State.IN_FLIGHT) == []
    source = changer.get(f"{CONSOLE}message/{ids[State.DEAD]}/").content.decode()
    crumbs = source.split('class="breadcrumbs"')[1].split("</ol>")[0].split("</div>")[0]
    assert f'<a href="{CONSOLE}">Queued mail</a>' in crumbs  # the console, then its list
    assert (
        f'<a href="{CONSOLE}state/dead/">Dead letters</a>' in crumbs and ids[State.DEAD] in crumbs
    )
    page = text(changer.get(f"{CONSOLE}message/{ids[State.DEAD]}/"))
    assert "550 5.1.1 no such user" in page and "Buried" in page
    assert "Lease" in text(changer.get(f"{CONSOLE}message/{ids[State.IN_FLIGHT]}/"))


def test_undecodable_and_lost_records_are_listed_not_raised(viewer, store):
    now = time.time()
    store.enqueue([Record("bad", b"not json", now - 5, now - 5)])
    page = viewer.get(f"{CONSOLE}state/ready/")
    assert ids_on(page) == ["bad"] and "damaged" in text(page)
    shown = text(viewer.get(f"{CONSOLE}message/bad/"))
    assert "Damage" in shown and "cannot be decoded" in shown


# -- the actions ---------------------------------------------------------------------------------


def test_send_now_says_what_it_did_and_left_alone(changer, store):
    ids = states(store)
    later = queue(store, "later2@example.com", due_in=600)
    page = text(act(changer, "send_now", *ids.values(), later, "unknown"))
    assert (
        "3 sent now; 1 was already due; 1 was stuck (held past its lease by a flusher that "
        "stopped) and was left alone: the next flush takes it back; 1 was in flight and was "
        "left alone (a flusher holds it and may be sending it now); 1 is no longer in the queue"
    ) in page
    assert state_of(store, ids[State.SCHEDULED]) is State.READY
    assert state_of(store, later) is State.READY
    assert state_of(store, ids[State.DEAD]) is State.READY  # a dead letter is revived
    assert state_of(store, ids[State.IN_FLIGHT]) is State.IN_FLIGHT


def test_send_now_of_two_and_one_in_flight(changer, store):
    ids = states(store)
    later = queue(store, "later2@example.com", due_in=600)
    later2 = queue(store, "later3@example.com", due_in=600)
    answer = act(changer, "send_now", ids[State.SCHEDULED], later, ids[State.IN_FLIGHT])
    page = answer.content.decode()  # a warning: something was left alone
    assert '<li class="warning">2 sent now; 1 was in flight and was left alone' in page
    assert (
        '<li class="success">1 sent now</li>' in act(changer, "send_now", later2).content.decode()
    )


def test_delete_keeps_what_is_in_flight(changer, store):
    ids = states(store)
    page = confirm(changer, "delete", *ids.values())
    assert page.redirect_chain[-1][0] == CONSOLE  # no page to go back to: the overview
    assert "4 deleted; 1 was in flight and was left alone" in text(page)
    assert [state_of(store, mid) for mid in ids.values()] == [None, State.IN_FLIGHT] + [None] * 3


def test_delete_from_a_message_page_asks_then_goes_back_to_its_list(changer, store):
    mid = queue(store, "a@example.com", subject="Receipt")
    here = f"{CONSOLE}message/{mid}/"
    source = changer.get(here).content.decode()
    form = source.split('id="mq-delete"')[0].rsplit("<form", 1)[1]
    fields = dict(re.findall(r'name="(next|cancel|ids)" value="([^"]*)"', form))
    assert fields == {"ids": mid, "next": f"{CONSOLE}state/ready/", "cancel": here}
    asked = ask(changer, "delete", mid, next=fields["next"], cancel=here)
    assert "Delete 1 message? Deleted mail is not sent" in text(asked)
    assert ids_on(asked) == [mid] and "Receipt" in text(asked)
    assert f'<a href="{here}" class="button cancel-link" id="mq-no">' in asked.content.decode()
    assert state_of(store, mid) is State.READY  # asking does nothing
    page = changer.post(ACT, form_of(asked), follow=True)
    assert page.redirect_chain[-1][0] == fields["next"] and "1 deleted" in text(page)
    assert state_of(store, mid) is None


def test_retry_revives_only_dead_letters(changer, store):
    ids = states(store)
    here = f"{CONSOLE}state/dead/"
    page = act(changer, "retry", ids[State.DEAD], ids[State.READY], next=here)
    assert page.redirect_chain[-1][0] == here
    assert "1 dead letter retried (due now); 1 was not a dead letter and was left alone" in text(
        page
    )
    assert state_of(store, ids[State.DEAD]) is State.READY


def test_retry_all_and_purge(changer, store):
    now = time.time()
    recent = queue(store, "recent@example.com", ago=100)
    for i in range(2):
        queue(store, f"old{i}@example.com", ago=100)
    for claim in store.fetch_due(now, 3, 30):
        store.bury(claim, "550 no", now if claim.id == recent else now - 3 * 86400)
    assert "0 dead letters purged" in text(confirm(changer, "purge", older_than="30d"))
    assert "2 dead letters purged (buried more than 2d ago)" in text(
        confirm(changer, "purge", older_than="2d")
    )
    # No valid age: nothing to ask, the notice says what is wrong.
    assert "Nothing purged: 'soon' is not a duration" in text(
        act(changer, "purge", older_than="soon")
    )
    assert "1 dead letter retried (due now)" in text(confirm(changer, "retry_all"))
    assert store.stats(time.time()).dead == 0


def test_retry_of_dead_letters_only(changer, store):
    now = time.time()
    mid = queue(store, "a@example.com", ago=5 * 86400)
    (claim,) = store.fetch_due(now, 1, 30)
    store.bury(claim, "550 no", now - 4 * 86400)
    assert "buried 4d ago" in text(changer.get(f"{CONSOLE}state/dead/"))
    page = text(act(changer, "retry", mid))
    assert "1 dead letter retried (due now)" in page and "left alone" not in page


def test_a_bulk_delete_asks_first_and_says_what_it_would_leave(changer, store):
    ids = states(store)
    here = f"{CONSOLE}state/ready/?order=newest"
    asked = ask(changer, "delete", *ids.values(), "unknown", ids[State.READY], next=here)
    shown = text(asked)
    assert "Delete 4 messages? Deleted mail is not sent, and cannot be retried" in shown
    assert sorted(ids_on(asked)) == sorted(ids.values())
    assert "1 of them is in flight and will be left alone" in shown
    assert "No longer in the queue (delivered, deleted or purged since the page was drawn): " in (
        shown
    )
    assert "unknown" in shown
    source = asked.content.decode()
    assert 'class="mq-confirm delete-confirmation"' in source  # the admin's red button
    assert f'<a href="{html.escape(here)}" class="button cancel-link" id="mq-no">' in source
    assert form_of(asked)["ids"] == [*ids.values(), "unknown"]  # each once
    assert form_of(asked)["next"] == [here] and form_of(asked)["confirmed"] == ["yes"]
    assert 'value="Yes, delete" id="mq-yes"' in source
    assert [state_of(store, mid) for mid in ids.values()].count(None) == 0  # nothing yet
    page = changer.post(ACT, form_of(asked), follow=True)
    assert page.redirect_chain[-1][0] == here
    assert "4 deleted; 1 was in flight and was left alone" in text(page)


def test_a_delete_of_what_only_is_in_flight_or_gone_offers_no_yes(changer, store):
    ids = states(store)
    asked = ask(changer, "delete", ids[State.IN_FLIGHT], "gone")
    assert "Delete 0 messages?" in text(asked) and 'id="mq-yes"' not in asked.content.decode()
    only_gone = ask(changer, "delete", "gone")
    assert 'id="mq-list"' not in only_gone.content.decode()


def test_retry_every_dead_letter_asks_first(changer, store):
    now = time.time()
    for i in range(2):
        queue(store, f"dead{i}@example.com", ago=100)
    for claim in store.fetch_due(now, 2, 30):
        store.bury(claim, "550 no", now)
    asked = ask(changer, "retry_all", next=f"{CONSOLE}state/dead/")
    assert "Retry every dead letter (2 now)? Each goes back to the queue, due now" in text(asked)
    assert "delete-confirmation" not in asked.content.decode()
    assert 'value="Yes, retry them all"' in asked.content.decode()
    assert store.stats(time.time()).dead == 2
    assert "2 dead letters retried" in text(changer.post(ACT, form_of(asked), follow=True))
    assert store.stats(time.time()).dead == 0


def test_purge_asks_first_and_names_the_cutoff(changer, store):
    asked = ask(changer, "purge", older_than=" 7d ")
    shown = text(asked)
    assert "Purge the dead letters buried more than 7d ago? They are deleted for good" in shown
    assert re.search(
        r"buried before \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; the store holds 0 dead letters", shown
    )
    assert form_of(asked)["older_than"] == [" 7d "]
    assert "0 dead letters purged (buried more than 7d ago)" in text(
        changer.post(ACT, form_of(asked), follow=True)
    )


def test_a_confirmation_page_needs_the_change_permission(viewer, store):
    mid = queue(store, "a@example.com")
    for action in ("delete", "retry_all", "purge"):
        data = {"action": action, "ids": [mid], "older_than": "7d"}
        assert viewer.post(ACT, data).status_code == 403
    assert state_of(store, mid) is State.READY


def test_a_confirmation_page_when_the_store_is_down(changer, unused_tcp_port):
    with override_settings(MAILQUEUE={"STORE": f"redis://127.0.0.1:{unused_tcp_port}/0"}):
        page = changer.post(ACT, {"action": "retry_all"})
    assert page.status_code == 503 and "The queue store cannot be reached" in text(page)


def test_a_button_without_a_selection_or_an_action(changer, store):
    assert "No message was selected: tick one or more first." in text(act(changer, "delete"))
    assert "That is not one of the console's actions" in text(act(changer, "explode"))


def test_next_must_be_on_this_site(changer, store):
    page = act(changer, "pause", next="https://evil.example.com/")
    assert page.redirect_chain[-1][0] == CONSOLE


class Racing(MemoryStore):
    """A flusher claims every message between the console's look and its action."""

    def send_now(self, ids: Iterable[str], now: float) -> int:
        self.fetch_due(now + 10_000, 100, 30)
        return super().send_now(ids, now)

    def delete(self, ids: Iterable[str], now: float) -> int:
        self.fetch_due(now + 10_000, 100, 30)
        return super().delete(ids, now)


def test_a_message_claimed_meanwhile_is_left_and_said(changer, tmp_path, monkeypatch):
    install_stores(tmp_path, monkeypatch, racing=Racing)
    spec = f"racing://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": spec}):
        store = get_store(spec, "default")
        later = queue(store, "a@example.com", due_in=60)
        page = text(act(changer, "send_now", later))
        assert "0 sent now; 1 changed meanwhile and was left alone" in page
        page = text(confirm(changer, "delete", queue(store, "b@example.com")))
        assert "0 deleted; 1 changed meanwhile and was left alone" in page


# -- what a store cannot do ----------------------------------------------------------------------


class Blind(MemoryStore):
    """A store that lists nothing and keeps no pause flag, heartbeats or sent log (as
    memcached)."""

    capabilities = MemoryStore.capabilities - {
        Capability.BROWSE,
        Capability.PAUSE,
        Capability.HEARTBEAT,
        Capability.SENT_LOG,
    }

    def stats(self, now: float) -> Stats:
        return dataclasses.replace(super().stats(now), next_due=None)  # optional: not told


@pytest.fixture
def blind(tmp_path, monkeypatch) -> Iterator[Store]:
    install_stores(tmp_path, monkeypatch, blind=Blind)
    spec = f"blind://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": spec}):
        yield get_store(spec, "default")


def test_a_store_that_cannot_browse_or_pause_says_so(changer, blind):
    mid = queue(blind, "a@example.com")
    queue(blind, "later@example.com", due_in=600)
    overview = changer.get(CONSOLE)
    assert overview.status_code == 200
    shown = text(overview)
    assert "next due: this store does not tell" in shown
    assert "This store (Blind) cannot list its messages: it lacks the 'browse' capability" in shown
    assert "This store (Blind) cannot pause delivery: it lacks the 'pause' capability" in shown
    assert "Pause delivery" not in shown and f'href="{CONSOLE}state/ready/"' not in shown
    listed = changer.get(f"{CONSOLE}state/ready/")
    assert listed.status_code == 200 and ids_on(listed) == []
    assert "cannot list its messages" in text(listed) and 'name="q"' not in text(listed)
    page = changer.get(f"{CONSOLE}message/{mid}/")
    assert page.status_code == 200 and "cannot list its messages" in text(page)
    preview = changer.get(f"{CONSOLE}message/{mid}/preview/")
    assert preview.status_code == 404 and b"cannot list its messages" in preview.content
    assert "cannot list its messages" in text(act(changer, "send_now", mid))
    asked = ask(changer, "delete", mid)
    assert (
        "cannot list its messages" in text(asked) and 'id="mq-yes"' not in asked.content.decode()
    )
    assert "cannot list its messages" in text(act(changer, "delete", mid, confirmed="yes"))
    assert "cannot pause delivery" in text(act(changer, "pause"))
    assert state_of(MemoryStore(blind.location), mid) is State.READY and not blind.paused()


def test_a_store_that_cannot_browse_still_lists_and_retries_dead_letters(changer, blind):
    queue(blind, "a@example.com")
    now = time.time()
    (claim,) = blind.fetch_due(now, 1, 30)
    blind.bury(claim, "550 no such user", now)
    page = changer.get(f"{CONSOLE}state/dead/")
    assert ids_on(page) == [claim.id] and "550 no such user" in text(page)
    assert "this store cannot page through them" in text(page)
    assert f'href="{CONSOLE}message/' not in page.content.decode()
    shown = text(act(changer, "retry", claim.id, "unknown"))
    assert "1 dead letter retried (due now); 1 was no longer a dead letter" in shown
    assert blind.stats(time.time()).ready == 1


def test_memcached_gets_counts_and_an_honest_message(changer, memcached_server):
    spec = f"{memcached_server.url}?namespace={uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": spec}):
        page = changer.get(CONSOLE)
    assert page.status_code == 200
    assert "This store (MemcachedStore) cannot list its messages" in text(page)


class Lost(MemoryStore):
    """A store that lost one message and still lists it (as memcached does)."""

    def _lost(self, now: float) -> Entry:
        gone = Record("gone", b"", now - 100, now - 100, attempts=2)
        return Entry(gone, State.DEAD, buried=now - 50, reason="evicted", lost=True)

    def browse(self, state: State, now: float, **kwargs: object) -> Page:
        return Page([self._lost(now)] if state is State.DEAD else [])

    def get(self, record_id: str, now: float) -> Entry | None:
        return self._lost(now) if record_id == "gone" else None


def test_a_lost_message_is_listed_and_shown_as_lost(viewer, tmp_path, monkeypatch):
    install_stores(tmp_path, monkeypatch, lost=Lost)
    with override_settings(MAILQUEUE={"STORE": f"lost://{uuid.uuid4().hex}"}):
        page = viewer.get(f"{CONSOLE}state/dead/")
        assert ids_on(page) == ["gone"] and "lost" in text(page) and "evicted" in text(page)
        shown = text(viewer.get(f"{CONSOLE}message/gone/"))
    assert "lost by the store" in shown


# -- a store that cannot be reached -------------------------------------------------------------


def test_an_unreachable_store_is_a_page_that_says_so(changer, tmp_path, unused_tcp_port):
    spec = f"redis://:s3cret-pw@127.0.0.1:{unused_tcp_port}/0?socket_timeout=0.5"
    with override_settings(MAILQUEUE={"STORE": spec}):
        for url in (CONSOLE, f"{CONSOLE}state/ready/", f"{CONSOLE}message/abc/"):
            page = changer.get(url)
            assert page.status_code == 503, url
            assert "s3cret" not in page.content.decode()
            shown = text(page)
            assert "The queue store cannot be reached" in shown and "RedisStore" in shown
            assert f"redis://:***@127.0.0.1:{unused_tcp_port}/0" in shown
        preview = changer.get(f"{CONSOLE}message/abc/preview/")
        assert preview.status_code == 503 and b"s3cret" not in preview.content
        acted = act(changer, "pause")
        assert "Nothing was done: the queue store cannot be reached" in text(acted)
        assert "s3cret" not in acted.content.decode()


def test_a_missing_sqlite_queue_is_not_created(changer, tmp_path):
    path = tmp_path / "queue.db"
    with override_settings(MAILQUEUE={"STORE": f"sqlite:///{path}"}):
        page = changer.get(CONSOLE)
    assert page.status_code == 503 and "The queue store cannot be reached" in text(page)
    assert not path.exists()


def test_a_bad_setting_is_a_page_that_says_so(changer, conf):
    with override_settings(MAILQUEUE={"STORE": "nosuchstore://x"}):
        page = changer.get(CONSOLE)
        assert page.status_code == 503
        assert "The MAILQUEUE setting is wrong" in text(page) and "nosuchstore" in text(page)
        assert "Nothing was done: the mailqueue setting is wrong" in text(act(changer, "pause"))


def test_a_sqlite_store_end_to_end(changer, tmp_path):
    spec = f"sqlite:///{tmp_path}/queue.db"
    with override_settings(MAILQUEUE={"STORE": spec}):
        store = get_store(spec, "default")
        mid = queue(store, "a@example.com", due_in=600)
        assert ids_on(changer.get(f"{CONSOLE}state/scheduled/")) == [mid]
        assert "1 sent now" in text(act(changer, "send_now", mid))
        assert state_of(store, mid) is State.READY
        assert "Delivery paused" in text(act(changer, "pause")) and store.paused()
