"""The one option parser every store and transport reads its URL query and OPTIONS with."""

from __future__ import annotations

import dataclasses

import pytest

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.options import (
    BOOLEAN,
    COUNT,
    MAPPING,
    POSITIVE_INT,
    SECONDS,
    TEXT,
    choice,
    describe,
    option,
    optional,
    read_options,
    split_query,
)


@dataclasses.dataclass(frozen=True)
class Example:
    fsync: bool = option(True, BOOLEAN, "fsync after each change")
    timeout: float = option(5.0, SECONDS, "seconds to wait")
    retries: int = option(0, COUNT, "how many times")
    pool: int = option(4, POSITIVE_INT, "connections")
    mode: str = option("FULL", choice("FULL", "NORMAL"), "durability")
    ca_file: str | None = option(None, optional(TEXT), "a CA bundle")
    password: str | None = option(None, optional(TEXT), "the password")
    client_options: dict = option({}, MAPPING, "passed to the client")


def read(query=None, options=None):
    return read_options(Example, "example store", query or {}, options or {})


def test_defaults_and_namespace() -> None:
    namespace, opts = read()
    assert namespace == "default"
    assert opts == Example()
    assert opts.client_options == {} and opts.client_options is not Example().client_options


def test_url_query_and_options_merge_and_parse() -> None:
    namespace, opts = read(
        {"namespace": "shop", "fsync": "off", "timeout": "2.5", "mode": "normal"},
        {"retries": 3, "pool": "8", "client_options": {"a": 1}},
    )
    assert namespace == "shop"
    assert (opts.fsync, opts.timeout, opts.mode, opts.retries, opts.pool) == (
        False,
        2.5,
        "NORMAL",
        3,
        8,
    )
    assert opts.client_options == {"a": 1}


def test_namespace_from_options() -> None:
    assert read(options={"namespace": "x"})[0] == "x"


@pytest.mark.parametrize(
    ("query", "options", "message"),
    [
        ({"colour": "red"}, {}, r"unknown option 'colour' in the URL; valid options: ca_file, "),
        ({}, {"fsnyc": True}, r"unknown option 'fsnyc' in the OPTIONS \(did you mean 'fsync'\?\)"),
        ({"fsync": ""}, {}, r"option 'fsync' \(in the URL\) must be true or false"),
        ({}, {"fsync": "maybe"}, r"'fsync' \(in the OPTIONS\) must be true or false"),
        ({"timeout": "-1"}, {}, r"'timeout' .* seconds >= 0, got '-1'"),
        ({"timeout": "nan"}, {}, r"'timeout' .* finite"),
        ({}, {"timeout": True}, r"'timeout' .* must be a number"),
        ({}, {"timeout": [1]}, r"'timeout' .* must be a number"),
        ({"retries": "1.5"}, {}, r"'retries' .* whole number >= 0"),
        ({"pool": "0"}, {}, r"'pool' .* whole number >= 1"),
        ({"mode": "OFF"}, {}, r"'mode' .* one of FULL, NORMAL"),
        ({"namespace": ""}, {}, r"'namespace' .* non-empty string"),
        ({"client_options": "x"}, {}, r"'client_options' cannot be given in the URL"),
        ({}, {"client_options": "x"}, r"'client_options' .* must be a dict"),
        ({"fsync": "yes?"}, {"fsync": False}, r"'fsync' \(in the URL\) must be true or false"),
    ],
)
def test_bad_options_say_what_is_wrong(query, options, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        read(query, options)


def test_options_win_over_the_url_query() -> None:
    namespace, opts = read({"fsync": "yes", "namespace": "a"}, {"fsync": False, "namespace": "b"})
    assert (namespace, opts.fsync) == ("b", False)


def test_a_secret_value_is_never_shown() -> None:
    with pytest.raises(ConfigurationError) as caught:
        read(options={"password": ["s3cret"]})
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_optional_takes_none_from_options() -> None:
    assert read(options={"ca_file": None})[1].ca_file is None
    assert read({"ca_file": "/etc/ca.pem"})[1].ca_file == "/etc/ca.pem"


def test_split_query() -> None:
    assert split_query("redis://h:1/0?a=1&b=", "redis store") == (
        "redis://h:1/0",
        {"a": "1", "b": ""},
    )
    assert split_query("sqlite:////abs/q.db?x=1", "sqlite store") == (
        "sqlite:////abs/q.db",
        {"x": "1"},
    )
    assert split_query("memory://", "memory store") == ("memory://", {})
    with pytest.raises(ConfigurationError, match=r"holds a '\?'") as caught:
        split_query("redis://u:pw?s3cret@host:6379/0", "redis store")
    assert "s3cret" not in str(caught.value)
    assert split_query("redis://h/0?client_name=a@b", "redis store")[1] == {"client_name": "a@b"}
    with pytest.raises(ConfigurationError, match="gives 'a' more than once"):
        split_query("redis://h?a=1&a=2", "redis store")


def test_describe_lists_every_option_for_the_docs() -> None:
    rows = {row.name: row for row in describe(Example)}
    assert next(iter(rows)) == "namespace"
    assert rows["mode"].kind == "FULL | NORMAL"
    assert rows["timeout"].default == 5.0
    assert rows["client_options"].in_url is False
    assert rows["ca_file"].kind == "text or None"
    assert rows["fsync"].doc == "fsync after each change"
