"""The spool store against mailqueue's test kit, exactly as any third-party store runs it.

1. ``StoreContract``: every promise of ``mailqueue_core.store.Store``, as tests.
2. ``store_model_test``: random sequences of operations checked against a model.
3. The store found by name through its entry point, and a mail sent end to end.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterator

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.test import override_settings
from mailqueue_spool import SpoolStore, files

from mailqueue_core.backend import EmailBackend
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import STORES, installed, make_store, make_transport
from mailqueue_core.store import Stats
from mailqueue_core.testing import Damage, StoreContract, store_model_test


class TestSpoolStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path) -> Iterator[SpoolStore]:
        s = SpoolStore(f"spool://{tmp_path}", namespace="test")
        yield s
        s.close()

    def damage(self, store: SpoolStore, record_id: str, how: Damage) -> None:
        # As a stray process or a bad disk would: through the files themselves.
        if how is Damage.MISSING:
            pytest.skip("a spool file is its own index: a deleted file leaves nothing to report")
        root = pathlib.Path(store.location[len("spool://") :])
        (path,) = (
            p
            for p in root.rglob("*")
            if (entry := files.parse_queue_name(p.name)) is not None and entry.id == record_id
        )
        header, _, data = path.read_bytes().partition(b"\n")
        fields = json.loads(header)
        if how is Damage.PARTIAL:
            del fields["created"]
        else:
            fields["attempts"] = "1.5"
        path.write_bytes(json.dumps(fields).encode() + b"\n" + data)


# The model test calls the factory once per generated run and has no hook to
# clean up after it, so the directories are collected and removed per module.
_model_dirs: list[str] = []


def _fresh_spool() -> SpoolStore:
    directory = tempfile.mkdtemp(prefix="mailqueue-spool-model-")
    _model_dirs.append(directory)
    return SpoolStore(f"spool://{directory}", namespace="model")


TestSpoolModel = store_model_test(_fresh_spool)


@pytest.fixture(autouse=True, scope="module")
def _remove_model_dirs() -> Iterator[None]:
    yield
    while _model_dirs:
        shutil.rmtree(_model_dirs.pop(), ignore_errors=True)


def test_found_by_name_through_its_entry_point(tmp_path) -> None:
    assert "spool" in installed(STORES)
    store = make_store(f"spool://{tmp_path}?namespace=shop&fsync=false")
    assert isinstance(store, SpoolStore)
    assert (store.namespace, store.options) == ("shop", {"fsync": False})
    store = make_store({"NAME": f"spool://{tmp_path}", "OPTIONS": {"fsync": "yes"}}, namespace="b")
    assert isinstance(store, SpoolStore)
    assert (store.namespace, store.options) == ("b", {"fsync": True})


def test_a_mail_goes_through_the_spool_end_to_end(tmp_path) -> None:
    url = f"spool://{tmp_path}"
    mail.outbox = []
    message = EmailMessage("Receipt", "Thank you.", "shop@example.com", ["ann@example.com"])
    with override_settings(MAILQUEUE={"STORE": url}):
        assert EmailBackend().send_messages([message]) == 1
    assert mail.outbox == []  # queued, not sent

    # The flusher is another process in real life: it builds its own store.
    store = make_store(url)
    assert store.stats(time.time()).ready == 1
    transport = make_transport("django:django.core.mail.backends.locmem.EmailBackend")
    result = Flusher(store, transport).flush()

    assert (result.sent, result.deferred, result.buried) == (1, 0, 0)
    (delivered,) = mail.outbox
    assert (delivered.subject, delivered.to, delivered.body) == (
        "Receipt",
        ["ann@example.com"],
        "Thank you.",
    )
    assert store.stats(time.time()) == Stats()
