"""The main job of mailqueue, shown on the embedded default store (sqlite).

1. A Django site sends three mails while its SMTP server is down: no error,
   they are queued.
2. The flusher runs: the server is still down, so the mail is deferred.
3. The SMTP server comes up (a real one, on loopback, started here).
4. The flusher runs again: everything is delivered, exactly once.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port = free_port()
    spool = Path(tempfile.mkdtemp(prefix="mailqueue-demo-")) / "mailqueue.db"
    from django.conf import settings

    settings.configure(
        EMAIL_BACKEND="mailqueue_core.backend.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        DEFAULT_FROM_EMAIL="shop@example.com",
        MAILQUEUE={"STORE": f"sqlite:///{spool}", "RETRY": {"FIRST": 1, "JITTER": 0}},
    )
    import django

    django.setup()
    from django.core.mail import send_mail

    from mailqueue_core.django_settings import get_config, get_store
    from mailqueue_core.flusher import Flusher
    from mailqueue_core.plugins import make_transport
    from mailqueue_core.testing.smtpserver import FaultySMTPServer

    config = get_config()
    store = get_store(config.store, config.namespace)

    def flusher() -> Flusher:
        return Flusher(store, make_transport("smtp"), policy=config.policy)

    def status(label: str) -> None:
        s = store.stats(time.time())
        print(f"   {label}: ready {s.ready}, scheduled {s.scheduled}, dead {s.dead}")

    print(f"1. SMTP server 127.0.0.1:{port} is DOWN. The site sends three receipts:")
    for n in (1, 2, 3):
        count = send_mail(
            f"Receipt #{n}", f"Thank you for order {n}.", None, [f"customer{n}@example.com"]
        )
        print(f"   send_mail(... customer{n}@example.com) returned {count}, no error")
    status("queue")

    print("2. The flusher runs while the server is still down:")
    print(f"   {flusher().flush().summary()}")
    status("queue")

    print("3. The SMTP server comes up.")
    with FaultySMTPServer(port=port) as server:
        time.sleep(1.1)  # the first retry is due one second later in this demo
        print("4. The flusher runs again:")
        print(f"   {flusher().flush().summary()}")
        status("queue")
        print(f"   The SMTP server received {len(server.messages)} messages:")
        for received in server.messages:
            subject = next(
                line for line in received.data.decode().splitlines() if line.startswith("Subject:")
            )
            print(f"   - to {', '.join(received.rcpt_tos)}: {subject}")
    print(f"(the queue file was {spool})")


if __name__ == "__main__":
    main()
