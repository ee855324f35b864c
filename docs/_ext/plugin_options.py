"""The ``mailqueue-options`` directive: a plugin's option table, from its declaration.

``.. mailqueue-options:: mailqueue_stores.sqlite.options.SQLiteOptions`` renders
the options a store or transport declares with :func:`mailqueue_core.options.option`
(name, kind, default, whether a URL query may carry it, and what it does), read
through :func:`mailqueue_core.options.describe`: the same table that
:func:`~mailqueue_core.options.read_options` checks settings against, so the
reference cannot drift from the code. A path that names no declaration fails the
build.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from mailqueue_core.options import describe


def _declaration(path: str) -> type[Any]:
    module_name, _, name = path.rpartition(".")
    try:
        module = __import__(module_name, fromlist=[name])
        declared = getattr(module, name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExtensionError(f"mailqueue-options: cannot import {path!r}: {exc}") from exc
    if not (isinstance(declared, type) and dataclasses.is_dataclass(declared)):
        raise ExtensionError(f"mailqueue-options: {path!r} is not an options dataclass")
    return declared


def _default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in ({}, []):
        return "empty"
    return f"``{value!r}``" if isinstance(value, str) else f"``{value}``"


class OptionsDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        rows = describe(_declaration(self.arguments[0]))
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 18 14 12 8 48",
            "",
            "   * - option",
            "     - kind",
            "     - default",
            "     - in URL",
            "     - what it does",
        ]
        for row in rows:
            lines += [
                f"   * - ``{row.name}``",
                f"     - {row.kind}",
                f"     - {_default(row.default)}",
                f"     - {'yes' if row.in_url else 'no'}",
                f"     - {row.doc}",
            ]
        container = nodes.section()
        container.document = self.state.document
        source = StringList(lines, source=self.arguments[0])
        nested_parse_with_titles(self.state, source, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("mailqueue-options", OptionsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
