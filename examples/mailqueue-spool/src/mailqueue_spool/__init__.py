"""mailqueue-spool: an example third-party store for mailqueue.

The store itself, and its documentation, is :mod:`mailqueue_spool.store`;
mailqueue finds it through the ``spool`` entry point in the
``mailqueue.stores`` group (see this package's ``pyproject.toml``).
"""

from mailqueue_spool.store import SpoolStore

__all__ = ["SpoolStore"]
