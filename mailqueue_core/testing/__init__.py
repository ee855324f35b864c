"""Test kit for store and transport plugins.

- :class:`StoreContract`: the store contract as a pytest class to subclass.
- :func:`make_record`: records for tests.
- :class:`FaultySMTPServer`: a real SMTP server on loopback (aiosmtpd) that
  can be told to misbehave.
"""

from mailqueue_core.testing.contract import StoreContract, make_record

__all__ = ["StoreContract", "make_record"]
