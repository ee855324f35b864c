"""Test kit for store and transport plugins.

- :class:`StoreContract`: the store contract as a pytest class to subclass.
- :func:`make_record`: records for tests.
- :func:`store_model_test`: the stateful model test (Hypothesis) for a store.
- :class:`FaultySMTPServer`: a real SMTP server on loopback (aiosmtpd) that
  can be told to misbehave.
"""

from mailqueue_core.testing.contract import Damage, StoreContract, make_record


def __getattr__(name: str) -> object:
    # Lazy: the model test needs Hypothesis, the server aiosmtpd; a store's
    # contract tests need neither.
    if name in ("StoreModel", "run_store_model", "store_model_test"):
        from mailqueue_core.testing import model

        return getattr(model, name)
    if name in ("FaultySMTPServer", "Received", "make_tls_contexts"):
        from mailqueue_core.testing import smtpserver

        return getattr(smtpserver, name)
    raise AttributeError(name)


__all__ = [
    "Damage",
    "FaultySMTPServer",
    "Received",
    "StoreContract",
    "StoreModel",
    "make_record",
    "make_tls_contexts",
    "run_store_model",
    "store_model_test",
]
