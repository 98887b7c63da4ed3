"""``--model-repository DIR``: every model file in DIR, served as a model.

Each model file in DIR (``.onnx``, ``.pt``/``.pth``, ``.pt2``, ``.keras``)
and each TensorFlow SavedModel directory is the model named after it (the
file's name without its suffix: ``DIR/resnet.onnx`` is ``resnet``), with an
optional ``DIR/NAME.toml`` (:mod:`deepaas.frameworks.model_config`).
Other files are left alone (labels files, READMEs).

At start-up, in the API process (:meth:`Repository.open`): the folder is
listed, names and configs checked, and every file described by a probe
child (:mod:`deepaas.frameworks.probe`: the framework is imported there,
not here); then each model becomes a :class:`FileModel` for its
:class:`~deepaas.model.v2.wrapper.ModelWrapper`. Whatever is wrong, with
any file, stops start-up: one line per problem, each naming its file
(a :class:`~deepaas.model.loading.PluginLoadError`, as broken plugins are
reported).

Workers load a repository model through :func:`deepaas.model.loading.load`
like any plugin: its :class:`~deepaas.model.loading.PluginSpec` has origin
:data:`REPOSITORY` and the model file as target.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

from deepaas.engine.devices import CPU, Device, DeviceError, Nvml
from deepaas.engine.process import child_env
from deepaas.engine.selection import select_devices
from deepaas.frameworks import kind_of
from deepaas.frameworks.model_config import (
    ConfigFileError,
    ModelConfig,
    config_path,
    read_config,
)
from deepaas.frameworks.probe import Described, ProbeJob, describe_all
from deepaas.frameworks.served import FileModel
from deepaas.frameworks.unchanged import ENV, record
from deepaas.model.loading import PluginLoadError, PluginSpec
from deepaas.model.v2.wrapper import ModelError, ModelWrapper

#: Kinds whose NAME.toml may declare datatypes and shapes: TorchScript
#: archives (a ``.pt2`` program refuses them when it is loaded).
_SIGNED = (".pt", ".pth", ".pt2")

#: ``PluginSpec.origin`` of a repository model.
REPOSITORY = "repository"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One model of the repository: its name, file and config."""

    name: str
    path: str  # absolute
    config: ModelConfig

    @property
    def spec(self) -> PluginSpec:
        return PluginSpec(self.name, self.path, REPOSITORY)

    @property
    def files(self) -> list[str]:
        """What the model is made of: its file, its NAME.toml (present or
        not: one that appears later changes the model) and its labels."""
        toml = self.config.path or config_path(self.path, self.name)
        labels = [self.config.labels] if self.config.labels else []
        return [self.path, toml, *labels]


def _usable_name(name: str) -> bool:
    """As a given plugin's name: letters, digits, '-', '_' and '.' (URLs)."""
    return (
        bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()
    )


def scan(folder: str) -> tuple[list[Entry], list[str]]:
    """The models in ``folder``, by name; and the problems found, one line
    each (a config that cannot be used, two files of one name...)."""
    root = os.path.abspath(folder)
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a folder"
        return [], [f"model repository {folder} {what}"]
    files: dict[str, list[str]] = {}
    configs: set[str] = set()
    for item in sorted(os.listdir(root)):
        if item.startswith("."):
            continue
        path = os.path.join(root, item)
        if item.endswith(".toml") and os.path.isfile(path):
            configs.add(item[: -len(".toml")])
        elif kind_of(path) is not None:
            name = item if os.path.isdir(path) else os.path.splitext(item)[0]
            files.setdefault(name, []).append(path)
    problems: list[str] = []
    entries: list[Entry] = []
    for name, paths in files.items():
        if len(paths) > 1:
            problems.append(
                f"{' and '.join(paths)}: two model files named {name!r}; rename "
                "one (a model is named after its file)"
            )
            continue
        if not _usable_name(name):
            problems.append(
                f"{paths[0]}: {name!r} is not usable as a model name in URLs "
                "(letters, digits, '-', '_' and '.'); rename the file"
            )
            continue
        try:
            config = read_config(config_path(paths[0], name))
        except ConfigFileError as exc:
            problems.append(str(exc))
            continue
        if config.signature is not None and kind_of(paths[0]) not in _SIGNED:
            problems.append(
                f"{config.path}: inputs and outputs with datatype and shape are "
                f"for TorchScript archives; {paths[0]} describes its own "
                'tensors: give names only, e.g. inputs = ["x"], or leave them out'
            )
            continue
        entries.append(Entry(name, paths[0], config))
    for name in sorted(configs - set(files)):
        problems.append(
            f"{os.path.join(root, name + '.toml')}: no model file {name}.* beside "
            "it; name the config after its model file (resnet.onnx: resnet.toml)"
        )
    if not files and not problems:
        problems.append(
            f"model repository {folder} holds no model file (.onnx, .pt, .pth, "
            ".pt2, .keras or a SavedModel directory)"
        )
    return entries, problems


