"""Plugins given on the command line (``deepaas-run TARGET``, ``--plugin``):
``[NAME=]TARGET`` entries checked and turned into
:class:`~deepaas.model.loading.PluginSpec` s, before anything is imported.

What can be told from the entry alone is told here, in words that say what
to write instead (a folder given for a file, an empty name, two ``:``, a
name unusable in URLs, a name given twice); :mod:`deepaas.model.loading`
then imports and checks the plugins themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from deepaas.model import sources
from deepaas.model.loading import PluginSpec, instead_of_folder


class PluginUsageError(ValueError):
    """A plugin given on the command line that cannot be used as written."""


def _name_and_target(entry: str) -> tuple[str | None, str]:
    """``[NAME=]TARGET`` -> (NAME, or None when there is no ``=``; TARGET).

    An ``=`` in a path is part of the path: in an existing file's name, or
    before a path separator (``runs/lr=0.1/model.py``).
    """
    name, sep, target = entry.partition("=")
    if not sep or os.path.exists(entry.strip()) or sources.is_file(name):
        return None, entry.strip()
    return name.strip(), target.strip()


def _folder_error(module: str) -> PluginUsageError:
    """A folder given as a plugin's file (``dir/``, ``./dir``)."""
    package = os.path.normpath(module).replace(os.sep, ".")
    if os.path.isabs(module) or not sources.is_module_name(package):
        package = ""
    return PluginUsageError(
        f"plugin {module} is a folder, not a Python file: "
        f"{instead_of_folder(module, package)}"
    )


def _checked_file(module: str) -> str:
    """The absolute path of the plugin file ``module`` names; a
    :class:`PluginUsageError` if it is missing, a folder, or not ``.py``."""
    path = os.path.abspath(module)
    if os.path.isdir(path):
        raise _folder_error(module)
    if not os.path.exists(path):
        raise PluginUsageError(f"plugin file {module} does not exist")
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise PluginUsageError(
            f"plugin file {module} is not a Python file (path/to/model.py)"
        )
    return path


def given_specs(entries: Sequence[str]) -> list[PluginSpec]:
    """The plugins given as ``deepaas-run TARGET`` or ``--plugin TARGET``.

    An entry is ``TARGET`` or ``NAME=TARGET``; the model's name is NAME, else
    the module's name (its last part) or the file's name without ``.py``.
    TARGET is a file (:func:`sources.is_path`: it ends in ``.py``, holds a
    path separator or names an existing file) or else a module, either
    with ``:Attribute``. A file is checked here (an existing ``.py`` file)
    and given as an absolute path, so that workers find it too; nothing is
    imported yet.
    """
    specs: list[PluginSpec] = []
    seen: dict[str, str] = {}
    for entry in entries:
        name, target = _name_and_target(entry)
        if name == "":
            raise PluginUsageError(
                f"empty model name in {entry!r}: write NAME={target}, or "
                f"{target} alone to name the model after its module or file"
            )
        if not target.partition(":")[0] and not os.path.exists(target):
            raise PluginUsageError(f"plugin {entry!r}: no module or file given")
        if target.count(":") > 1:
            raise PluginUsageError(
                f"more than one ':' in {entry!r}: write TARGET:Attribute (a "
                "dotted attribute path, such as module:Class.instance, is fine)"
            )
        if target.endswith(":"):
            raise PluginUsageError(
                f"empty attribute after ':' in {entry!r}: write "
                f"{target}Attribute, or {target[:-1]} alone to serve the "
                "module's functions"
            )
        module, attr = sources.split(target)
        if sources.is_path(module):
            path = _checked_file(module)
            target = f"{path}:{attr}" if attr else path
            name = name or os.path.splitext(os.path.basename(path))[0]
        name = name or module.rsplit(".", 1)[-1]
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise PluginUsageError(
                f"plugin {entry!r}: model name {name!r} is not usable in URLs "
                "(letters, digits, '-', '_' and '.'); choose one as NAME=TARGET"
            )
        if name in seen:
            raise PluginUsageError(
                f"model name {name!r} given twice ({seen[name]} and {entry}); "
                "choose another for one of them as NAME=TARGET"
            )
        seen[name] = entry
        specs.append(PluginSpec(name, target, "plugin"))
    return specs
