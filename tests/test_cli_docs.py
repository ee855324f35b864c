"""Every command the docs show still works as shown.

The ``$ ...`` lines of the docs' ``console`` blocks are run, against a fresh SQLite
queue (``manage.py`` ones through Django, standalone ones through ``mailqueue``):
each exits as documented (0, or what a following ``$ echo $?`` says), a ``status``
table has the documented rows, and an error prints the documented text. Every
other command the docs and the README name (cron lines, services, synopses,
inline literals) is parsed with the real argument parser, placeholders filled in;
a subcommand named alone (``mailqueue purge`` in a sentence) only has to exist.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from django.core.management import call_command
from django.test import override_settings

from mailqueue_core import cli
from mailqueue_core.commands import SUBCOMMANDS
from mailqueue_core.management.commands.mailqueue import Command

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").rglob("*.rst")), ROOT / "README.md"]
NAMES = "|".join(sub.name for sub in SUBCOMMANDS)
LOCMEM = "django:django.core.mail.backends.locmem.EmailBackend"


class Example(NamedTuple):
    where: str
    manage: bool
    """``manage.py mailqueue ...`` rather than the standalone ``mailqueue ...``."""
    args: list[str]
    output: list[str]
    exit_code: int


# -- finding them ---------------------------------------------------------------------------


def _code_blocks(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of each rst code block and markdown fence."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        directive = re.match(r"(\s*)\.\. code-block::\s*(\S+)", lines[i])
        fence = re.match(r"```(\S*)", lines[i])
        if directive:
            indent, start = len(directive.group(1)), i + 1
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                i += 1
            yield start + 1, directive.group(2), [line.strip() for line in lines[start:i]]
        elif fence:
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            yield start + 1, fence.group(1), [line.strip() for line in lines[start:i]]
        i += 1


def _command(text: str) -> tuple[bool, str] | None:
    """(manage.py?, the arguments) of a mailqueue command in ``text``, if it holds one."""
    listed = re.search(r'"manage\.py", "mailqueue", (.*?)\]', text)
    if listed:
        return True, shlex.join(json.loads(f"[{listed.group(1)}]"))
    match = re.search(rf"(manage\.py\s+)?(?<![\w./-])mailqueue\s+((?:{NAMES})\b.*)", text)
    if match is None:
        return None
    args = re.split(r"\s(?:&&|\||;|#)\s|`", match.group(2))[0]
    return bool(match.group(1)), args.strip()


def _console(page: str, start: int, lines: list[str]) -> Iterator[Example]:
    for i, line in enumerate(lines):
        found = _command(line[2:]) if line.startswith("$ ") else None
        if found is None:
            continue
        output = []
        for after in lines[i + 1 :]:
            if after.startswith("$ "):
                break
            output.append(after)
        rest = lines[i + 1 + len(output) :]
        code = int(rest[1]) if rest[:1] == ["$ echo $?"] else 0
        yield Example(f"{page}:{start + i}", found[0], shlex.split(found[1]), output, code)


def examples() -> tuple[list[Example], list[Example]]:
    """(the console examples to run, the other commands to parse)."""
    run: list[Example] = []
    parse: list[Example] = []
    for page in PAGES:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        pieces: list[tuple[int, str]] = []
        in_blocks: set[int] = set()
        for start, language, lines in _code_blocks(text):
            in_blocks.update(range(start, start + len(lines)))
            if language == "console":
                run += _console(name, start, lines)
            else:
                pieces += [(start + i, line) for i, line in enumerate(lines)]
        for number, line in enumerate(text.splitlines(), 1):
            if number not in in_blocks:
                row = re.match(rf"\| `((?:{NAMES})\b[^`]*)`", line)  # the README's table
                pieces += [(number, f"mailqueue {row.group(1)}")] if row else []
                pieces += [(number, a or b) for a, b in re.findall(r"``(.+?)``|`([^`]+)`", line)]
        for number, piece in pieces:
            found = _command(piece)
            if found is not None:
                parse.append(Example(f"{name}:{number}", found[0], _filled(found[1]), [], 0))
    return run, parse


_PLACEHOLDERS = {
    "N": "2",
    "S": "30",
    "AGE": "7d",
    "MODULE": "mysite.settings",
    "NAME": "shop",
    "ID": "8dbce1b644704c60aeca5c9c7676e9f1",
}


def _filled(synopsis: str) -> list[str]:
    """A synopsis as arguments: options in brackets given, the first of alternatives, and
    each placeholder replaced by a value of its kind."""
    text = synopsis.replace("\\|", "|").replace("same options", "").replace("...", "")
    text = re.sub(r"\(([^|)]*)\|[^)]*\)", r"\1", text)
    args: list[str] = []
    for token in shlex.split(text.replace("[", " ").replace("]", " ")):
        if token == "URL":
            token = "memory://q" if args[-1] == "--store" else "smtp://relay:25"
        args.append(_PLACEHOLDERS.get(token, token))
    return args


RUN, PARSE = examples()


def test_the_docs_show_commands_to_check():
    assert len(RUN) >= 10 and len(PARSE) >= 20
    assert {e.args[0] for e in RUN} >= {"status", "flush", "dead", "retry", "purge"}


# -- running them -----------------------------------------------------------------------------


def _run(example: Example, store: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if example.manage:
        try:
            call_command("mailqueue", *example.args, stdout=out, stderr=err)
            return 0, out.getvalue(), err.getvalue()
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue(), err.getvalue()
    args = list(example.args)
    if "--store" not in args:
        args += ["--store", store]
    if args[0] == "flush" and "--transport" not in args:
        args += ["--transport", LOCMEM]
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(args)
    return code, out.getvalue(), err.getvalue()


def _rows(lines: list[str]) -> list[str]:
    """The labels of a status table."""
    return [m.group(1) for line in lines if (m := re.match(r"(\w[\w ]*?)\s{2,}\S", line))]


@pytest.mark.parametrize("example", RUN, ids=[e.where for e in RUN])
def test_a_console_example_runs_as_shown(example, tmp_path):
    if "--loop" in example.args or "--workers" in example.args:
        pytest.fail("a console example that does not end, or forks: show it in an sh block")
    store = f"sqlite:///{tmp_path}/queue.db"
    with override_settings(MAILQUEUE={"STORE": store, "TRANSPORT": LOCMEM}):
        call_command("mailqueue", "flush", stdout=io.StringIO())  # the queue exists
        code, out, err = _run(example, store)
    assert code == example.exit_code, err
    if example.args[0] == "status" and example.exit_code == 0 and "--json" not in example.args:
        assert _rows(out.splitlines()) == _rows(example.output)
    if example.exit_code:
        assert " ".join(err.split()) == " ".join(example.output)


@pytest.mark.parametrize("example", PARSE, ids=[e.where for e in PARSE])
def test_every_other_documented_command_parses(example):
    if len(example.args) == 1:
        return  # the command named in prose ("use mailqueue purge"): it exists
    if example.manage:
        Command().create_parser("manage.py", "mailqueue").parse_args(example.args)
    else:
        cli.parser().parse_args(example.args)
