"""A model file as a plugin: what ``--model-repository`` serves.

A :class:`FileModel` is a tensor-native plugin (:mod:`deepaas.model.signature`)
that deepaas makes instead of a scientist writing it: ``get_infer_signature``
and ``infer(**arrays)`` from the file's :class:`~deepaas.frameworks.Runtime`,
``predict``/``predict_batch`` for the DEEPaaS route (arguments from its inputs,
:mod:`deepaas.frameworks.arguments`), metadata and batching from its
NAME.toml. So the engine serves it as any plugin: workers on their devices,
batching, deadlines, metrics, both protocols.

In the API process a FileModel is made from a probe's description
(:mod:`deepaas.frameworks.probe`) and never loads the file; in a worker it
loads the file on the worker's device (``DEEPAAS_DEVICE``) when it is made,
as it needs the model's tensors to say what it serves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from marshmallow import fields

from deepaas.exceptions import DeepaasError, TensorError
from deepaas.frameworks import arguments, images, unchanged
from deepaas.frameworks.base import Runtime
from deepaas.frameworks.model_config import ModelConfig, config_path, read_config
from deepaas.frameworks.probe import Described
from deepaas.frameworks.serving import ACCEPT, TORCHSCRIPT, Serving, plan
from deepaas.model import stacking
from deepaas.model.signature import InferOutputError, fits
from deepaas.oip.datatypes import datatype_of


class FileModel:
    """Model ``name``, the file ``path`` (see the module)."""

    def __init__(
        self,
        name: str,
        path: str,
        config: ModelConfig,
        described: Described | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.config = config
        self._runtime: Runtime | None = None
        if described is None:  # in a worker: the model says
            self._runtime = self._load()
            described = Described.of(self._runtime)
        toml = config.path or config_path(path, name)
        self.serving: Serving = plan(path, toml, config, described)
        serving = self.serving
        self._in = {t.name: t.file_name for t in serving.inputs}
        self._out = [(t.file_name, t.name, t.datatype) for t in serving.outputs]
        self.schema = arguments.response_fields(
            [(t.name, t.datatype, t.shape) for t in serving.outputs],
            serving.labels is not None,
        )
        if serving.max_batch_size > 0:
            self.batching: dict[str, Any] | None = {
                "max_batch_size": serving.max_batch_size
            }
            if serving.max_delay_ms is not None:  # else the adaptive window
                self.batching["max_delay_ms"] = serving.max_delay_ms
            self.predict_batch = self._predict_batch
        else:
            self.batching = None

    def _load(self) -> Runtime:
        from deepaas import frameworks

        return frameworks.load(
            self.path, signature=self.config.signature, threads=self.config.threads
        )

    # -- introspection (the API process) -------------------------------------

    def get_metadata(self) -> dict[str, Any]:
        framework = self.serving.framework
        file = os.path.basename(self.path)
        return {
            "name": self.name,
            "description": self.config.description
            or f"The model file {file}, served by deepaas ({framework}).",
            "model_file": file,
            "framework": framework,
        }

    def get_infer_signature(self) -> dict[str, Any]:
        return self.serving.signature()

    def get_predict_args(self) -> dict[str, fields.Field]:
        image = self.serving.image
        args: dict[str, fields.Field] = {}
        for tensor in self.serving.inputs:
            if image is not None and tensor.name == image.input:
                args[tensor.name] = fields.Field(
                    required=True,
                    metadata={
                        "type": "file",
                        "location": "form",
                        "description": image.describe(),
                    },
                )
            else:
                args[tensor.name] = arguments.TensorArg(
                    tensor.name, tensor.datatype, tensor.shape
                )
        return args

    # -- the model (workers) ---------------------------------------------------

    def warm(self) -> None:
        """Load the model (made in a worker, it is loaded already)."""
        if self._runtime is None:
            self._runtime = self._load()

    def infer(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        """One call of the model: inputs and outputs by their served names."""
        self._same_file(arrays)
        return self._run(arrays)

    def _run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`infer` of inputs whose names are checked already."""
        if self._runtime is None:
            self.warm()
        assert self._runtime is not None
        given = {self._in[name]: array for name, array in arrays.items()}
        outputs = self._runtime.run(given)
        if self.serving.framework == TORCHSCRIPT:
            self._check_declared(outputs)
        if self.serving.max_batch_size > 0:
            self._check_rows(len(next(iter(given.values()))), outputs)
        return {name: outputs[own] for own, name, _ in self._out}

    def _check_rows(self, rows: int, outputs: Mapping[str, np.ndarray]) -> None:
        """A batched model answers a row per input row: an output whose
        dynamic first axis is something else (a count of what was found)
        cannot be split per request, which a 500 says with the fix, not
        with the ``infer()`` nobody wrote."""
        for own, name, _ in self._out:
            array = outputs[own]
            if array.ndim == 0 or len(array) != rows:
                toml = os.path.basename(
                    self.config.path or config_path(self.path, self.name)
                )
                got = "no rows" if array.ndim == 0 else f"{len(array)} rows"
                raise InferOutputError(
                    f"model {self.name!r}: {os.path.basename(self.path)} returned "
                    f"{got} in output '{name}' for {rows} input rows, so its "
                    f"first axis is no batch axis; set max_batch_size = 0 in {toml}"
                )

    def _check_declared(self, outputs: Mapping[str, np.ndarray]) -> None:
        """A TorchScript archive's outputs against what NAME.toml declares
        (the file records nothing): a mistake there is a 500 naming the toml,
        on both routes, not one that speaks of an ``infer()`` nobody wrote
        (OIP) or an answer of the wrong shape (predict)."""
        assert self._runtime is not None
        # File names, not paths: the message is the client's answer.
        toml = os.path.basename(self.config.path or config_path(self.path, self.name))
        for info in self._runtime.outputs:
            array = outputs.get(info.name)
            if array is None or info.shape is None:
                continue
            datatype = datatype_of(array.dtype)
            shape = list(array.shape)
            if datatype != info.datatype or not fits(shape, info.shape):
                raise InferOutputError(
                    f"model {self.name!r}: {toml} declares output '{info.name}' "
                    f"as {info.describe()}, but {os.path.basename(self.path)} "
                    f"returned {datatype or array.dtype} {shape}: correct its "
                    "outputs in the toml (-1: any size)"
                )

    def predict(self, **kwargs: Any) -> dict[str, Any]:
        """One request of the DEEPaaS route (one item of a batched model)."""
        arrays = self._arrays(kwargs)
        if self.serving.max_batch_size > 0:
            arrays = {name: array[np.newaxis] for name, array in arrays.items()}
            return self._answer(self._run(arrays), 0)
        return self._answer(self._run(arrays), None)

    def _predict_batch(self, batch: list[dict[str, Any]]) -> list[Any]:
        """Requests of the DEEPaaS route as few calls as their shapes allow
        (inputs with a -1 axis may differ): one per set of equal shapes. A
        request whose image cannot be read fails alone, and so does one the
        model refuses as input (a set refused is tried one by one): the
        others of the batch are answered."""
        results: list[Any] = [None] * len(batch)
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, kwargs in enumerate(batch):
            try:
                arrays = self._arrays(kwargs)
            except images.ImageInputError as exc:
                results[index] = exc
                continue
            key = tuple(array.shape for array in arrays.values())
            groups.setdefault(key, []).append((index, arrays))
        for members in groups.values():
            try:
                outputs = self._run(_stacked(members))
            except TensorError as exc:  # refused as input: maybe one's alone
                if len(members) == 1:
                    results[members[0][0]] = exc
                    continue
                alone = stacking.each_alone(
                    lambda member: self._answer(self._run(_stacked([member])), 0),
                    members,
                )
                for (index, _), result in zip(members, alone, strict=True):
                    results[index] = result
                continue
            for row, (index, _) in enumerate(members):
                results[index] = self._answer(outputs, row)
        return results

    def _arrays(self, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The request's arguments as input arrays (an upload decoded)."""
        image = self.serving.image
        self._same_file(kwargs)
        arrays = {}
        for tensor in self.serving.inputs:
            value = kwargs[tensor.name]
            if image is not None and tensor.name == image.input:
                value = images.decode(value.filename, image)
            arrays[tensor.name] = value
        return arrays

    def _same_file(self, given: Mapping[str, Any]) -> None:
        """The request was checked in the API process against the model it
        described at start-up; a worker started since (a crash, a restart)
        loaded the file again. When that file was replaced by a model of
        other inputs, say so (a 503), rather than fail on a name (KeyError)."""
        names = [t.name for t in self.serving.inputs]
        sent = set(given) - {ACCEPT}  # the predict route's, not an input
        if sent == set(names):
            return
        file = os.path.basename(self.path)
        raise DeepaasError(
            503,
            f"model {self.name!r}: {file} changed since the server started (its "
            f"inputs are now {', '.join(map(repr, names))}, not "
            f"{', '.join(map(repr, sorted(sent)))}); restart the server to serve "
            "the new file",
        )

    def _answer(self, outputs: Mapping[str, np.ndarray], row: int | None) -> Any:
        """The predict answer of one request: row ``row`` of each output
        (all of it when the model has no batch axis)."""
        chosen = {
            # [row, ...]: an array even of one element (a BYTES [row] is a bare
            # bytes object, which the answer cannot encode)
            name: (datatype, outputs[name] if row is None else outputs[name][row, ...])
            for _, name, datatype in self._out
        }
        return arguments.answer(chosen, self.serving.labels, self.serving.top_k)


def _stacked(members: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """The arrays of requests of one shape, stacked along a new batch axis."""
    names = list(members[0][1])
    return {name: np.stack([arrays[name] for _, arrays in members]) for name in names}


def open_in_worker(name: str, path: str) -> FileModel:
    """Model ``name`` of a repository, in the worker: its NAME.toml read
    again, the model loaded on the worker's device; refused when its files
    changed since the server described them (:mod:`~deepaas.frameworks.unchanged`)."""
    unchanged.check(name, os.environ)
    return FileModel(name, path, read_config(config_path(path, name)))
