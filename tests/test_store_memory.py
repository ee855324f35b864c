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
