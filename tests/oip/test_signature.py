"""A tensor-native plugin's signature, without processes: what is accepted
as a declaration, which requests conform to it (and the 400s that say what
to change), what ``infer`` may return (the 500s that name the model), and
stacking calls into one batch and splitting the outputs back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from deepaas.exceptions import TensorError
from deepaas.model import stacking
from deepaas.model.loading import PluginLoadError, PluginSpec, load
from deepaas.model.signature import (
    InferOutputError,
    InferSignature,
    SignatureError,
    TensorSig,
    check_inputs,
    check_outputs,
    parse_signature,
)

IMAGE = {"name": "image", "datatype": "FP32", "shape": [3, -1]}
SCORES = {"name": "scores", "datatype": "FP32", "shape": [2]}


def signature(max_batch_size: int = 4, **extra: Any) -> InferSignature:
    return parse_signature(
        {
            "inputs": [IMAGE, {"name": "k", "datatype": "INT64", "shape": [1]}],
            "outputs": [SCORES],
            "max_batch_size": max_batch_size,
            **extra,
        }
    )


@dataclass(frozen=True)
class Tensor:
    """A decoded input, as :class:`deepaas.oip.tensors.InputTensor` has it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def tensor(name: str, array: np.ndarray, datatype: str | None = None) -> Tensor:
    kind = {"f": "FP32", "i": "INT64", "b": "BOOL", "O": "BYTES"}[array.dtype.kind]
    return Tensor(name, datatype or kind, array.shape, array)


def request(rows: int = 2, width: int = 5, k_rows: int | None = None) -> list[Tensor]:
    return [
        tensor("image", np.zeros((rows, 3, width), np.float32)),
        tensor("k", np.zeros((rows if k_rows is None else k_rows, 1), np.int64)),
    ]


# -- the declaration ------------------------------------------------------------


def test_a_signature_is_parsed_in_order_with_the_batch_axis_in_metadata():
    sig = signature()
    assert sig.batched and sig.max_batch_size == 4
    assert sig.inputs == (
        TensorSig("image", "FP32", (3, -1)),
        TensorSig("k", "INT64", (1,)),
    )
    assert sig.metadata(sig.inputs) == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 3, -1]},
        {"name": "k", "datatype": "INT64", "shape": [-1, 1]},
    ]
    assert sig.metadata(sig.outputs) == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 2]}
    ]


def test_the_largest_batch_axis_is_that_of_a_plugins_batching():
    assert signature(max_batch_size=256).max_batch_size == 256


def test_without_max_batch_size_shapes_are_as_declared():
    sig = parse_signature({"inputs": [IMAGE], "outputs": [SCORES]})
    assert not sig.batched
    assert sig.metadata(sig.inputs)[0]["shape"] == [3, -1]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([IMAGE], ["must return a dict", "got list"]),
        ({"inputs": [IMAGE]}, ["'outputs'", "non-empty list", "got None"]),
        ({"inputs": [], "outputs": [SCORES]}, ["'inputs'", "non-empty list"]),
        (
            {"inputs": [IMAGE], "outputs": [SCORES], "max_batch": 4},
            ["unknown key(s) 'max_batch'", "inputs, outputs, max_batch_size"],
        ),
        (
            {"inputs": [IMAGE], "outputs": [SCORES], "max_batch_size": -1},
            ["max_batch_size must be an integer >= 0", "-1"],
        ),
        (
            {"inputs": [IMAGE], "outputs": [SCORES], "max_batch_size": True},
            ["max_batch_size must be an integer"],
        ),
        (
            {"inputs": [IMAGE], "outputs": [SCORES], "max_batch_size": 257},
            ["max_batch_size must be at most 256", "got 257"],
        ),
        (
            {"inputs": [IMAGE], "outputs": [SCORES], "max_batch_size": 10**12},
            ["max_batch_size must be at most 256", "got 1000000000000"],
        ),
        (
            {"inputs": [{**IMAGE, "dims": [3]}], "outputs": [SCORES]},
            ["'inputs'[0]", "unknown key(s) 'dims'", "name, datatype, shape"],
        ),
        (
            {"inputs": [{"datatype": "FP32", "shape": [1]}], "outputs": [SCORES]},
            ["'inputs'[0] needs a 'name'"],
        ),
        (
            {"inputs": [{**IMAGE, "datatype": "fp32"}], "outputs": [SCORES]},
            ["datatype 'fp32' is not an OIP datatype", "upper case: 'FP32'"],
        ),
        (
            {"inputs": [{**IMAGE, "datatype": "FLOAT"}], "outputs": [SCORES]},
            ["datatype 'FLOAT'", "use one of BOOL, UINT8"],
        ),
        (
            {"inputs": [{**IMAGE, "shape": [3, 0]}], "outputs": [SCORES]},
            ["shape must be a list of axis sizes, each >= 1 or -1", "[3, 0]"],
        ),
        (
            {"inputs": [{**IMAGE, "shape": "3x4"}], "outputs": [SCORES]},
            ["('image'): shape must be a list"],
        ),
        (
            {"inputs": [IMAGE, IMAGE], "outputs": [SCORES]},
            ["name 'image' is given twice"],
        ),
        (
            {"inputs": [{**IMAGE, "shape": [1] * 33}], "outputs": [SCORES]},
            ["shape has 33 axes; at most 32"],
        ),
    ],
)
def test_a_malformed_signature_says_what_to_fix(value, words):
    with pytest.raises(SignatureError) as exc:
        parse_signature(value)
    for word in words:
        assert word in str(exc.value)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("NoInfer", ["get_infer_signature() is defined but infer() is not"]),
        ("NotADict", ["get_infer_signature() must return a dict", "got str"]),
        ("BadShape", ["'inputs'[0] ('x'): shape must be", "'any'"]),
        ("HugeBatch", ["max_batch_size must be at most 256", "got 257"]),
    ],
)
def test_a_bad_signature_is_a_load_error_naming_the_plugin_and_line(name, words):
    with pytest.raises(PluginLoadError) as exc:
        load(PluginSpec("bad", f"tests.plugins.bad_signatures:{name}"))
    message = str(exc.value)
    assert "cannot load model 'bad'" in message
    assert "bad_signatures.py:" in message  # the line of get_infer_signature
    for word in words:
        assert word in message


