"""The ``mailqueue-plugins`` directive: every installed plugin of an entry-point group.

mailqueue's plugins keep their reference in the *module* docstring, in fixed
sections (what it is, URL format, options, what it can lose), and their classes
carry no docstring of their own. stevedore's own ``list-plugins`` directive
shows a class's docstring, which for our plugins is the one inherited from
``Store`` or ``Transport``; changing that would mean patching a private
stevedore function. So this directive lists the plugins itself, through
stevedore's public ``ExtensionManager`` (the same loader the engine uses),
showing a class's own docstring when it has one and its module's otherwise.
Several names for one class (``redis``, ``rediss``, ``unix``) make one entry.
A plugin that fails to load fails the build, rather than vanishing from the page.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles
from stevedore import ExtensionManager


def plugin_docstring(plugin: Any) -> str:
    """The class's own docstring, else its module's, else ``""``."""
    own = plugin.__dict__.get("__doc__") if isinstance(plugin, type) else plugin.__doc__
    if own:
        return inspect.cleandoc(own)
    module = sys.modules.get(getattr(plugin, "__module__", ""))
    if module is None:
        return ""
    return inspect.getdoc(module) or ""


def _failed(manager: Any, entry_point: Any, exc: BaseException) -> None:
    raise ExtensionError(f"plugin {entry_point.name!r} failed to load: {exc}") from exc


class PluginsDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        group = self.arguments[0]
        manager = ExtensionManager(group, on_load_failure_callback=_failed)
        names: dict[Any, list[str]] = {}
        for extension in manager:
            names.setdefault(extension.plugin, []).append(extension.name)
        lines: list[str] = []
        for plugin, aliases in sorted(names.items(), key=lambda item: sorted(item[1])):
            title = ", ".join(f"``{name}``" for name in sorted(aliases))
            lines += [title, "~" * len(title), ""]
            lines += [f"``{plugin.__module__}.{plugin.__qualname__}``", ""]
            lines += [*plugin_docstring(plugin).splitlines(), ""]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=group), container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("mailqueue-plugins", PluginsDirective)
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
