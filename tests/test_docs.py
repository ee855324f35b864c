"""The documentation builds with warnings as errors, and covers every setting.

The build runs Sphinx as ``sphinx-build -W --keep-going`` would, in a fresh
process (the docs configure Django for themselves, so the test settings must
not leak into them), into a temporary directory. The settings reference is
generated from ``mailqueue_core.config.DEFAULTS`` by ``docs/_ext``, which
fails the build for a key nobody documented; the test checks the result
independently, in the built HTML.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from mailqueue_core.config import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _require_sphinx() -> None:
    try:
        import furo  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the docs need Sphinx and furo ({exc}): pip install -e '.[test]'")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_sphinx()
    out = tmp_path_factory.mktemp("docs")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-E",
        "-q",
        "-b",
        "html",
        "-d",
        str(out / "doctrees"),
        str(DOCS),
        str(out / "html"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(
            f"the docs do not build cleanly (exit {done.returncode}):\n"
            f"{done.stderr[-6000:]}\n{done.stdout[-2000:]}"
        )
    return out / "html"


def _expected_keys() -> list[str]:
    keys = []
    for key, value in DEFAULTS.items():
        keys.append(key)
        if isinstance(value, Mapping):
            keys += [f"{key}.{sub}" for sub in value]
    return keys


def _anchor(key: str) -> str:
    return "setting-" + re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


def test_the_docs_build_with_warnings_as_errors(built: Path) -> None:
    for page in ("index", "quickstart", "settings", "delivery", "plugins/installed", "api"):
        assert (built / f"{page}.html").is_file(), page


def test_the_settings_reference_covers_every_key_of_DEFAULTS(built: Path) -> None:
    page = html.unescape((built / "settings.html").read_text(encoding="utf-8"))
    missing = [key for key in _expected_keys() if f'id="{_anchor(key)}"' not in page]
    assert not missing, f"settings.html documents no entry for {missing}"
    # The printed defaults come from the code too: every key is in them.
    block = page.split("MAILQUEUE", 1)[1]
    for key in DEFAULTS:
        assert f'"{key}"' in re.sub(r"<[^>]+>", "", block), key


def test_installed_plugins_are_listed_through_their_entry_points(built: Path) -> None:
    from mailqueue_core.plugins import STORES, TRANSPORTS, installed

    page = html.unescape((built / "plugins" / "installed.html").read_text(encoding="utf-8"))
    headings = " ".join(re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h3.*?</h3>", page))
    for name in installed(STORES) + installed(TRANSPORTS):
        assert re.search(rf"\b{re.escape(name)}\b", headings), name
    text = re.sub(r"<[^>]+>", "", page)
    # Each plugin is described by its own module's docstring, not the base class's.
    assert "Subclasses MUST keep every promise" not in text
