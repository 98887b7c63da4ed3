"""Find the installed plugins (``deepaas.v2.model`` entry points) and load them.

A plugin that fails to import stops start-up with one line naming the
plugin, its entry point and the exception: DEEPaaS 2.x silently served a
fake test model instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Sequence
from typing import Any

from stevedore import extension, named

from deepaas.model.v2.wrapper import ModelError, ModelWrapper, instantiate

NAMESPACE = "deepaas.v2.model"


class PluginLoadError(Exception):
    """No plugin, a missing plugin, or a plugin that cannot be loaded."""


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """Where a model's code lives: enough for a worker process to load it."""

    name: str  # the model name used in URLs (the entry-point name)
    target: str  # "package.module" or "package.module:Attribute"


def import_target(target: str) -> Any:
    """Import ``module[:attr.path]`` the way an entry point does."""
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attr_path.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def load(spec: PluginSpec) -> ModelWrapper:
    """Import, instantiate and wrap one plugin; errors name the plugin."""
    try:
        obj = instantiate(import_target(spec.target))
    except Exception as exc:
        raise PluginLoadError(
            f"cannot load model {spec.name!r} (entry point {spec.target}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        return ModelWrapper(spec.name, obj)
    except ModelError as exc:
        raise PluginLoadError(str(exc)) from exc


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
    """List the plugins to serve: all installed, or those named (in order)."""

    def on_failure(_manager: Any, entrypoint: Any, exc: BaseException) -> None:
        raise PluginLoadError(
            f"cannot load model {entrypoint.name!r} (entry point "
            f"{entrypoint.value}): {type(exc).__name__}: {exc}"
        ) from exc

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
        installed = sorted(declared)
        raise PluginLoadError(
            f"model(s) {', '.join(sorted(missing))} not installed; installed: "
            f"{', '.join(installed) or 'none'}"
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
    # One spec per name: the same entry point may be listed twice (a package
    # installed and also on the path, as under tox).
    seen = {ext.name: ext.entry_point.value for ext in manager}
    specs = [PluginSpec(name, target) for name, target in seen.items()]
    if not specs:
        raise PluginLoadError(NO_PLUGIN_HELP)
    return specs
