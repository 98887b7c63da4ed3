"""The bundled ``demo_onnx`` example (``plugins-example``), served by a real
``deepaas-run``: its metadata, predict with pictures made here (Pillow),
bad uploads, Open Inference Protocol infer, batching seen in ``/metrics``
(never timed), and what it says where onnxruntime, Pillow and onnx are
missing.

Its model file is built by the server's worker, in this test's folder
(``$DEEPAAS_EXAMPLE_ONNX``), the first time it warms.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.deepaas_run import DeepaasRun
from tests.needs import needs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LABELS = ["red", "green", "blue"]
INSTALL = "pip install 'deepaas[onnx,image]' onnx"


def needs_runtimes() -> None:
    """Skip the calling test where the example cannot run."""
    needs("onnxruntime")
    needs("onnx")
    needs("PIL.Image")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache") / "colour_classifier.onnx"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_file: Path
) -> Iterator[DeepaasRun]:
    needs_runtimes()
    run = DeepaasRun(
        tmp_path_factory.mktemp("logs"),
        "--model-name",
        "demo_onnx",
        "--devices",
        "cpu",
        env={"DEEPAAS_EXAMPLE_ONNX": str(model_file)},
    )
    try:
        yield run.wait_ready()
    finally:
        run.close()


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 24)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def upload(
    server: DeepaasRun, data: bytes, query: str = "", model: str = "demo_onnx"
) -> tuple[int, Any]:
    boundary = "deepaasboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="picture.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    path = f"/v2/models/{model}/predict/{query}"
    status, raw, _ = server.call("POST", path, body, headers)
    return status, json.loads(raw)


def infer(server: DeepaasRun, images: np.ndarray) -> tuple[int, Any]:
    inputs = [
        {
            "name": "image",
            "datatype": "FP32",
            "shape": list(images.shape),
            "data": images.ravel().tolist(),
        }
    ]
    return server.request("POST", "/v2/models/demo_onnx/infer", {"inputs": inputs})


def batch_sizes(server: DeepaasRun) -> tuple[float, float]:
    """(calls, requests) that ``deepaas_batch_size`` has counted."""
    _, raw, _ = server.call("GET", "/metrics")
    found = []
    for what in ("count", "sum"):
        match = re.search(
            rf'^deepaas_batch_size_{what}{{model="demo_onnx"}} (\S+)$',
            raw.decode(),
            re.M,
        )
        found.append(float(match.group(1)) if match else 0.0)
    return found[0], found[1]


def test_metadata_and_the_model_file_built_at_warm(
    server: DeepaasRun, model_file: Path
) -> None:
    from deepaas_example import onnx_classifier

    status, meta = server.request("GET", "/v2/models/demo_onnx/")
    assert status == 200
    assert meta["labels"] == LABELS
    assert meta["model_file"] == str(model_file)
    status, oip = server.request("GET", "/v2/models/demo_onnx")
    assert status == 200
    assert oip["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
    ]
    assert oip["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    ]
    # the worker built it: the same bytes as a build here
    again = onnx_classifier.build_model(model_file.with_name("again.onnx"))
    assert model_file.read_bytes() == again.read_bytes()


@pytest.mark.parametrize(
    ("colour", "label"),
    [((230, 20, 30), "red"), ((10, 200, 40), "green"), ((0, 0, 255), "blue")],
)
def test_predict_classifies_an_uploaded_picture(
    server: DeepaasRun, colour: tuple[int, int, int], label: str
) -> None:
    status, answer = upload(server, png(colour))
    assert status == 200, answer
    labels = answer["labels"]
    assert labels[0]["label"] == label
    assert sorted(entry["label"] for entry in labels) == sorted(LABELS)
    assert labels[0]["probability"] > 0.9
    assert sum(entry["probability"] for entry in labels) == pytest.approx(1, abs=1e-5)
    status, answer = upload(server, png(colour, (3, 200)), "?top_k=1")  # resized
    assert status == 200, answer
    assert [entry["label"] for entry in answer["labels"]] == [label]


def test_bad_uploads_are_422_naming_the_argument(server: DeepaasRun) -> None:
    status, body = upload(server, b"%PDF-1.4 not a picture")
    assert status == 422
    assert body["message"].startswith(
        "argument 'image': the upload is not an image Pillow can read ("
    )
    assert body["message"].endswith("send a JPEG, PNG or other image file")
    assert "/tmp" not in body["message"]  # the temporary file's path is not said
    status, body = server.request("POST", "/v2/models/demo_onnx/predict/")
    assert (status, body) == (422, {"image": ["Missing data for required field."]})
    status, body = upload(server, png((255, 0, 0)), "?top_k=4")
    assert status == 422 and list(body) == ["top_k"]


def test_infer_takes_the_normalised_tensor(server: DeepaasRun) -> None:
    images = np.full((2, 3, 32, 32), -1.0, dtype=np.float32)
    images[0, 0] = 1.0  # red
    images[1, 2] = 1.0  # blue
    status, answer = infer(server, images)
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"]) == ("probabilities", "FP32")
    assert output["shape"] == [2, 3]
    probabilities = np.array(output["data"]).reshape(2, 3)
    assert probabilities.argmax(axis=1).tolist() == [0, 2]
    np.testing.assert_allclose(probabilities.sum(axis=1), [1, 1], rtol=1e-5)
    status, answer = infer(server, np.zeros((1, 3, 16, 16), dtype=np.float32))
    assert status == 400
    assert "input 'image' must have shape [-1, 3, 32, 32]" in answer["error"]


def test_a_bad_upload_fails_only_its_own_request_of_a_batch(
    tmp_path: Path, model_file: Path
) -> None:
    needs_runtimes()
    # A worker that waits (up to 30 s) for a full batch of 4: the four
    # requests below are one predict_batch call, whatever the timing.
    run = DeepaasRun(
        tmp_path,
        "--model-name",
        "demo_onnx",
        "--devices",
        "cpu",
        "--max-batch-size",
        "4",
        "--max-batch-delay",
        "30000",
        env={"DEEPAAS_EXAMPLE_ONNX": str(model_file)},
    )
    try:
        run.wait_ready()
        sent = [png((255, 0, 0)), b"not a picture", png((0, 0, 255)), png((0, 255, 0))]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda data: upload(run, data), sent))
        assert [status for status, _ in answers] == [200, 422, 200, 200]
        tops = [a["labels"][0]["label"] for _, a in answers[::2]]
        assert tops == ["red", "blue"]
        assert answers[3][1]["labels"][0]["label"] == "green"
        assert "argument 'image'" in answers[1][1]["message"]
        assert batch_sizes(run) == (1, 4)  # one call for the four
    finally:
        run.close()


# A folder whose sitecustomize hides onnxruntime, onnx and Pillow from the
# server and its workers, as if they were not installed.
HIDE = """import sys

