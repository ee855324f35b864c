"""The queue in the site's own SQLite file: enqueue joins the request's transaction.

Run in a subprocess with a Django project whose database is a SQLite file,
since the test suite's own database is configured once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from mailqueue_core.errors import ConfigurationError
from mailqueue_stores.sqlite import SQLiteStore

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import django
    from django.conf import settings

    path, on_commit = sys.argv[1], sys.argv[2] == "on_commit"
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": path}},
        MAILQUEUE={
            "STORE": {"NAME": f"sqlite:///{path}", "OPTIONS": {"django_database": "default"}},
            "ON_COMMIT": on_commit,
        },
        DEFAULT_FROM_EMAIL="site@example.com",
    )
    django.setup()
    from django.core.mail import EmailMessage
    from django.db import connection, transaction
    from mailqueue_core.backend import EmailBackend
    from mailqueue_stores.sqlite import SQLiteStore

    with connection.cursor() as c:
        c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")

    def send(subject):
        EmailBackend().send_messages([EmailMessage(subject, "b", None, ["r@example.com"])])

    try:
        with transaction.atomic():
            connection.cursor().execute("INSERT INTO orders VALUES (1)")
            send("rolled back")
            raise RuntimeError("payment failed")
    except RuntimeError:
        pass
    with transaction.atomic():
        connection.cursor().execute("INSERT INTO orders VALUES (2)")
        send("committed")
    send("no transaction")
    connection.close()
    store = SQLiteStore(f"sqlite:///{path}")
    claims = store.fetch_due(time.time() + 1, 10, 30)
    from mailqueue_core import codec
    print(sorted(codec.decode(c.record).subject for c in claims))
    """
)


@pytest.mark.parametrize("mode", ["direct", "on_commit"])
def test_enqueue_joins_the_site_transaction(tmp_path, mode):
    script = tmp_path / "site.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "site.db"), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['committed', 'no transaction']"


def test_django_database_must_be_the_stores_file(tmp_path):
    store = SQLiteStore(f"sqlite:///{tmp_path}/q.db", django_database="default")
    from tests.helpers import record

    with pytest.raises(ConfigurationError, match="needs that database to be the SQLite file"):
        store.enqueue([record(created=0.0)])
    with pytest.raises(ConfigurationError, match="no Django database 'nope'"):
        SQLiteStore(f"sqlite:///{tmp_path}/q.db", django_database="nope").enqueue(
            [record(created=0.0)]
        )
    with pytest.raises(ConfigurationError, match=r"django_database.* must be a non-empty string"):
        SQLiteStore(f"sqlite:///{tmp_path}/q.db", django_database=3)
