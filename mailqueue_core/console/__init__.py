"""The operator's console: the Django admin pages that show and steer the queue.

Served by :mod:`mailqueue_core.admin` under the admin's entry for
:class:`~mailqueue_core.models.QueuedMail`, through the store contract only, so
a third-party store gets the same console as the bundled ones; what a store
lacks (``browse``, ``pause``, ``sent_log``, ``heartbeat``) is said on the page,
never a server error.

- :mod:`~mailqueue_core.console.stores`: opening the site's stores for one request,
  and what the console says of a store (its class, namespace, redacted location,
  what it cannot do).
- :mod:`~mailqueue_core.console.rows`: what a page shows of one message, made safe
  to show (control characters escaped; templates escape the rest).
- :mod:`~mailqueue_core.console.actions`: what each button does to the store, and
  the notice it leaves ("2 sent now; 1 was in flight and was left alone").
- :mod:`~mailqueue_core.console.views`: the pages (overview, lists, the sent log,
  one message, the HTML preview) and the one view every button posts to, which
  asks first where an action cannot be undone.
"""