for name in ("onnxruntime", "onnx", "PIL"):
    sys.modules[name] = None
"""


def test_without_its_packages_it_says_what_to_install_and_others_serve(
    tmp_path: Path,
) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE)
    run = DeepaasRun(
        tmp_path,
        "--model-name",
        "demo_onnx,demo",
        "--devices",
        "cpu",
        path=[hidden],
        env={"DEEPAAS_EXAMPLE_ONNX": str(tmp_path / "never.onnx")},
    )
    try:
        run.wait_ready()
        line = (
            f"demo_onnx needs onnxruntime, Pillow and onnx, not installed here: "
            f"{INSTALL}"
        )
        assert f"[demo_onnx/0] {line}; then restart the server" in run.output()
        # It warms all the same: a model that cannot warm would keep the
        # whole server not ready, the other examples with it.
        status, ready = run.request("GET", "/readyz")
        assert (status, ready["status"]) == (200, "ready")
        status, body = upload(run, b"any bytes")
        assert (status, body) == (503, {"message": line})
        images = np.zeros((1, 3, 32, 32), dtype=np.float32)
        assert infer(run, images) == (503, {"error": line})
        status, answer = run.request("POST", "/v2/models/demo/predict/")
        assert status == 200 and answer["warmed"] is True
        assert not (tmp_path / "never.onnx").exists()
    finally:
        run.close()


def test_the_api_documents_describe_the_upload(server: DeepaasRun) -> None:
    _, swagger = server.request("GET", "/swagger.json")
    params = swagger["paths"]["/v2/models/demo_onnx/predict/"]["post"]["parameters"]
    image = next(p for p in params if p["name"] == "image")
    assert (image["in"], image["type"], image["required"]) == (
        "formData",
        "file",
        True,
    )
    _, openapi = server.request("GET", "/openapi.json")
    body = openapi["paths"]["/v2/models/demo_onnx/predict/"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary"
    validator = needs("openapi_spec_validator")
    errors = validator.OpenAPIV2SpecValidator(swagger).iter_errors()
    # None: DEEPaaS 2.6.0's null default of the train route's deepaas_gpus
    # (tests/api/test_mapping_args.py)
    assert [e.message for e in errors if e.instance is not None] == []
    assert list(validator.OpenAPIV31SpecValidator(openapi).iter_errors()) == []
