"""Find the installed plugins (``deepaas.v2.model`` entry points), check
the plugins given on the command line (``deepaas-run TARGET``,
``--plugin``), and load them.

A plugin that fails to import stops start-up with one line naming the
model, where its code is (``entry point TARGET`` for an installed one,
``plugin TARGET`` for a given one), the exception and where it was raised
(the file and line in the plugin's own code): DEEPaaS 2.x silently served a
fake test model instead. Every broken plugin gets its line, not only the
first; the exceptions are kept (:attr:`PluginLoadError.causes`) for a full
traceback.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import os
import traceback
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from stevedore import extension, named

from deepaas.model import sources
from deepaas.model.v2.plugin_calls import PluginExited
from deepaas.model.v2.wrapper import ModelError, ModelWrapper, instantiate

NAMESPACE = "deepaas.v2.model"


class PluginLoadError(Exception):
    """No plugin, a missing plugin, or plugins that cannot be loaded.

    The message has one line per problem; ``causes`` holds the exceptions the
    plugins raised (their tracebacks are what ``--debug`` prints).
    """

    def __init__(
        self, message: str, causes: Iterable[BaseException] = (), usage: bool = False
    ) -> None:
        super().__init__(message)
        self.causes = tuple(causes)
        #: A mistake on the command line (``deepaas-run`` exits 2), not a
        #: plugin that broke (exit 1): a given target that is no plugin.
        self.usage = usage

    @classmethod
    def combine(cls, errors: Sequence[PluginLoadError]) -> PluginLoadError:
        """One error reporting all of ``errors``, one line each."""
        if len(errors) == 1:
            return errors[0]
        return cls(
            "\n".join(str(e) for e in errors),
            [cause for e in errors for cause in e.causes],
            usage=all(e.usage for e in errors),
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
    own_file = None
    if sources.is_file(module):  # imported under the file's stem
        package = os.path.splitext(os.path.basename(module))[0]
        own_file = os.path.abspath(module)
    else:
        package = module.split(".")[0]
    frames = _frames(exc.__traceback__)
    own = [
        (path, line)
        for name, path, line in frames
        if name == package or name.startswith(package + ".") or path == own_file
    ]
    others = [(path, line) for _, path, line in frames if not _machinery(path)]
    found = own or others
    if not found:
        return None
    path, line = found[-1]
    return f"{path}:{line}"


def defined_at(func: Any) -> str | None:
    """Where a plugin's function is defined, as ``/path/api.py:3``; None
    for what has no Python source (a builtin, a C extension's)."""
    try:
        code = inspect.unwrap(getattr(func, "__func__", func)).__code__
    except (AttributeError, ValueError):
        return None
    return f"{code.co_filename}:{code.co_firstlineno}"


def _message(
    name: str, target: str, origin: str, text: str, location: str | None
) -> str:
    """``cannot load model 'NAME' (ORIGIN TARGET): TEXT, at LOCATION``."""
    suffix = f", at {location}" if location else ""
    message = f"cannot load model {name!r} ({origin} {target}): {text}{suffix}"
    return " ".join(message.split())


def _failure(
    name: str, target: str, exc: BaseException, origin: str = "entry point"
) -> PluginLoadError:
    # A SyntaxError's text carries its location, given below.
    detail = exc.msg if isinstance(exc, SyntaxError) and exc.msg else exc
    text = f"{type(exc).__name__}: {detail}".rstrip(": ")
    # A model file's errors name the file already; deepaas's code is not its.
    location = None if origin == "repository" else where(exc, target)
    return PluginLoadError(_message(name, target, origin, text, location), [exc])


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """Where a model's code lives: enough for a worker process to load it."""

    name: str  # the model name used in URLs (the entry point's, or NAME=)
    target: str  # "package.module" or "package.module:Attribute", or a file's
    #: "entry point" (installed) or "plugin" (deepaas-run FILE, --plugin); by
    #: default "plugin" for a file (no entry point names one), else "entry point";
    #: "repository" for a model file of --model-repository (the file's path).
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.origin:
            module, _ = sources.split(self.target)
            origin = "plugin" if sources.is_file(module) else "entry point"
            object.__setattr__(self, "origin", origin)


#: What a plugin may define (contract, section 1); a given target with none
#: of them is not a plugin (``--plugin json``).
PLUGIN_FUNCTIONS = (
    "get_metadata",
    "warm",
    "get_predict_args",
    "predict",
    "predict_batch",
    "get_train_args",
    "train",
    "get_infer_signature",
)


def _described(obj: Any) -> str:
    if inspect.ismodule(obj):
        return f"module {obj.__name__}"
    return f"{type(obj).__name__} object"


def _not_a_plugin(spec: PluginSpec, obj: Any) -> PluginLoadError:
    """A given target that defines none of :data:`PLUGIN_FUNCTIONS`: a typo,
    or the wrong module (``--plugin json``). An installed entry point with
    none is still served (every function is optional, contract section 1)."""
    folders = (
        list(getattr(obj, "__path__", None) or ()) if inspect.ismodule(obj) else []
    )
    if folders and getattr(obj, "__file__", None) is None:
        # A folder without __init__.py imports as a namespace package.
        folder = os.path.relpath(folders[0])
        text = (
            f"{folder} is a folder (no __init__.py), not a plugin: "
            f"{instead_of_folder(folder, obj.__name__)}"
        )
    else:
        text = (
            f"{_described(obj)} has none of the DEEPaaS plugin functions "
            f"({', '.join(PLUGIN_FUNCTIONS)}); name the module, class or object "
            "that defines them (module:Attribute)"
        )
    message = _message(spec.name, spec.target, spec.origin, text, None)
    return PluginLoadError(message, usage=True)


def import_target(target: str) -> Any:
    """Import ``module[:attr.path]`` the way an entry point does; the module
    may be a Python file (:mod:`deepaas.model.sources`)."""
    return sources.import_target(target)


def load(spec: PluginSpec) -> ModelWrapper:
    """Import, instantiate and wrap one plugin; errors name the plugin and,
    where there is one, the file and line to look at.

    A model of a ``--model-repository`` (origin ``repository``, its file as
    target) is made by deepaas (:mod:`deepaas.frameworks.served`): this
    loads the file, on this process's device (a worker's).
    """
    try:
        if spec.origin == "repository":
            from deepaas.frameworks import served

            obj = served.open_in_worker(spec.name, spec.target)
        else:
            obj = instantiate(import_target(spec.target))
    except Exception as exc:
        raise _failure(spec.name, spec.target, exc, spec.origin) from exc
    except SystemExit as exc:  # would end the server, silently
        exited = PluginExited("while being loaded", exc).with_traceback(
            exc.__traceback__
        )
        raise _failure(spec.name, spec.target, exited, spec.origin) from exc
    if spec.origin == "plugin" and not any(
        callable(getattr(obj, name, None)) for name in PLUGIN_FUNCTIONS
    ):
        raise _not_a_plugin(spec, obj)
    try:
        return ModelWrapper(spec.name, obj)
    except ModelError as exc:
        location = defined_at(exc.source) if exc.source is not None else None
        message = _message(spec.name, spec.target, spec.origin, exc.detail, location)
        raise PluginLoadError(message) from exc
    except Exception as exc:  # get_predict_args() raised, say
        raise _failure(spec.name, spec.target, exc, spec.origin) from exc


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


def instead_of_folder(folder: str, package: str | None) -> str:
    """What to give instead of ``folder``: a Python file in it (one it has,
    if any) or a module in it, as ``package.module`` when ``package`` (the
    folder's module name) is known."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    files = [
        n for n in names if n.endswith(".py") and n != "__init__.py" and n[0] != "."
    ]
    stem = os.path.splitext(files[0])[0] if files else "model"
    module = f"{package}.{stem}" if package else "package.module"
    return (
        f"give a plugin file in it ({os.path.join(folder, stem + '.py')}), "
        f"or a module importable from here (--plugin {module})"
    )
