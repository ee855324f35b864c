"""The command line a person expects: help that says each default, --version, global
options before or after the subcommand, and --settings found as manage.py finds it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import django
import pytest
from django.core.management import call_command

import mailqueue_core
from mailqueue_core import cli
from mailqueue_core.commands import SUBCOMMANDS

SUBCOMMAND_NAMES = [sub.name for sub in SUBCOMMANDS]

#: Options that take a value and what their help must say of its default.
DEFAULTS = {
    ("flush", "--interval"): "(default: 5)",
    ("flush", "--workers"): "(default: 1)",
    ("flush", "--limit"): "(default: when nothing due is left)",
    ("flush", "--time-limit"): "(default: when nothing due is left)",
    ("status", "--max-age"): "(default: 3600)",
    ("status", "--max-dead"): "(default: 0)",
    ("status", "--max-stuck"): "(default: 0)",
    ("dead", "--limit"): "(default: 100)",
    ("purge", "--older-than"): "(required)",
    ("list", "--state"): "(required)",
}
RST = re.compile(r"``|:(doc|ref|class|meth|mod|attr):`")


def help_of(run, *args: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run(*args)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def standalone_help(*args: str, capsys) -> str:
    return help_of(lambda *a: cli.main(list(a)), *args, "--help", capsys=capsys)


def manage_help(*args: str, capsys) -> str:
    return help_of(lambda *a: call_command("mailqueue", *a), *args, "--help", capsys=capsys)


def entries(text: str) -> dict[str, str]:
    """Each option of a help page (its long name) -> its help text."""
    found: dict[str, str] = {}
    name = None
    for line in text.split("\nsubcommands:")[0].splitlines():
        match = re.match(r"  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if match:
            name = re.findall(r"--?[\w-]+", match.group(1))[-1]
            takes_value = " " in match.group(1).split(",")[-1].strip()
            found[name] = ("VALUE " if takes_value else "") + (match.group(2) or "")
        elif name is not None and line.startswith(" " * 8):  # help on the next line
            found[name] += line.strip()
        else:
            name = None
    return found


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option


@pytest.mark.parametrize("subcommand", SUBCOMMAND_NAMES)
@pytest.mark.parametrize("show", [standalone_help, manage_help], ids=["standalone", "manage.py"])
def test_every_option_has_help_and_says_its_default(subcommand, show, capsys):
    text = show(subcommand, capsys=capsys)
    description = next(s.description for s in SUBCOMMANDS if s.name == subcommand)
    assert description.split("\n")[0] in text
    options = entries(text)
    assert "--verbosity" in options and "--settings" in options
    for name, help_text in options.items():
        assert help_text.removeprefix("VALUE ").strip(), f"{subcommand} {name} has no help"
        expected = DEFAULTS.get((subcommand, name))
        if expected is not None:
            assert expected in help_text, (subcommand, name, help_text)
        elif help_text.startswith("VALUE ") and name != "--help":
            assert "(default: " in help_text, (subcommand, name, help_text)
    assert not RST.search(text)


def test_the_main_pages_list_the_subcommands_without_markup(capsys):
    for text in (standalone_help(capsys=capsys), manage_help(capsys=capsys)):
        for sub in SUBCOMMANDS:
            assert re.search(rf"\n\s+{sub.name}\s+{re.escape(sub.summary)}", text)
        assert not RST.search(text)
    assert "(default: 1)" in entries(standalone_help(capsys=capsys))["--verbosity"]


def test_version(capsys):
    assert mailqueue_core.__version__ == importlib.metadata.version("mailqueue")
    assert help_of(cli.main, ["--version"], capsys=capsys) == (
        f"mailqueue {mailqueue_core.__version__}\n"
    )
    shown = help_of(lambda: call_command("mailqueue", "--version"), capsys=capsys)
    assert shown == f"mailqueue {mailqueue_core.__version__} (Django {django.get_version()})\n"


def test_global_options_work_before_or_after_the_subcommand(capsys):
    store = f"memory://{uuid.uuid4().hex}"
    for argv in (
        ["--store", store, "-v", "0", "status", "--json"],
        ["status", "--json", "--store", store, "-v", "0"],
        ["--store", "memory://other", "status", "--store", store, "--json"],  # after wins
    ):
        assert cli.main(argv) == 0
        assert json.loads(capsys.readouterr().out)["ready"] == 0


def test_standalone_flush_needs_a_transport(capsys):
    assert cli.main(["flush", "--store", f"memory://{uuid.uuid4().hex}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailqueue: configuration error: flush needs --transport URL")
    assert "smtp://localhost:25 for this machine's own mail server" in err


@pytest.fixture
def restore_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_a_settings_module_that_cannot_be_imported_is_one_line(capsys, restore_path):
    assert cli.main(["status", "--settings", "no_such_site.settings"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "mailqueue: configuration error: cannot import the settings module "
        "'no_such_site.settings' (No module named 'no_such_site'): run mailqueue in the "
        "directory that holds manage.py, or give --pythonpath DIR (looked in the current "
        "directory and the Python path)"
    )


def test_a_misspelt_settings_module_says_which_part_was_not_found(capsys, restore_path):
    assert cli.main(["status", "--settings", "mailqueue_core.setings"]) == 1
    assert capsys.readouterr().err == (
        "mailqueue: configuration error: cannot import the settings module "
        "'mailqueue_core.setings' (No module named 'mailqueue_core.setings'): mailqueue_core "
        "was found, mailqueue_core.setings in it was not: check the name\n"
    )


def test_a_settings_module_that_fails_is_one_line(tmp_path, capsys, restore_path):
    module = f"failing_settings_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("import os\nSECRET_KEY = os.environ['NO_SUCH']\n")
    assert cli.main(["status", "--settings", module, "--pythonpath", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"mailqueue: configuration error: the settings module {module!r} failed: "
        "KeyError: 'NO_SUCH' (-v 3 shows the traceback)"
    )


# -- as a person runs it: the installed command, in a site's directory --------------------


def site(tmp_path: Path, **settings: object) -> Path:
    """A project as django-admin startproject lays it out: mysite/settings.py beside manage.py."""
    root = tmp_path / "site"
    (root / "mysite").mkdir(parents=True)
    (root / "mysite" / "__init__.py").write_text("")
    lines = [f"{key} = {value!r}" for key, value in settings.items()]
    (root / "mysite" / "settings.py").write_text("\n".join(lines) + "\n")
    (root / "manage.py").write_text("# beside mysite/, as startproject makes it\n")
    return root


def mailqueue(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    command = Path(sys.executable).with_name("mailqueue")
    return subprocess.run(
        [str(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_settings_beside_manage_py_and_from_elsewhere_with_pythonpath(tmp_path):
    root = site(
        tmp_path,
        SECRET_KEY="x",
        INSTALLED_APPS=["mailqueue_core"],
        MAILQUEUE={"STORE": "memory://site"},
    )
    beside = mailqueue("--settings", "mysite.settings", "status", "--json", cwd=root)
    assert beside.returncode == 0, beside.stderr
    assert json.loads(beside.stdout)["ready"] == 0
    elsewhere = mailqueue(
        "status", "--settings", "mysite.settings", "--pythonpath", str(root), cwd=tmp_path
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout.startswith("ready        0\n")


def test_a_site_whose_django_set_up_fails_is_one_line(tmp_path):
    root = site(tmp_path, SECRET_KEY="x", INSTALLED_APPS=["no_such_app"], MAILQUEUE={})
    done = mailqueue("status", "--settings", "mysite.settings", cwd=root)
    assert done.returncode == 1
    assert done.stderr == (
        "mailqueue: configuration error: Django's set-up with 'mysite.settings' failed: "
        "ModuleNotFoundError: No module named 'no_such_app' (-v 3 shows the traceback)\n"
    )