def test_infer_alone_is_not_a_declaration():
    wrapper = load(PluginSpec("helper", "tests.plugins.bad_signatures:InferHelper"))
    assert wrapper.infer_signature is None and not wrapper.has_infer


def test_a_signature_that_is_not_implemented_is_none():
    wrapper = load(PluginSpec("later", "tests.plugins.bad_signatures:NotYet"))
    assert wrapper.infer_signature is None


# -- requests -------------------------------------------------------------------


def test_a_conforming_request_gives_its_arrays_rows_and_group():
    tensors = request(rows=2, width=5)
    checked = check_inputs("m", signature(), tensors)
    assert list(checked.arrays) == ["image", "k"]
    assert checked.arrays["image"] is tensors[0].data
    assert checked.rows == 2
    assert checked.group == ((3, 5), (1,))
    # -1 takes any size: another width is another group, not an error.
    assert check_inputs("m", signature(), request(width=7)).group == ((3, 7), (1,))


def test_without_a_batch_axis_rows_are_zero():
    sig = parse_signature({"inputs": [IMAGE], "outputs": [SCORES]})
    checked = check_inputs("m", sig, [tensor("image", np.zeros((3, 4), np.float32))])
    assert checked.rows == 0


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        (
            [*request(), tensor("extra", np.zeros(1, np.int64))],
            [
                "model 'm' has no input 'extra'",
                "its inputs: 'image' (FP32 [-1, 3, -1]), 'k' (INT64 [-1, 1])",
            ],
        ),
        (request()[:1], ["model 'm' needs input(s) 'k' (INT64 [-1, 1])"]),
        (
            [request()[0], tensor("k", np.zeros((2, 1), np.float32))],
            ["input 'k' is INT64, not FP32; send it as INT64"],
        ),
        (
            [tensor("image", np.zeros((2, 4, 5), np.float32)), request()[1]],
            [
                "input 'image' must have shape [-1, 3, -1] (-1: any size), got "
                "[2, 4, 5] (axis 0 is the batch)"
            ],
        ),
        (
            [tensor("image", np.zeros((3, 5), np.float32)), request()[1]],
            ["must have shape [-1, 3, -1]", "got [3, 5]"],
        ),
        (
            request(rows=5),
            [
                "input 'image' has 5 rows (axis 0), more than the max_batch_size "
                "of model 'm' (4); send at most 4 rows per request"
            ],
        ),
        (request(rows=0), ["input 'image' has 0 rows; send at least one"]),
        (
            request(rows=2, k_rows=3),
            ["batch sizes (axis 0) differ ('image' 2, 'k' 3)"],
        ),
    ],
)
def test_a_request_that_does_not_conform_is_a_400_saying_what_to_change(tensors, words):
    with pytest.raises(TensorError) as exc:
        check_inputs("m", signature(), tensors)
    assert exc.value.status == 400
    for word in words:
        assert word in exc.value.message


# -- results ---------------------------------------------------------------------


def test_outputs_are_checked_and_made_plain_arrays():
    scores = np.ones((3, 2), np.float32).view(np.matrix)
    outputs = check_outputs("m", signature(), {"scores": scores}, rows=3)
    assert type(outputs["scores"]) is np.ndarray
    # Without a batch axis nothing counts rows; lists become arrays.
    sig = parse_signature({"inputs": [IMAGE], "outputs": [SCORES]})
    outputs = check_outputs("m", sig, {"scores": np.array([0.5, 1.5], "f4")}, 0)
    assert outputs["scores"].tolist() == [0.5, 1.5]


