"""Fixtures that start a real redis server for the tests (owned by the redis store work)."""
