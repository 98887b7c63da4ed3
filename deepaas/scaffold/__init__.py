"""Starting points that deepaas writes for its users.

- :mod:`deepaas.scaffold.plugin` (``deepaas-cli new NAME``): a plugin
  package with a small working model, a test and a README, ready for
  ``pip install -e NAME && deepaas-run --model-name NAME``;
- :mod:`deepaas.scaffold.container` (``deepaas-cli dockerize``): a
  Dockerfile for the plugin package in a directory, which
  :mod:`deepaas.scaffold.package` finds (its name, models and metadata).

The files are written from templates kept as package data under
``file-templates/`` and filled in with :class:`string.Template` (``$name``): the
templates read as the files they become, and no template engine is needed.
"""

from __future__ import annotations

from importlib import resources
from string import Template

# The templates' folder, in this package (package data: see pyproject.toml).
TEMPLATES = "file-templates"


class ScaffoldError(Exception):
    """The command cannot do what it was asked; the message says why and
    what to do instead. Nothing was written.

    ``usage``: the request was wrong (a bad name, a directory in the way),
    not the machine (a file that cannot be written): exit status 2, not 1.
    """

    def __init__(self, message: str, *, usage: bool = True) -> None:
        super().__init__(message)
        self.usage = usage


def render(template: str, values: dict[str, str]) -> str:
    """The text of ``file-templates/<template>`` with its ``$names`` filled in.

    ``substitute`` (not ``safe_substitute``): a placeholder without a value
    is a bug of deepaas, found by the tests, never a half-filled file.
    """
    text = resources.files(__package__).joinpath(f"{TEMPLATES}/{template}").read_text()
    return Template(text).substitute(values)


def refusal(exc: OSError, what: str) -> ScaffoldError:
    """A refusal (exit status 2, nothing written) for an error met while
    checking a path before anything is written: ``what`` and why, in one
    line (``cannot use X: File name too long: nothing written``)."""
    where = (
        f" ({exc.filename})" if exc.filename and str(exc.filename) not in what else ""
    )
    reason = exc.strerror or str(exc)
    return ScaffoldError(f"{what}{where}: {reason}: nothing written")
