import uuid

import pytest

from mailqueue_core.testing import StoreContract, store_model_test
from mailqueue_stores.memory import MemoryStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        s = MemoryStore(f"memory://{uuid.uuid4().hex}", namespace="test")
        yield s
        s.close()

    def damage(self, store, record_id, how):
        pytest.skip(
            "the memory store keeps records as Python objects inside the store: "
            "nothing outside it can damage one"
        )


TestMemoryStoreModel = store_model_test(
    lambda: MemoryStore(f"memory://{uuid.uuid4().hex}", namespace="model")
)


def test_namespace_in_the_url_and_unknown_options():
    from mailqueue_core.errors import ConfigurationError

    assert MemoryStore("memory://q?namespace=shop").namespace == "shop"
    assert MemoryStore("memory://q?namespace=shop", namespace="b").namespace == "b"
    with pytest.raises(ConfigurationError, match=r"unknown option 'colour' in the URL"):
        MemoryStore("memory://q?colour=red")
    with pytest.raises(ConfigurationError, match=r"valid options: namespace"):
        MemoryStore("memory://q", colour="red")


def test_the_query_does_not_name_another_queue(now=1000.0):
    from mailqueue_core.testing import make_record

    name = uuid.uuid4().hex
    MemoryStore(f"memory://{name}?namespace=n").enqueue([make_record(now)])
    assert MemoryStore(f"memory://{name}", namespace="n").stats(now).ready == 1
