"""An image classifier served from an ONNX file with ``deepaas.frameworks``.

``warm()`` loads the model with :func:`deepaas.frameworks.load`, on the
worker's device (``DEEPAAS_DEVICE``: a GPU with onnxruntime-gpu, else the
CPU); ``predict_batch`` decodes the uploaded pictures with Pillow, resizes
and normalises them, runs the whole batch at once and answers each request
with its top labels::

    curl -X POST -F image=@cat.jpg "http://127.0.0.1:5000/v2/models/demo_onnx/predict/?top_k=2"

It is a tensor-native plugin too (``get_infer_signature`` and ``infer``):
Open Inference Protocol clients send the decoded, normalised tensor.

The model is tiny and needs no training: it averages the picture's colour
and says whether it is mostly red, green or blue (the weights are written
below, not learnt). A real plugin ships its exported ``.onnx`` file in its
package, or downloads it once; this one builds its file the first time it
is warmed, with the onnx helper API, into the user's cache directory
(``~/.cache/deepaas/examples/``, or the path in ``$DEEPAAS_EXAMPLE_ONNX``),
so that nothing is downloaded and no binary file is kept in git. Building
it in ``warm()`` rather than when the package is built works the same with
``pip install -e plugins-example`` (no build step runs) and ``pip install
plugins-example``, and needs onnx only where the model is served for the
first time. ``python -m deepaas_example.onnx_classifier`` builds it ahead
of time (in an image, say) and prints where.

onnxruntime, Pillow and onnx are not dependencies of this package
(``pip install 'deepaas[onnx,image]' onnx`` installs them): the module
imports none of them at the top, so ``deepaas-run`` and the other example
models run without them. This model then still warms, says in the log what
to install, and answers predict and infer with 503 and that line. It does
not fail to warm: a model that cannot warm keeps the whole server's
``/readyz`` at 503, and this example is installed wherever the others are
(``make run``, the Docker image, its Kubernetes deployment), where the
others must go on serving.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib

import numpy as np
import platformdirs
from aiohttp import web
from webargs import fields, validate

from deepaas import frameworks

INSTALL = "pip install 'deepaas[onnx,image]' onnx"
# module -> the distribution that provides it
NEEDS = {"onnxruntime": "onnxruntime", "PIL": "Pillow"}
BUILD_NEEDS = {"onnx": "onnx"}  # only to build the model file

MODEL_ENV = "DEEPAAS_EXAMPLE_ONNX"
MODEL_VERSION = 1  # part of the file name: a changed model gets a new file
DEFAULT_MODEL = (
    pathlib.Path(platformdirs.user_cache_dir("deepaas"))
    / "examples"
    / f"colour_classifier-{MODEL_VERSION}.onnx"
)

LABELS = ["red", "green", "blue"]
SIZE = 32  # pictures are resized to SIZE x SIZE pixels
MEAN = np.array([0.5, 0.5, 0.5], dtype=np.float32)  # per channel, of pixel / 255
STD = np.array([0.5, 0.5, 0.5], dtype=np.float32)

# predict_batch gets at most 16 requests at once, infer at most 16 images;
# no max_delay_ms: deepaas's adaptive window decides how long a batch waits.
batching = {"max_batch_size": 16}

LOG = logging.getLogger(__name__)

_model = None  # the runtime: one per worker process, loaded by warm()
_unavailable: str | None = None  # why it cannot run here (set by warm)


def model_path() -> pathlib.Path:
    """The model file: ``$DEEPAAS_EXAMPLE_ONNX`` or the user's cache dir."""
    return pathlib.Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL)


def get_metadata():
    return {
        "id": "demo_onnx",
        "name": "demo_onnx",
        "description": "Example image classifier on a tiny ONNX model, loaded "
        "with deepaas.frameworks: is the picture mostly red, green or blue?",
        "author": "deepaas developers",
        "version": "1.0.0",
        "license": "Apache-2.0",
        "labels": LABELS,
        "model_file": str(model_path()),
    }


# -- the model file -----------------------------------------------------------


