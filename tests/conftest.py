"""Shared test set-up: Django settings for the tests, and the server fixtures."""

pytest_plugins = [
    "tests.servers.redis",
    "tests.servers.memcached",
]
