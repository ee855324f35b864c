"""The public names are exactly what the docs and ``__all__`` say, and nothing private leaks."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

import mailqueue_core
from mailqueue_core import errors

# DESIGN.md's Conventions: "Public names are re-exported from mailqueue_core".
DOCUMENTED = {
    "Store",
    "Transport",
    "QueuedMessage",
    "StoreUnavailable",
    "Delivery",
    "ConnectError",
    "TransientError",
    "PermanentError",
    "SessionError",
}


def test_all_is_exactly_what_the_package_exports() -> None:
    exported = {n for n in dir(mailqueue_core) if not n.startswith("_")}
    modules = {n for n in exported if inspect.ismodule(getattr(mailqueue_core, n))}
    assert exported - modules == set(mailqueue_core.__all__)


def test_documented_names_are_public() -> None:
    assert set(mailqueue_core.__all__) >= DOCUMENTED


def test_every_error_is_public_and_in_the_tree_picture() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    assert classes <= set(mailqueue_core.__all__)
    picture = errors.__doc__ or ""
    for name in classes:
        assert re.search(rf"\b{name}\b", picture), f"{name} is missing from the error tree"


@pytest.mark.parametrize(
    "module",
    [
        "mailqueue_core.store",
        "mailqueue_core.transport",
        "mailqueue_core.errors",
        "mailqueue_core.options",
        "mailqueue_core.text",
        "mailqueue_core.testing",
    ],
)
def test_each_module_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
