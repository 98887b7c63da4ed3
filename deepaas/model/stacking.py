"""Several infer calls as one: stack their inputs, split the outputs back.

For a tensor-native plugin whose signature has a batch axis
(``max_batch_size`` > 0, :mod:`deepaas.model.signature`), the dispatcher
may hand a worker several calls at once, all of the same ``group`` (the same
non-batch shapes; their datatypes are the signature's). The worker then
concatenates each input along axis 0 (:func:`concatenate`), calls
``infer`` once, checks it returned as many rows as it was given, and cuts
each output back into the calls' rows (:func:`split`), in order.

Pure numpy; the worker (:mod:`deepaas.engine.worker`, through
:meth:`deepaas.model.v2.wrapper.ModelWrapper.infer_batch`) uses it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from deepaas.exceptions import TensorError

T = TypeVar("T")
R = TypeVar("R")


def rows_of(arrays: Mapping[str, np.ndarray]) -> int:
    """The batch size (axis 0) of one call's inputs."""
    first = next(iter(arrays.values()))
    return int(first.shape[0])


def concatenate(calls: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The calls' inputs stacked along axis 0, input by input (the first
    call's names and order). One call is returned as it is (no copy)."""
    if len(calls) == 1:
        return dict(calls[0])
    return {
        name: np.concatenate([call[name] for call in calls], axis=0)
        for name in calls[0]
    }


def split(
    outputs: Mapping[str, np.ndarray], counts: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """``outputs`` cut along axis 0 into consecutive parts of ``counts``
    rows: one dict per call, in order. The parts are views (no copy); the
    caller checked that each output has ``sum(counts)`` rows."""
    if len(counts) == 1:
        return [dict(outputs)]
    bounds = list(itertools.accumulate(counts, initial=0))
    return [
        {name: array[start:stop] for name, array in outputs.items()}
        for start, stop in itertools.pairwise(bounds)
    ]


def each_alone(run: Callable[[T], R], items: Sequence[T]) -> list[R | TensorError]:
    """``run(item)`` for each item of a batch the model refused as input
    (a :class:`~deepaas.exceptions.TensorError`, a 400: a runtime checks its
    arrays before it computes), since the refusal may be one item's alone:
    an item refused again gets its error in its place, and the others of
    the batch are answered."""
    results: list[R | TensorError] = []
    for item in items:
        try:
            results.append(run(item))
        except TensorError as exc:
            results.append(exc)
    return results
