"""The settings reference, generated from the code it documents.

``.. mailqueue-setting:: KEY`` documents one ``MAILQUEUE`` key (or a ``RETRY``
sub-key as ``RETRY.FIRST``): its type comes from the ``:type:`` option, its
meaning from the directive's content, and its default from
:data:`mailqueue_core.config.DEFAULTS` itself, so a changed default cannot
leave the docs behind. ``.. mailqueue-defaults::`` prints the whole default
``MAILQUEUE`` dict, also from ``DEFAULTS``; ``.. mailqueue-retry-schedule::``
the attempts the default retry policy makes, computed by
:class:`mailqueue_core.policy.RetryPolicy` itself.

When every page has been read, a key of ``DEFAULTS`` that no directive
documents is a warning, and so (the build runs with ``-W``) a failed build; a
directive naming a key that ``DEFAULTS`` does not have is an error at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from mailqueue_core.config import DEFAULTS
from mailqueue_core.policy import RetryPolicy

logger = logging.getLogger(__name__)

#: What a key with a default of None means, where "None" would not say it.
_NO_DEFAULT = {"STORE": "none: required"}


def expected_keys() -> list[str]:
    """Every key the reference must cover: top-level keys and ``PARENT.SUB`` keys."""
    keys = []
    for key, value in DEFAULTS.items():
        keys.append(key)
        if isinstance(value, Mapping):
            keys.extend(f"{key}.{sub}" for sub in value)
    return keys


def anchor(key: str) -> str:
    """The HTML id of a key's entry (``RETRY.FIRST`` -> ``setting-retry-first``)."""
    return nodes.make_id(f"setting-{key}")


def python_literal(value: Any) -> str:
    """``value`` as it would be written in settings.py."""
    if isinstance(value, Mapping):
        items = ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int) and not isinstance(value, bool) and value >= 100_000:
        return f"{value:_}"
    return repr(value)


def _default(key: str) -> Any:
    parent, _, sub = key.partition(".")
    value = DEFAULTS[parent]
    return value[sub] if sub else value


def _field(name: str, body: nodes.Node) -> nodes.field:
    return nodes.field("", nodes.field_name("", name), nodes.field_body("", body))


class SettingDirective(SphinxDirective):
    required_arguments = 1
    has_content = True
    option_spec = {"type": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        key = self.arguments[0]
        if key not in expected_keys():
            raise self.error(
                f"mailqueue-setting: {key!r} is not a key of mailqueue_core.config.DEFAULTS "
                f"(known: {', '.join(expected_keys())})"
            )
        if "type" not in self.options:
            raise self.error(f"mailqueue-setting {key}: the :type: option is required")
        if not self.content:
            raise self.error(f"mailqueue-setting {key}: say what the setting means")
        documented = _documented(self.env)
        if key in documented and documented[key] != self.env.docname:
            raise self.error(f"mailqueue-setting {key} is already documented")
        documented[key] = self.env.docname

        target = nodes.target("", "", ids=[anchor(key)])
        default = _NO_DEFAULT.get(key) or python_literal(_default(key))
        fields = nodes.field_list(
            "",
            _field("Type", nodes.paragraph("", self.options["type"])),
            _field("Default", nodes.paragraph("", "", nodes.literal("", default))),
        )
        body = nodes.container(classes=["mailqueue-setting"])
        body += fields
        self.state.nested_parse(self.content, self.content_offset, body)
        return [target, body]


class DefaultsDirective(SphinxDirective):
    """The whole default ``MAILQUEUE`` dict, one key a line."""

    def run(self) -> list[nodes.Node]:
        lines = ["MAILQUEUE = {"]
        for key, value in DEFAULTS.items():
            note = "  # required" if key in _NO_DEFAULT else ""
            lines.append(f"    {python_literal(key)}: {python_literal(value)},{note}")
        lines.append("}")
        text = "\n".join(lines)
        block = nodes.literal_block(text, text, language="python")
        return [block]


def retry_schedule(policy: RetryPolicy) -> list[float]:
    """When each attempt is made, in seconds after enqueue, if every one fails.

    The first attempt is at 0 (a flusher was waiting); the flusher buries the
    message when the attempt that fails is at or past ``max_age``.
    """
    times = [0.0]
    while not policy.expired(0.0, times[-1]):
        times.append(policy.next_due(0.0, len(times), times[-1]))
    return times


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:.3g} h"


class RetryScheduleDirective(SphinxDirective):
    """A table of the attempts the default policy makes for a message that always fails."""

    def run(self) -> list[nodes.Node]:
        retry = {k.lower(): v for k, v in DEFAULTS["RETRY"].items()}
        retry["jitter"] = 0.0  # the schedule without its random spread
        policy = RetryPolicy(**retry, max_age=DEFAULTS["MAX_AGE"])
        times = retry_schedule(policy)
        rows: list[tuple[str, str, str]] = []
        index = 0
        while index < len(times):
            wait = times[index] - times[index - 1] if index else 0.0
            run_end = index
            while (
                run_end + 1 < len(times) - 1
                and index > 0
                and times[run_end + 1] - times[run_end] == wait
            ):
                run_end += 1
            if run_end > index:
                rows.append(
                    (
                        f"{index + 1} to {run_end + 1}",
                        f"{_duration(wait)} each",
                        f"{_duration(times[index])} to {_duration(times[run_end])}",
                    )
                )
            else:
                rows.append(
                    (
                        str(index + 1),
                        _duration(wait) if index else "(first try)",
                        _duration(times[index]),
                    )
                )
            index = run_end + 1
        table = nodes.table()
        group = nodes.tgroup(cols=3)
        table += group
        for width in (20, 30, 50):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        body = nodes.tbody()
        group += head
        group += body
        header = ("attempt", "wait before it", "time since enqueue")
        head += nodes.row("", *(nodes.entry("", nodes.paragraph("", h)) for h in header))
        for row in rows:
            body += nodes.row("", *(nodes.entry("", nodes.paragraph("", c)) for c in row))
        summary = nodes.paragraph(
            "",
            f"{len(times)} attempts in all; if the last one fails too, the message is "
            'buried with the reason "gave up after ... attempts".',
        )
        return [table, summary]


def _documented(env: BuildEnvironment) -> dict[str, str]:
    if not hasattr(env, "mailqueue_settings"):
        env.mailqueue_settings = {}  # type: ignore[attr-defined]
    return env.mailqueue_settings  # type: ignore[attr-defined, no-any-return]


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    documented = _documented(env)
    for key in [k for k, doc in documented.items() if doc == docname]:
        del documented[key]


def _merge(
    app: Sphinx, env: BuildEnvironment, docnames: Iterator[str], other: BuildEnvironment
) -> None:
    _documented(env).update(_documented(other))


def _check(app: Sphinx, env: BuildEnvironment) -> None:
    documented = _documented(env)
    for key in expected_keys():
        if key not in documented:
            logger.warning(
                "MAILQUEUE[%r] is in mailqueue_core.config.DEFAULTS but no "
                "'mailqueue-setting' directive documents it",
                key,
                type="mailqueue",
                subtype="settings",
            )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("mailqueue-setting", SettingDirective)
    app.add_directive("mailqueue-defaults", DefaultsDirective)
    app.add_directive("mailqueue-retry-schedule", RetryScheduleDirective)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _check)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