def test_bytes_outputs_take_bytes_and_str():
    text = {"name": "t", "datatype": "BYTES", "shape": [-1]}
    sig = parse_signature({"inputs": [IMAGE], "outputs": [text]})
    texts = np.array([b"a", "b"], dtype=object)
    assert check_outputs("m", sig, {"t": texts}, 0)["t"] is texts
    assert check_outputs("m", sig, {"t": np.array(["x", "yz"])}, 0)["t"].shape == (2,)
    with pytest.raises(InferOutputError, match="element 1 is int; a BYTES output"):
        check_outputs("m", sig, {"t": np.array([b"a", 3], dtype=object)}, 0)


@pytest.mark.parametrize(
    ("value", "rows", "words"),
    [
        ([1.0], 1, ["model 'm': infer() must return a dict", "got list"]),
        ({}, 1, ["returned no output 'scores' (FP32 [-1, 2])", "returned: nothing"]),
        (
            {"scores": np.ones((1, 2), "f4"), "debug": 1},
            1,
            ["returned output(s) 'debug' that get_infer_signature() does not declare"],
        ),
        (
            {"scores": np.ones((1, 2), "f8")},
            1,
            ["returned output 'scores' as FP64", "signature says FP32", "'float32'"],
        ),
        (
            {"scores": np.ones((1, 3), "f4")},
            1,
            ["output 'scores' of shape [1, 3]; its signature says [-1, 2]"],
        ),
        (
            {"scores": np.ones((2, 2), "f4")},
            3,
            [
                "model 'm': infer() returned 2 rows in output 'scores' for 3 input "
                "rows; return one row per input row"
            ],
        ),
        (
            {"scores": np.ones((1, 2), complex)},
            1,
            ["model 'm': infer(): output 'scores': numpy dtype complex128 has no"],
        ),
    ],
)
def test_wrong_outputs_are_an_error_naming_the_model(value, rows, words):
    with pytest.raises(InferOutputError) as exc:
        check_outputs("m", signature(), value, rows)
    for word in words:
        assert word in str(exc.value)


# -- stacking ----------------------------------------------------------------------


def test_calls_stack_along_axis_0_and_outputs_split_back_in_order():
    calls = [
        {"x": np.full((1, 2), 1.0), "t": np.array([b"a"], dtype=object)},
        {"x": np.full((3, 2), 2.0), "t": np.array([b"b", b"c", b"d"], dtype=object)},
        {"x": np.full((2, 2), 3.0), "t": np.array([b"e", b"f"], dtype=object)},
    ]
    counts = [stacking.rows_of(call) for call in calls]
    assert counts == [1, 3, 2]
    stacked = stacking.concatenate(calls)
    assert stacked["x"].shape == (6, 2)
    assert stacked["x"][:, 0].tolist() == [1, 2, 2, 2, 3, 3]
    assert stacked["t"].tolist() == [b"a", b"b", b"c", b"d", b"e", b"f"]
    parts = stacking.split({"y": stacked["x"] * 10, "t": stacked["t"]}, counts)
    assert [part["y"][:, 0].tolist() for part in parts] == [
        [10],
        [20, 20, 20],
        [30, 30],
    ]
    assert [part["t"].tolist() for part in parts] == [
        [b"a"],
        [b"b", b"c", b"d"],
        [b"e", b"f"],
    ]
    assert all(np.shares_memory(part["y"], parts[0]["y"].base) for part in parts)


def test_one_call_is_neither_copied_nor_split():
    call = {"x": np.ones((2, 2))}
    assert stacking.concatenate([call])["x"] is call["x"]
    assert stacking.split(call, [2])[0]["x"] is call["x"]


def test_infer_batch_runs_the_plugin_once_and_checks_rows():
    wrapper = load(PluginSpec("batcher", "tests.plugins.tensor_batcher"))
    calls = [
        {"x": np.array([[1.0, 2.0]], "f4")},
        {"x": np.array([[3.0, 4.0], [5.0, 6.0]], "f4")},
    ]
    first, second = wrapper.infer_batch(calls)
    assert first["y"].tolist() == [[10.0, 20.0]]
    assert second["y"].tolist() == [[30.0, 40.0], [50.0, 60.0]]
    assert first["rows"].tolist() == [[3]] and second["rows"].tolist() == [[3], [3]]
    calls[1]["x"][0, 0] = -9  # the plugin answers one row too few
    with pytest.raises(InferOutputError, match="returned 2 rows in output 'y' for 3"):
        wrapper.infer_batch(calls)
