"""The console's pages, served by the admin under its entry for queued mail.

Looking needs the ``view_queuedmail`` permission (or ``change_queuedmail``, as
everywhere in the admin); every button needs ``change_queuedmail`` and is a
POST to :meth:`Console.act`, CSRF-protected by the admin (``admin_view``).

A store that cannot be reached, or a bad ``MAILQUEUE`` setting, gives a page
that says so (status 503), never a server error; a store that lacks the
``browse`` or ``pause`` capability gives the page without what it cannot do,
and a sentence saying why. Nothing shows a store URL's password: locations and
error texts go through :func:`~mailqueue_core.locations.redact`.

Deleting (one message or many), purging dead letters and retrying every dead
letter ask first: the button's POST gives a page that says what would be done,
and only its "Yes, I'm sure" (a second POST, with ``confirmed=yes``) does it,
as the admin's own delete actions do. Send now, retry and pause act at once.

A message's HTML body is never put into an admin page: the page holds an
``<iframe sandbox="">`` (no scripts, an origin of its own) whose content comes
from :meth:`Console.preview`, served with a Content-Security-Policy that
forbids scripts and every remote load (:data:`PREVIEW_POLICY`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import django
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.clickjacking import xframe_options_sameorigin

from mailqueue_core.browsing import Summary, search, search_sent, summarize
from mailqueue_core.commands.arguments import parse_duration
from mailqueue_core.console import actions
from mailqueue_core.console.rows import Row, ago, row, sent_row, when
from mailqueue_core.console.stores import describe, lacking, opened
from mailqueue_core.django_settings import get_config
from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_core.locations import redact
from mailqueue_core.moments import relative, span
from mailqueue_core.store import Capability, Entry, State, Stats, Store
from mailqueue_core.text import get_logger, printable

__all__ = ["PREVIEW_POLICY", "Console"]

logger = get_logger("mailqueue.console")

#: The HTML preview's policy: no script, no remote load of any kind (images,
#: fonts, styles, frames, prefetches), inline styles and ``data:`` images only;
#: ``sandbox`` gives the document an origin of its own even when opened directly.
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'; sandbox"
)

TITLES = {
    State.READY: "Ready",
    State.SCHEDULED: "Scheduled",
    State.IN_FLIGHT: "In flight",
    State.STUCK: "Stuck",
    State.DEAD: "Dead letters",
}

MEANINGS = {
    State.READY: "Due now: the next flush sends them.",
    State.SCHEDULED: "Waiting for a later time: a retry's backoff, or a send time.",
    State.IN_FLIGHT: "Held by a flusher that may be sending them now: they cannot be touched.",
    State.STUCK: (
        "Held past their lease by a flusher that died or hung: the next flush takes them back."
    ),
    State.DEAD: "Will not be delivered unless someone retries them.",
}

#: The buttons a list offers, by state: (action, label).
BUTTONS: dict[State, tuple[tuple[str, str], ...]] = {
    State.READY: (("delete", "Delete"),),
    State.SCHEDULED: (("send_now", "Send now"), ("delete", "Delete")),
    State.IN_FLIGHT: (),
    State.STUCK: (("delete", "Delete"),),
    State.DEAD: (("retry", "Retry (send now)"), ("delete", "Delete")),
}

#: Actions that act on the selected messages (the rest act on the namespace).
_ON_SELECTED = {"send_now", "delete", "retry"}

#: Actions that cannot be undone, or act on every dead letter at once: they ask first.
CONFIRMED = {"delete", "retry_all", "purge"}

#: The sent tab's name among the states' tabs.
SENT = "sent"

#: What the overview counts as recent mail sent: the last day.
SENT_WINDOW = 86400.0

#: Seconds without a flusher's heartbeat after which the overview warns. A running
#: flusher beats every 10 s; one run from cron once a minute beats at each run.
QUIET = 600.0

#: How many flushers the overview names before "(+N more)".
SHOWN_FLUSHERS = 10

SENT_LOG_OFF = (
    "The sent log is off: MAILQUEUE['SENT_LOG'] is not set, so flushers keep no record of "
    'the mail they deliver. Set it (for example {"KEEP": "30d"}) to see here what was '
    "sent, to whom and when."
)

STALE_CURSOR = (
    "That page link is out of date (its cursor is not one this queue gave): "
    "here is the first page."
)


@dataclasses.dataclass(frozen=True)
class Listed:
    """A row of a list, with the link to its page (None: the store cannot open one)."""

    row: Row
    url: str | None


class _Trouble(Exception):
    """The store or the settings failed: the page says so instead of its content."""

    def __init__(self, title: str, detail: str, store: Store | None = None) -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.store = store


class Console:
    """The console's views for one ``ModelAdmin`` (its site, options and permissions)."""

    def __init__(self, model_admin: Any) -> None:
        self.model_admin = model_admin
        self.site = model_admin.admin_site
        self.opts = model_admin.model._meta

    # -- URLs ------------------------------------------------------------------------

    def name(self, page: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{page}"

    def url(self, page: str, *args: str) -> str:
        return reverse(
            f"{self.site.name}:{self.name(page)}", args=args, current_app=self.site.name
        )

    def urls(self) -> list[URLPattern]:
        wrap = self.site.admin_view
        return [
            # The admin's index links here: the overview is the model's changelist.
            path("", wrap(self.overview), name=self.name("changelist")),
            path("state/<str:state>/", wrap(self.listing), name=self.name("state")),
            path("sent/", wrap(self.sent), name=self.name("sent")),
            path(
                "message/<path:key>/preview/",
                wrap(xframe_options_sameorigin(self.preview)),
                name=self.name("preview"),
            ),
            path("message/<path:key>/", wrap(self.message), name=self.name("message")),
            path("act/", wrap(self.act), name=self.name("act")),
        ]

    # -- permissions, pages, trouble -------------------------------------------------

    def _may_view(self, request: HttpRequest) -> None:
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied

    def _crumbs(self, trail: Sequence[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        """The breadcrumbs: the admin's, the console's, then ``trail``; the last one is here."""
        crumbs = [
            ("Home", reverse(f"{self.site.name}:index", current_app=self.site.name)),
            (
                self.opts.app_config.verbose_name,
                reverse(
                    f"{self.site.name}:app_list",
                    kwargs={"app_label": self.opts.app_label},
                    current_app=self.site.name,
                ),
            ),
            (str(self.opts.verbose_name_plural).capitalize(), self.url("changelist")),
            *trail,
        ]
        crumbs[-1] = (crumbs[-1][0], None)
        return crumbs

    def _context(
        self,
        request: HttpRequest,
        title: str,
        trail: Sequence[tuple[str, str | None]] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            **self.site.each_context(request),
            "title": title,
            "crumbs": self._crumbs(trail),
            # Django 6.1 draws breadcrumbs as a list (<ol>), earlier releases as a line.
            "crumbs_as_list": django.VERSION >= (6, 1),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "can_change": self.model_admin.has_change_permission(request),
            "overview_url": self.url("changelist"),
            "act_url": self.url("act"),
            "tabs": [
                *(
                    {"state": state, "title": name, "url": self.url("state", state.value)}
                    for state, name in TITLES.items()
                ),
                {"state": SENT, "title": "Sent", "url": self.url("sent")},
            ],
            "staging": _staging(),
            **extra,
        }

    @contextlib.contextmanager
    def _store(self) -> Iterator[Store]:
        """The site's store, its failures turned into :class:`_Trouble`."""
        try:
            with opened() as store:
                assert store is not None  # STORE is required by the settings
                try:
                    yield store
                except StoreUnavailable as exc:
                    raise _Trouble(
                        "The queue store cannot be reached", redact(str(exc)), store
                    ) from exc
        except ConfigurationError as exc:
            raise _Trouble("The MAILQUEUE setting is wrong", redact(str(exc))) from exc

    def _render(
        self,
        request: HttpRequest,
        template: str,
        title: str,
        build: Callable[[Store], dict[str, Any]],
        status: Callable[[dict[str, Any]], int] = lambda context: 200,
        trail: Sequence[tuple[str, str | None]] = (),
    ) -> HttpResponse:
        """A page about the store: ``build`` gives its context (and may give its own
        breadcrumbs ``trail``); trouble gives a 503 page."""
        try:
            with self._store() as store:
                described = describe(store)
                extra = build(store)
                paused = store.paused()
        except _Trouble as trouble:
            context = self._context(
                request,
                title,
                trail,
                trouble=trouble,
                store=None if trouble.store is None else describe(trouble.store),
            )
            return TemplateResponse(request, "mailqueue/trouble.html", context, status=503)
        trail = extra.pop("trail", trail)
        context = self._context(request, title, trail, store=described, paused=paused, **extra)
        if not described.can_browse:  # only the dead letters can be listed (dead_letters())
            context["tabs"] = [
                tab for tab in context["tabs"] if tab["state"] in (State.DEAD, SENT)
            ]
        return TemplateResponse(request, template, context, status=status(context))

    # -- the overview ----------------------------------------------------------------

    def overview(self, request: HttpRequest) -> HttpResponse:
        self._may_view(request)

        def build(store: Store) -> dict[str, Any]:
            now = time.time()
            stats = store.stats(now)
            browse = Capability.BROWSE in store.capabilities
            return {
                "counts": self._counts(stats, now, browse),
                "oldest_ready": (
                    None if stats.oldest_ready_age is None else span(stats.oldest_ready_age)
                ),
                "fallback": self._fallback(now),
                "sent": self._sent_recently(store, now),
                "flushers": _flushers(store, now),
            }

        return self._render(request, "mailqueue/overview.html", "Mail queue", build)

    def _counts(self, stats: Stats, now: float, browse: bool) -> list[dict[str, Any]]:
        def link(state: State) -> str | None:
            return self.url("state", state.value) if browse or state is State.DEAD else None

        if not stats.scheduled:
            next_due = ""
        elif stats.next_due is None:
            next_due = "next due: this store does not tell"
        else:
            next_due = f"next due {relative(max(stats.next_due, now), now)}"
        return [
            {"title": "Ready", "count": stats.ready, "url": link(State.READY), "note": ""},
            {
                "title": "Scheduled",
                "count": stats.scheduled,
                "url": link(State.SCHEDULED),
                "note": next_due,
            },
            {"title": "In flight", "count": stats.in_flight, "url": link(State.IN_FLIGHT)},
            {
                "title": "Stuck",
                "count": stats.stuck,
                "url": link(State.STUCK),
                "note": "held past their lease: is a flusher running?" if stats.stuck else "",
            },
            {"title": "Dead", "count": stats.dead, "url": link(State.DEAD)},
            {
                "title": "Lost",
                "count": stats.lost,
                "url": link(State.DEAD) if stats.lost else None,
                "note": "lost by the store; listed among the dead letters" if stats.lost else "",
            },
        ]

    def _sent_recently(self, store: Store, now: float) -> dict[str, Any]:
        """How much was delivered in the last day, or why the console cannot say."""
        if Capability.SENT_LOG not in store.capabilities:
            return {"off": lacking(store, Capability.SENT_LOG)}
        if get_config().sent_log is None:
            return {"off": SENT_LOG_OFF, "url": self.url("sent")}
        return {"count": store.count_sent(now - SENT_WINDOW), "url": self.url("sent")}

    def _fallback(self, now: float) -> dict[str, Any] | None:
        """The fallback store's counts, or why there are none (None: not configured)."""
        try:
            with opened("FALLBACK_STORE") as fallback:
                if fallback is None:
                    return None
                described = describe(fallback)
                try:
                    return {"store": described, "stats": fallback.stats(now)}
                except StoreUnavailable as exc:
                    return {"store": described, "trouble": redact(str(exc))}
        except ConfigurationError as exc:  # FALLBACK_STORE names no store, or a bad one
            return {"trouble": redact(str(exc))}

    # -- the lists -------------------------------------------------------------------

    def listing(self, request: HttpRequest, state: str) -> HttpResponse:
        self._may_view(request)
        chosen = next((known for known in TITLES if known.value == state), None)
        if chosen is None:
            raise Http404(f"no list {state!r}")
        query = request.GET.get("q", "").strip()
        newest = request.GET.get("order") == "newest"
        cursor = request.GET.get("cursor") or None

        def build(store: Store) -> dict[str, Any]:
            context: dict[str, Any] = {
                "state": chosen,
                "meaning": MEANINGS[chosen],
                "query": query,
                "newest": newest,
                "order_urls": {
                    "oldest": self._query(q=query),
                    "newest": self._query(q=query, order="newest"),
                },
                "clear_url": self._query(order=newest and "newest"),
                "buttons": BUTTONS[chosen],
                "here": request.get_full_path(),
                "first_url": self._query(q=query, order=newest and "newest") if cursor else None,
                "listed": None,
                "examined": None,
            }
            if Capability.BROWSE not in store.capabilities:
                context["lacks_browse"] = lacking(store, Capability.BROWSE)
                if chosen is State.DEAD:
                    context.update(self._dead_letters(store))
                return context
            context.update(self._page(request, store, chosen, query, newest, cursor))
            return context

        title = TITLES[chosen]
        return self._render(request, "mailqueue/list.html", title, build, trail=[(title, None)])

    @staticmethod
    def _query(**params: str | bool | None) -> str:
        kept = {key: value for key, value in params.items() if value}
        return f"?{urlencode(kept)}" if kept else "?"

    def _listed(self, summaries: Iterable[Summary], now: float) -> list[Listed]:
        listed = []
        for summary in summaries:
            shown = row(summary, now)
            listed.append(Listed(shown, self.url("message", shown.key)))
        return listed

    def _page(
        self,
        request: HttpRequest,
        store: Store,
        state: State,
        query: str,
        newest: bool,
        cursor: str | None,
    ) -> dict[str, Any]:
        """One page of the state, or of a search in it; a stale cursor gives the first page."""
        limit = self.model_admin.list_per_page
        now = time.time()
        try:
            if not query:
                page = store.browse(state, now, limit=limit, cursor=cursor, newest_first=newest)
                return {
                    "listed": self._listed(map(summarize, page.entries), now),
                    "next_url": self._next(query, newest, page.cursor),
                }
            budget = self.model_admin.search_budget
            found = search(
                store,
                state,
                now,
                query,
                limit=limit,
                cursor=cursor,
                budget=budget,
                newest_first=newest,
            )
        except ValueError:
            if cursor is None:  # not a stale link: a bug, said loudly
                raise
            messages.warning(request, STALE_CURSOR)
            return self._page(request, store, state, query, newest, None)
        return {
            "listed": self._listed(found.matches, now),
            "next_url": self._next(query, newest, found.cursor),
            "examined": found.examined,
            "budget_spent": found.cursor is not None and len(found.matches) < limit,
        }

    def _next(self, query: str, newest: bool, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        return self._query(q=query, order=newest and "newest", cursor=cursor)

    def _dead_letters(self, store: Store) -> dict[str, Any]:
        """A store that cannot browse still lists dead letters (a contract method), unpaged."""
        now = time.time()
        limit = self.model_admin.list_per_page
        letters = store.dead_letters(limit=limit)
        entries = [
            Entry(
                letter.record,
                State.DEAD,
                buried=letter.buried,
                reason=letter.reason,
                lost=letter.lost,
            )
            for letter in letters
        ]
        return {
            "listed": [Listed(row(summarize(entry), now), None) for entry in entries],
            "unpaged": limit,
            "buttons": (("retry", "Retry (send now)"),),
        }

    # -- the sent log ----------------------------------------------------------------

    def sent(self, request: HttpRequest) -> HttpResponse:
        """The sent log, newest first, paged by its cursor, searchable."""
        self._may_view(request)
        query = request.GET.get("q", "").strip()
        cursor = request.GET.get("cursor") or None

        def build(store: Store) -> dict[str, Any]:
            context: dict[str, Any] = {
                "state": SENT,
                "query": query,
                "clear_url": self._query(),
                "first_url": self._query(q=query) if cursor else None,
                "records": None,
                "examined": None,
            }
            if Capability.SENT_LOG not in store.capabilities:
                context["lacks_sent_log"] = lacking(store, Capability.SENT_LOG)
                return context
            if get_config().sent_log is None:
                # Still listed: what was logged while it was on stays until pruned.
                context["sent_log_off"] = SENT_LOG_OFF
            context.update(self._sent_page(request, store, query, cursor))
            return context

        return self._render(request, "mailqueue/sent.html", "Sent", build, trail=[("Sent", None)])

    def _sent_page(
        self, request: HttpRequest, store: Store, query: str, cursor: str | None
    ) -> dict[str, Any]:
        """One page of the sent log, or of a search in it; a stale cursor gives the first page."""
        limit = self.model_admin.list_per_page
        now = time.time()
        try:
            if not query:
                page = store.sent_log(now, limit=limit, cursor=cursor)
                return {
                    "records": [sent_row(record, now) for record in page.entries],
                    "next_url": None if page.cursor is None else self._query(cursor=page.cursor),
                }
            found = search_sent(
                store,
                now,
                query,
                limit=limit,
                cursor=cursor,
                budget=self.model_admin.search_budget,
            )
        except ValueError:
            if cursor is None:  # not a stale link: a bug, said loudly
                raise
            messages.warning(request, STALE_CURSOR)
            return self._sent_page(request, store, query, None)
        return {
            "records": [sent_row(record, now) for record in found.matches],
            "next_url": None
            if found.cursor is None
            else self._query(q=query, cursor=found.cursor),
            "examined": found.examined,
            "budget_spent": found.cursor is not None and len(found.matches) < limit,
        }

    # -- one message -----------------------------------------------------------------

    def message(self, request: HttpRequest, key: str) -> HttpResponse:
        self._may_view(request)
        record_id = unquote(key)

        def build(store: Store) -> dict[str, Any]:
            if Capability.BROWSE not in store.capabilities:
                return {"lacks_browse": lacking(store, Capability.BROWSE)}
            now = time.time()
            entry = store.get(record_id, now)
            if entry is None:
                return {"missing": record_id, "trail": [(f"Message {record_id}", None)]}
            shown = row(summarize(entry, detail=True), now)
            buttons: list[tuple[str, str]] = []
            if entry.state is State.SCHEDULED:
                buttons.append(("send_now", "Send now"))
            elif entry.state is State.DEAD:
                buttons.append(("retry", "Retry (send now)"))
            if entry.state is not State.IN_FLIGHT:
                buttons.append(("delete", "Delete"))
            list_url = self.url("state", entry.state.value)
            return {
                "trail": [(TITLES[entry.state], list_url), (entry.id, None)],
                "state": entry.state,
                "message": shown,
                "buttons": buttons,
                "here": request.get_full_path(),
                "list_url": list_url,
                "confirmed": CONFIRMED,
                "preview_url": None if shown.html is None else self.url("preview", key),
            }

        return self._render(
            request,
            "mailqueue/message.html",
            "Queued message",
            build,
            status=lambda context: 404 if "missing" in context else 200,
            trail=[(f"Message {record_id}", None)],
        )

    def preview(self, request: HttpRequest, key: str) -> HttpResponse:
        """The HTML body alone, for the sandboxed frame: scripts and remote loads forbidden."""
        self._may_view(request)
        record_id = unquote(key)
        try:
            with self._store() as store:
                if Capability.BROWSE not in store.capabilities:
                    return _plain(lacking(store, Capability.BROWSE), 404)
                entry = store.get(record_id, time.time())
        except _Trouble as trouble:
            return _plain(f"{trouble.title}: {trouble.detail}", 503)
        html = None if entry is None else summarize(entry, detail=True).html
        if html is None:
            return _plain("This message has no HTML body (or is no longer in the queue).", 404)
        response = HttpResponse(html, content_type="text/html; charset=utf-8")
        _forbid_everything(response)
        return response

    # -- the buttons -----------------------------------------------------------------

    def act(self, request: HttpRequest) -> HttpResponse:
        """Every button posts here: ``action``, the ``ids`` ticked, and where to go ``next``."""
        if request.method != "POST":
            return HttpResponse(
                "Use the console's buttons.", status=405, headers={"Allow": "POST"}
            )
        if not self.model_admin.has_change_permission(request):
            raise PermissionDenied
        back = self._back(request)
        action = request.POST.get("action", "")
        ids = request.POST.getlist("ids")
        now = time.time()
        handlers: dict[str, Callable[[Store], actions.Notice]] = {
            "send_now": lambda store: actions.send_now(store, ids, now),
            "delete": lambda store: actions.delete(store, ids, now),
            "retry": lambda store: actions.retry(store, ids, now),
            "retry_all": lambda store: actions.retry_all(store, now),
            "purge": lambda store: actions.purge(store, request.POST.get("older_than", ""), now),
            "pause": lambda store: actions.pause(store, True),
            "resume": lambda store: actions.pause(store, False),
        }
        handler = handlers.get(action)
        if handler is None:
            messages.error(request, "That is not one of the console's actions: nothing was done.")
            return HttpResponseRedirect(back)
        if action in _ON_SELECTED and not ids:
            messages.warning(request, "No message was selected: tick one or more first.")
            return HttpResponseRedirect(back)
        if action in CONFIRMED and request.POST.get("confirmed") != "yes":
            older_than = request.POST.get("older_than", "")
            if action != "purge" or _duration(older_than) is not None:
                return self._confirm(request, action, ids, back, older_than)
            # A purge with no valid age asks nothing: its notice says what is wrong.
        try:
            with self._store() as store:
                notice = handler(store)
        except _Trouble as trouble:
            notice = actions.Notice(
                messages.ERROR, f"Nothing was done: {trouble.title.lower()}: {trouble.detail}"
            )
        messages.add_message(request, notice.level, notice.text)
        logger.info(
            "console: %s by %s (%d message(s) selected): %s",
            action,
            request.user.get_username(),
            len(ids),
            notice.text,
        )
        return HttpResponseRedirect(back)

    def _back(self, request: HttpRequest, field: str = "next") -> str:
        """Where the button's page said to go back to, if it is on this site."""
        back = request.POST.get(field, "")
        if back and url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return back
        return self.url("changelist")

    def _confirm(
        self, request: HttpRequest, action: str, ids: list[str], back: str, older_than: str
    ) -> HttpResponse:
        """The page that asks before ``action``: what it would do, "Yes" (the same POST
        with ``confirmed=yes``) and "No" (back where the button was)."""
        now = time.time()
        cancel = self._back(request, "cancel") if request.POST.get("cancel") else back

        def build(store: Store) -> dict[str, Any]:
            context: dict[str, Any] = {
                "state": "confirm",  # no tab is this page
                "action": action,
                "ids": list(dict.fromkeys(ids)),
                "older_than": older_than,
                "next": back,
                "cancel_url": cancel,
                "destructive": action != "retry_all",
            }
            if action == "delete":
                context.update(self._doomed(store, context["ids"], now))
            elif action == "retry_all":
                dead = store.stats(now).dead
                context["question"] = (
                    f"Retry every dead letter ({dead} now)? Each goes back to the queue, due "
                    "now, with a full MAX_AGE again, and the next flush sends it to its "
                    "recipients."
                )
                context["yes"] = "Yes, retry them all"
            else:
                seconds = _duration(older_than)
                assert seconds is not None  # act() asks only for a valid age
                context["question"] = (
                    f"Purge the dead letters buried more than {older_than.strip()} ago? They "
                    "are deleted for good: nobody can retry them afterwards."
                )
                context["cutoff"] = when(now - seconds)
                context["dead"] = store.stats(now).dead
                context["yes"] = "Yes, purge them"
            return context

        return self._render(
            request,
            "mailqueue/confirm.html",
            "Are you sure?",
            build,
            trail=[("Are you sure?", None)],
        )

    def _doomed(self, store: Store, ids: list[str], now: float) -> dict[str, Any]:
        """What a delete would delete, and what it would leave."""
        if Capability.BROWSE not in store.capabilities:
            return {"lacks_browse": lacking(store, Capability.BROWSE)}
        entries = [(mid, store.get(mid, now)) for mid in ids]
        found = [entry for _, entry in entries if entry is not None]
        flying = sum(1 for entry in found if entry.state is State.IN_FLIGHT)
        gone = [mid for mid, entry in entries if entry is None]
        doomed = len(found) - flying
        return {
            "question": (
                f"Delete {_count(doomed, 'message')}? Deleted mail is not sent, and cannot be "
                "retried or brought back."
            ),
            "listed": self._listed((summarize(entry) for entry in found), now),
            "flying": flying,
            "gone": gone,
            "yes": "Yes, delete" if doomed else None,
        }


def _staging() -> str | None:
    """The STAGING line (what it does to mail), or None when it is off."""
    try:
        staging = get_config().staging
    except ConfigurationError:  # the page says the setting is wrong
        return None
    return None if staging is None else staging.describe()


def _flushers(store: Store, now: float) -> dict[str, Any]:
    """The flushers seen lately, newest first, and a warning when none was for a while."""
    if Capability.HEARTBEAT not in store.capabilities:
        return {"off": lacking(store, Capability.HEARTBEAT)}
    beats = sorted(store.beats(now).items(), key=lambda beat: (-beat[1], beat[0]))
    shown = [(printable(host), ago(at, now)) for host, at in beats[:SHOWN_FLUSHERS]]
    quiet = None
    if not beats:
        quiet = "No flusher seen in the last day."
    elif now - beats[0][1] > QUIET:
        quiet = f"No flusher seen for {span(now - beats[0][1])}."
    return {"beats": shown, "more": len(beats) - len(shown), "quiet": quiet}


def _duration(text: str) -> float | None:
    try:
        return parse_duration(text)
    except argparse.ArgumentTypeError:
        return None


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _plain(text: str, status: int) -> HttpResponse:
    response = HttpResponse(text, content_type="text/plain; charset=utf-8", status=status)
    _forbid_everything(response)
    return response


def _forbid_everything(response: HttpResponse) -> None:
    response["Content-Security-Policy"] = PREVIEW_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
