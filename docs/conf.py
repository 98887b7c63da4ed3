"""Sphinx configuration for the deepaas documentation (MyST Markdown)."""

from __future__ import annotations

import os
import sys

# Import deepaas from this checkout when it is not installed (Read the Docs
# installs it; a local build may not have).
sys.path.insert(0, os.path.abspath(".."))

from deepaas import __version__

project = "deepaas"
author = "deepaas developers"
copyright = "deepaas developers"
version = __version__
release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

source_suffix = {".md": "markdown"}
root_doc = "index"
# docs/README.md is the guide to writing these pages, not one of them
exclude_patterns = ["_build", "README.md"]

html_theme = "furo"
html_title = f"deepaas {release}"
