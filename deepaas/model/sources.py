"""Where a plugin's code is: plugin files, ``--plugin`` targets, watching.

A target is what an entry point says (``package.module`` or
``package.module:Attribute``), or a Python file (``path/to/model.py``, or
``path/to/model.py:Attribute``) that ``deepaas-run path/to/model.py``
serves without packaging. A file is imported under its own name (the
file's stem) with its folder first on ``sys.path``, so that it can import
the modules beside it; workers and trainings import it the same way from
the same absolute path.

For ``--reload``: :func:`watch_roots` says what to watch for a model (the
plugin file, or the folder of the top-level package of the plugin's
module), :func:`scan` reads the files' times and sizes, and :func:`forget`
drops the plugin's modules from ``sys.modules`` so that the next import
reads them again.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

#: Packages never forgotten (their own files are not watched either).
_NEVER_FORGET = ("deepaas",)


def split(target: str) -> tuple[str, str]:
    """(module or file, attribute path): ``a/b.py:Model`` -> (``a/b.py``,
    ``Model``). Only a colon followed by a name separates them."""
    head, sep, attr = target.rpartition(":")
    if sep and head and attr.replace(".", "").replace("_", "").isalnum():
        return head.strip(), attr.strip()
    return target.strip(), ""


def _has_separator(text: str) -> bool:
    return os.sep in text or bool(os.altsep and os.altsep in text)


def is_file(module: str) -> bool:
    """Whether the module part of a resolved target names a file, not a
    module: it ends in ``.py`` or holds a path separator (a plugin file
    given on the command line is made absolute, so it has one).

    Only the spelling counts here, never what exists in the current
    folder: an entry point's ``my_pkg.api`` stays a module wherever the
    server runs. :func:`is_path` decides for what a user typed.
    """
    return module.endswith(".py") or _has_separator(module)


def is_module_name(text: str) -> bool:
    """Whether ``text`` can be imported as a (dotted) module name."""
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def is_path(module: str) -> bool:
    """Whether the module part of a target typed on the command line
    (``deepaas-run TARGET``, ``--plugin TARGET``) is a path, not a module.

    A path ends in ``.py``, holds a path separator, or names an existing
    file (``model.txt``), or an existing folder that no import could name
    (``my-models``). A bare name of a folder that is a valid module name
    (``my_pkg``) stays a module: a package is a folder.
    """
    if is_file(module) or os.path.isfile(module):
        return True
    return os.path.isdir(module) and not is_module_name(module)


def _module_name(path: str) -> str:
    """The file's stem, unless another module of that name is imported
    (the standard library's ``test``, say): then a name of its own."""
    stem = os.path.splitext(os.path.basename(path))[0]
    known = sys.modules.get(stem)
    if known is None or getattr(known, "__file__", None) == path:
        return stem
    return f"_deepaas_plugin_{stem}"


def import_file(path: str) -> ModuleType:
    """Import the Python file ``path`` (absolute) as a module, afresh."""
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the modules beside it import
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_target(target: str) -> Any:
    """Import ``module[:attr.path]`` (or a file's) the way an entry point does."""
    module_name, attr_path = split(target)
    obj: Any
    if is_file(module_name):
        obj = import_file(os.path.abspath(module_name))
    else:
        obj = importlib.import_module(module_name)
    for attr in filter(None, attr_path.split(".")):
        obj = getattr(obj, attr)
    return obj


def _top_package(module_name: str) -> str:
    return module_name.split(".")[0]


def watch_roots(target: str) -> list[str]:
    """What to watch for the model served from ``target`` (once imported):
    the plugin file; or the folder of the module's top-level package (its
    ``.py`` files, at any depth); or the module's own file when it is not
    in a package (or is in deepaas)."""
    module_name, _ = split(target)
    if is_file(module_name):
        return [os.path.abspath(module_name)]
    module = sys.modules.get(module_name)
    own = getattr(module, "__file__", None)
    top_name = _top_package(module_name)
    top = sys.modules.get(top_name)
    top_file = getattr(top, "__file__", None)
    if top is None or top is module or not top_file or top_name in _NEVER_FORGET:
        return [own] if own else []
    return [os.path.dirname(top_file)]


def scan(roots: list[str]) -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of each watched file: the roots that are files,
    and the ``.py`` files under the roots that are folders."""
    found: dict[str, tuple[int, int]] = {}

    def add(path: str) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return  # gone (or being replaced): a change
        found[path] = (stat.st_mtime_ns, stat.st_size)

    for root in roots:
        if not os.path.isdir(root):
            add(root)
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            for name in names:
                if name.endswith(".py"):
                    add(os.path.join(folder, name))
    return found


def forget(target: str) -> None:
    """Drop the target's modules from ``sys.modules`` (its top-level
    package and every module under it), so that the next import reads
    their files again."""
    module_name, _ = split(target)
    if is_file(module_name):
        path = os.path.abspath(module_name)
        name = _module_name(path)
        if getattr(sys.modules.get(name), "__file__", None) == path:
            del sys.modules[name]
        importlib.invalidate_caches()
        return
    top = _top_package(module_name)
    prefix = module_name if top in _NEVER_FORGET else top
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