def build_model(path: pathlib.Path) -> pathlib.Path:
    """Write the model to ``path``; the same bytes every time.

    image [N, 3, 32, 32] FP32 (normalised RGB) -> probabilities [N, 3] FP32:
    the mean of each channel, a linear layer, a softmax.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # A class's score is 4 x (its channel's mean - the mean of the three):
    # a pure red picture (1, -1, -1 once normalised) scores 5.3, -2.7, -2.7.
    weights = (4 * (np.eye(3) - 1 / 3)).astype(np.float32)  # [channel, class]
    bias = np.zeros(3, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
            helper.make_node("Gemm", ["means", "weights", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "colour_classifier",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]
            )
        ],
        [
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["N", len(LABELS)]
            )
        ],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="deepaas_example",
    )
    model.ir_version = 8  # what every onnxruntime since 1.14 reads
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a worker warming at the same time never reads half
    # a file (several workers may build it at once: same bytes, last wins).
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, path)
    return path


def ensure_model() -> pathlib.Path:
    """The model file, built first if it is not there yet."""
    path = model_path()
    if not path.exists():
        build_model(path)
    return path


def missing() -> str | None:
    """One line naming what to install, or None when nothing is missing
    (onnx only counts while the model file is still to be built)."""
    needs = dict(NEEDS) if model_path().exists() else {**NEEDS, **BUILD_NEEDS}
    absent = [dist for module, dist in needs.items() if not _installed(module)]
    if not absent:
        return None
    names = " and ".join([", ".join(absent[:-1]), absent[-1]] if absent[1:] else absent)
    return f"demo_onnx needs {names}, not installed here: {INSTALL}"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- serving ------------------------------------------------------------------


def warm():
    """Load the model on this worker's device; build its file if needed.

    Without onnxruntime or Pillow (or onnx, to build the file) it warms all
    the same, and predict and infer answer 503 saying what to install."""
    global _model, _unavailable
    _unavailable = missing()
    if _unavailable:
        LOG.warning("%s; then restart the server", _unavailable)
        return
    # device=None: the worker's device (DEEPAAS_DEVICE), else the CPU.
    _model = frameworks.load(ensure_model())


def loaded():
    """The runtime; 503 naming what to install when it cannot run here."""
    if _model is None and _unavailable is None:  # deepaas-run --nowarm
        warm()
    if _model is None:
        raise web.HTTPServiceUnavailable(text=_unavailable)
    return _model


def get_predict_args():
    return {
        "image": fields.Field(
            required=True,
            metadata={
                "type": "file",
                "location": "form",
                "description": "A picture: JPEG, PNG, ... anything Pillow reads",
            },
        ),
        "top_k": fields.Int(
            load_default=len(LABELS),
            validate=validate.Range(min=1, max=len(LABELS)),
            metadata={"description": "How many labels to answer, best first"},
        ),
    }


# Validates (and documents) predict's JSON.
schema = {
    "labels": fields.List(
        fields.Dict(keys=fields.Str()),
        required=True,
        metadata={"description": "[{label, probability}], most probable first"},
    ),
}


def predict(**kwargs):
    return predict_batch([kwargs])[0]


def predict_batch(batch):
    """One result per request, in order. The pictures are decoded one by
    one, then run as one batch; an upload that is no picture fails its own
    request only (422), not the others of its batch."""
    loaded()
    arrays = []  # per request: its image, or the 422 for its upload
    for kwargs in batch:
        try:
            arrays.append(to_array(kwargs["image"].filename))
        except web.HTTPUnprocessableEntity as exc:
            arrays.append(exc)
    images = [array for array in arrays if isinstance(array, np.ndarray)]
    rows = iter(infer(np.stack(images))["probabilities"] if images else ())
    return [
        top_labels(next(rows), kwargs["top_k"])
        if isinstance(array, np.ndarray)
        else array
        for kwargs, array in zip(batch, arrays, strict=True)
    ]


def top_labels(probabilities, k):
    best = np.argsort(-probabilities, kind="stable")[:k]
    return {
        "labels": [
            {"label": LABELS[i], "probability": float(probabilities[i])} for i in best
        ]
    }


def to_array(filename):
    """The picture in ``filename`` as the model's input: [3, 32, 32] FP32."""
    from PIL import Image, ImageOps

    try:
        with Image.open(filename) as opened:
            picture = ImageOps.exif_transpose(opened).convert("RGB")
            picture = picture.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            pixels = np.asarray(picture, dtype=np.float32) / 255  # [H, W, 3]
    except Exception as exc:  # Pillow's many errors for what is no picture
        # Its message names the temporary file: of no use to the client.
        reason = str(exc).replace(f"'{filename}'", "").replace(filename, "it")
        raise web.HTTPUnprocessableEntity(
            text=f"argument 'image': the upload is not an image Pillow can read "
            f"({' '.join(reason.split())}); send a JPEG, PNG or other image file"
        ) from None
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)  # channels first


# -- Open Inference Protocol: the tensors as they are ----------------------------


def get_infer_signature():
    # Without the batch axis, which max_batch_size adds: a request sends
    # [N, 3, 32, 32], N at most 16.
    return {
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, SIZE, SIZE]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [len(LABELS)]}
        ],
        "max_batch_size": batching["max_batch_size"],
    }


def infer(image):
    """image [N, 3, 32, 32] FP32 -> {"probabilities": [N, 3] FP32}."""
    return {"probabilities": loaded().run({"image": image})["probabilities"]}


if __name__ == "__main__":
    print(ensure_model())