class Repository:
    """The repository's models, described and ready to be served."""

    def __init__(
        self,
        folder: str,
        entries: Sequence[Entry],
        models: Mapping[str, FileModel],
        records: Mapping[str, str] | None = None,
    ):
        self.folder = folder
        self.entries = {entry.name: entry for entry in entries}
        self.models = dict(models)
        # Each model's files as they were described (deepaas.frameworks.unchanged).
        self.records = dict(records or {})

    @classmethod
    def open(cls, folder: str, env: Mapping[str, str]) -> Repository:
        """Scan ``folder`` and describe its files (probe children with
        environment ``env``); a :class:`PluginLoadError` reports every
        problem, one line each."""
        entries, problems = scan(folder)
        # Before the probes: a file replaced while one reads it is a change.
        records = {entry.name: record(entry.files) for entry in entries}
        jobs = [ProbeJob(e.path, e.config.signature) for e in entries]
        models: dict[str, FileModel] = {}
        for entry, found in zip(entries, describe_all(jobs, env), strict=True):
            if not isinstance(found, Described):
                problems.append(found)
                continue
            try:
                models[entry.name] = FileModel(
                    entry.name, entry.path, entry.config, found
                )
            except ConfigFileError as exc:
                problems.append(str(exc))
        if problems:
            raise PluginLoadError("\n".join(problems))
        return cls(folder, entries, models, records)

    @property
    def specs(self) -> list[PluginSpec]:
        return [entry.spec for entry in self.entries.values()]

    def worker_env(self, name: str, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of model ``name``'s workers: ``base`` and the
        record of its files, which a worker checks before it loads them."""
        return {**base, ENV: self.records[name]}

    def workers(self, name: str, default: int) -> int:
        """Worker processes of model ``name``: its config's, else ``default``."""
        return self.entries[name].config.workers or default

    def devices(
        self, name: str, selected: Sequence[Device], nvml: Nvml | None
    ) -> tuple[Device, ...]:
        """Where model ``name`` runs: the config's ``devices`` (``cpu``,
        ``auto``, or GPUs among the server's ``selected``), else ``selected``."""
        config = self.entries[name].config
        wanted = config.devices
        if wanted is None or wanted.lower() == "auto":
            return tuple(selected)
        if wanted.lower() == "cpu":
            return (CPU,)
        where = config.where("devices")
        try:
            listed = select_devices(wanted, nvml)
        except DeviceError as exc:
            raise PluginLoadError(f"{where}: {exc}") from None
        chosen = []
        for device in listed:
            match = next((d for d in selected if _same(d, device)), None)
            if match is None:
                shown = ", ".join(d.label for d in selected)
                raise PluginLoadError(
                    f"{where}: {device.label} is not among the server's devices "
                    f"({shown}; --devices)"
                )
            chosen.append(match)
        return tuple(chosen)


def _same(a: Device, b: Device) -> bool:
    if a.uuid and b.uuid:
        return a.uuid == b.uuid
    return a.index is not None and a.index == b.index


def open_repository(
    folder: str,
    base_env: Mapping[str, str] | None,
    extra_path: Sequence[str],
    plugins: Sequence[PluginSpec],
) -> tuple[Repository, dict[str, ModelWrapper]]:
    """The repository in ``folder`` and its models' wrappers, beside
    ``plugins``: a name both have stops start-up. Probes run with
    ``base_env`` (None: this process's) on the CPU, ``extra_path`` first on
    their ``PYTHONPATH``, as workers would."""
    env = child_env(
        os.environ if base_env is None else base_env, [CPU], None, extra_path
    )
    taken = {spec.name: spec for spec in plugins}
    repository = Repository.open(folder, env)
    problems = []
    for name in sorted(set(repository.entries) & set(taken)):
        plugin = taken[name]
        problems.append(
            f"{repository.entries[name].path}: model name {name!r} is also the "
            f"{plugin.origin} {plugin.target}; rename the file, or give the plugin "
            "another name (NAME=TARGET)"
        )
    wrappers = {}
    for name, model in repository.models.items():
        try:
            wrappers[name] = ModelWrapper(name, model)
        except ModelError as exc:  # a signature the engine refuses
            problems.append(f"{repository.entries[name].path}: {exc.detail}")
    if problems:
        raise PluginLoadError("\n".join(problems))
    return repository, wrappers
