"""Plugin summaries for stevedore's ``list-plugins`` directive.

stevedore documents a plugin by its class docstring. mailqueue's plugins keep
their reference in the *module* docstring, in fixed sections (what it is, URL
format, options, what it can lose), and their classes carry no docstring of
their own, so stevedore would show the docstring they inherit from ``Store``
or ``Transport`` for every one of them. This extension makes stevedore use a
class's own docstring when it has one, and its module's docstring otherwise;
a third party's plugin is documented the same way.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from stevedore import sphinxext


def plugin_docstring(plugin: Any) -> str:
    """The class's own docstring, else its module's, else ``""``."""
    own = plugin.__dict__.get("__doc__") if isinstance(plugin, type) else plugin.__doc__
    if own:
        return inspect.cleandoc(own)
    module = sys.modules.get(getattr(plugin, "__module__", ""))
    if module is None:
        return ""
    return inspect.getdoc(module) or ""


def setup(app: Sphinx) -> dict[str, Any]:
    # stevedore reads docstrings through one private helper; if a release
    # renames it, fail the build rather than silently list inherited docstrings.
    if not callable(getattr(sphinxext, "_get_docstring", None)):
        raise ExtensionError(
            "stevedore.sphinxext no longer has _get_docstring: "
            "update docs/_ext/plugin_docstrings.py"
        )
    sphinxext._get_docstring = plugin_docstring
    app.setup_extension("stevedore.sphinxext")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
