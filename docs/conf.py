"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs docs/_build/html``."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the checkout, when mailqueue is not installed

# Autodoc imports the Django integration modules; they need settings to exist,
# not to say anything. A documentation build has no site of its own.
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure()

project = "mailqueue"
author = "mailqueue developers"
copyright = "mailqueue developers"
release = importlib.metadata.version("mailqueue")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "mailqueue_settings",
    "plugin_docstrings",  # the mailqueue-plugins directive
    "plugin_options",  # the mailqueue-options directive
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"mailqueue {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
autoclass_content = "class"

# The plugin modules' docstrings are written in fixed sections (definition
# lists); they render as they are, with nothing to convert.
default_role = "literal"
