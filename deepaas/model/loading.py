"""Find the installed plugins (``deepaas.v2.model`` entry points) and load them.

A plugin that fails to import stops start-up with one line naming the
plugin, its entry point, the exception and where it was raised (the file
and line in the plugin's own code): DEEPaaS 2.x silently served a fake test
model instead. Every broken plugin gets its line, not only the first; the
exceptions are kept (:attr:`PluginLoadError.causes`) for a full traceback.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import traceback
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from stevedore import extension, named

from deepaas.model import sources
from deepaas.model.v2.wrapper import ModelError, ModelWrapper, instantiate

NAMESPACE = "deepaas.v2.model"


class PluginLoadError(Exception):
    """No plugin, a missing plugin, or plugins that cannot be loaded.

    The message has one line per problem; ``causes`` holds the exceptions the
    plugins raised (their tracebacks are what ``--debug`` prints).
    """

    def __init__(self, message: str, causes: Iterable[BaseException] = ()) -> None:
        super().__init__(message)
        self.causes = tuple(causes)

    @classmethod
    def combine(cls, errors: Sequence[PluginLoadError]) -> PluginLoadError:
        """One error reporting all of ``errors``, one line each."""
        if len(errors) == 1:
            return errors[0]
        return cls(
            "\n".join(str(e) for e in errors),
            [cause for e in errors for cause in e.causes],
        )


def _folder(path: str | None) -> str:
    return os.path.dirname(os.path.abspath(path or "")) + os.sep


_STDLIB = _folder(traceback.__file__)  # importlib/ is in it
_NOT_PLUGIN_CODE = (_folder(extension.__file__), _folder(os.path.dirname(__file__)))
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def _machinery(path: str) -> bool:
    """Frozen importlib, the standard library (not what is installed in it),
    stevedore or deepaas: never where a plugin broke."""
    if path.startswith(("<", *_NOT_PLUGIN_CODE)):
        return True
    return path.startswith(_STDLIB) and not any(p in path for p in _INSTALLED)


def _frames(tb: TracebackType | None) -> list[tuple[str, str, int]]:
    """(module name, file, line) of each frame, outermost first."""
    return [
        (frame.f_globals.get("__name__", ""), frame.f_code.co_filename, lineno)
        for frame, lineno in traceback.walk_tb(tb)
    ]


def where(exc: BaseException, target: str) -> str | None:
    """The file and line to look at, as ``/path/api.py:3``; None if unknown.

    The innermost frame of the plugin's own package (the call into a library
    that failed, or the line that raised); else the innermost frame outside
    the import machinery, the standard library and deepaas. A syntax error
    names the line it is on.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    module, _ = sources.split(target)
    if sources.is_file(module):  # imported under the file's stem
        package = os.path.splitext(os.path.basename(module))[0]
    else:
        package = module.split(".")[0]
    frames = _frames(exc.__traceback__)
    own = [
        (path, line)
        for name, path, line in frames
        if name == package or name.startswith(package + ".")
    ]
    others = [(path, line) for _, path, line in frames if not _machinery(path)]
    found = own or others
    if not found:
        return None
    path, line = found[-1]
    return f"{path}:{line}"


def _failure(
    name: str, target: str, exc: BaseException, origin: str = "entry point"
) -> PluginLoadError:
    # A SyntaxError's text carries its location, given below.
    detail = exc.msg if isinstance(exc, SyntaxError) and exc.msg else exc
    text = f"{type(exc).__name__}: {detail}".rstrip(": ")
    location = where(exc, target)
    suffix = f", at {location}" if location else ""
    message = f"cannot load model {name!r} ({origin} {target}): {text}{suffix}"
    return PluginLoadError(" ".join(message.split()), [exc])


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """Where a model's code lives: enough for a worker process to load it."""

    name: str  # the model name used in URLs (the entry-point name)
    target: str  # "package.module" or "package.module:Attribute", or a file's
    origin: str = "entry point"  # or "plugin" (deepaas-run FILE, --plugin)


def import_target(target: str) -> Any:
    """Import ``module[:attr.path]`` the way an entry point does; the module
    may be a Python file (:mod:`deepaas.model.sources`)."""
    return sources.import_target(target)


def load(spec: PluginSpec) -> ModelWrapper:
    """Import, instantiate and wrap one plugin; errors name the plugin."""
    try:
        obj = instantiate(import_target(spec.target))
    except Exception as exc:
        raise _failure(spec.name, spec.target, exc, spec.origin) from exc
    try:
        return ModelWrapper(spec.name, obj)
    except ModelError as exc:
        raise PluginLoadError(str(exc)) from exc


