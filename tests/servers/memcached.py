"""Fixtures that start a real memcached server for the tests (owned by the memcached store work)."""