def load_all(specs: Sequence[PluginSpec]) -> dict[str, ModelWrapper]:
    """:func:`load` each plugin; a :class:`PluginLoadError` names every broken one."""
    wrappers: dict[str, ModelWrapper] = {}
    errors: list[PluginLoadError] = []
    for spec in specs:
        try:
            wrappers[spec.name] = load(spec)
        except PluginLoadError as exc:
            errors.append(exc)
    if errors:
        raise PluginLoadError.combine(errors)
    return wrappers


NO_PLUGIN_HELP = (
    "no model plugin is installed. Install one (a package with a "
    f"'{NAMESPACE}' entry point), for instance the bundled example: "
    "pip install ./plugins-example"
)


def _declared_targets() -> dict[str, list[str]]:
    """Installed entry-point names and their targets, without importing any."""
    declared: dict[str, list[str]] = {}
    for entry_point in importlib.metadata.entry_points(group=NAMESPACE):
        targets = declared.setdefault(entry_point.name, [])
        if entry_point.value not in targets:
            targets.append(entry_point.value)
    return declared


def discover(names: Sequence[str] = ()) -> list[PluginSpec]:
    """List the plugins to serve: all installed, or those named (in order).

    Imports them: a :class:`PluginLoadError` reports every one that is
    missing or broken, one line each.
    """
    errors: list[PluginLoadError] = []
    broken: set[str] = set()

    def on_failure(_manager: Any, entrypoint: Any, exc: BaseException) -> None:
        error = _failure(entrypoint.name, entrypoint.value, exc)
        error.__cause__ = exc
        errors.append(error)
        broken.add(entrypoint.name)

    declared = _declared_targets()
    for name in names or declared:
        targets = declared.get(name, [])
        if len(targets) > 1:
            # stevedore would pick one silently (or crash naming module plugins)
            raise PluginLoadError(
                f"model name {name!r} is declared twice ({' and '.join(targets)}); "
                "uninstall one of them"
            )

    def on_missing(missing: Any) -> None:
        missing = sorted(set(missing) - broken)  # stevedore counts those too
        if not missing:
            return
        installed = sorted(declared)
        errors.insert(
            0,
            PluginLoadError(
                f"model(s) {', '.join(missing)} not installed; installed: "
                f"{', '.join(installed) or 'none'}"
            ),
        )

    # stevedore imports the plugins it lists; with names given it imports only
    # those, so a broken plugin nobody asked for cannot stop start-up.
    manager: extension.ExtensionManager[Any]
    if names:
        manager = named.NamedExtensionManager(
            NAMESPACE,
            names=list(names),
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=on_missing,
        )
    else:
        manager = extension.ExtensionManager(
            NAMESPACE, on_load_failure_callback=on_failure
        )
    if errors:
        raise PluginLoadError.combine(errors)
    # One spec per name: the same entry point may be listed twice (a package
    # installed and also on the path, as under tox).
    seen = {ext.name: ext.entry_point.value for ext in manager}
    specs = [PluginSpec(name, target) for name, target in seen.items()]
    if not specs:
        raise PluginLoadError(NO_PLUGIN_HELP)
    return specs


class PluginUsageError(ValueError):
    """A plugin given on the command line that cannot be used as written."""


def _model_name_of(module: str) -> str:
    if sources.is_file(module):
        return os.path.splitext(os.path.basename(module))[0]
    return module.rsplit(".", 1)[-1]


def given_specs(entries: Sequence[str]) -> list[PluginSpec]:
    """The plugins given as ``deepaas-run FILE`` or ``--plugin TARGET``.

    An entry is ``TARGET`` or ``NAME=TARGET``; the model's name is NAME, else
    the module's name (its last part) or the file's name without ``.py``.
    A file is checked here (it must exist) and given as an absolute path,
    so that workers find it too; nothing is imported yet.
    """
    specs: list[PluginSpec] = []
    seen: dict[str, str] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        if not sep:
            name, target = "", entry
        name, target = name.strip(), target.strip()
        module, attr = sources.split(target)
        if not module:
            raise PluginUsageError(f"plugin {entry!r}: no module or file given")
        if sources.is_file(module):
            path = os.path.abspath(module)
            if not os.path.exists(path):
                raise PluginUsageError(f"plugin file {module} does not exist")
            if not os.path.isfile(path) or not path.endswith(".py"):
                raise PluginUsageError(
                    f"plugin file {module} is not a Python file (path/to/model.py)"
                )
            target = f"{path}:{attr}" if attr else path
        name = name or _model_name_of(module)
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
