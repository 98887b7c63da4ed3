"""``deepaas-run`` serving ONNX files from a model repository, beside an
entry-point plugin: metadata (OIP and DEEPaaS), infer with tritonclient,
predict with JSON lists and an image upload, both API documents, bad
requests, and batching seen in ``/metrics`` (never timed).

The batches are made observable without timing: model ``batched`` waits
up to 30 s for a full batch of 4 (``max_delay_ms``), so 4 concurrent
requests are one call as soon as the fourth arrives; ``deepaas_batch_size``
then counts one call of 4.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.deepaas_run import DeepaasRun, register_plugins
from tests.needs import needs
from tests.repository import models

needs("onnxruntime")
needs("onnx")
triton = needs("tritonclient.http")
PIL = needs("PIL.Image")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LABELS = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    repo = tmp_path_factory.mktemp("repository")
    models.save_onnx_linear(repo / "linear.onnx")
    (repo / "linear.toml").write_text(
        'description = "A linear classifier"\nlabels = "labels.txt"\ntop_k = 2\n'
    )
    (repo / "labels.txt").write_text("\n".join(LABELS) + "\n")
    models.save_onnx_linear(repo / "fixed.onnx", batch=2)
    models.save_onnx_linear(repo / "batched.onnx")
    (repo / "batched.toml").write_text("max_batch_size = 4\nmax_delay_ms = 30000\n")
    models.save_onnx_image(repo / "image.onnx")
    (repo / "image.toml").write_text(
        "workers = 2\nimage = {mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5]}\n"
    )
    plugins = tmp_path_factory.mktemp("plugins")
    register_plugins(plugins, "deepaas_test_repository", {"echo": "tests.plugins.echo"})
    run = DeepaasRun(
        tmp_path_factory.mktemp("logs"),
        "--model-name",
        "echo",
        "--devices",
        "cpu",
        path=[plugins],
        env={"DEEPAAS_MODEL_REPOSITORY": str(repo)},
    )
    try:
        yield run.wait_ready()
    finally:
        run.close()


def infer_json(server: DeepaasRun, model: str, x: list[list[float]]) -> tuple[int, Any]:
    inputs = [
        {"name": "x", "datatype": "FP32", "shape": [len(x), len(x[0])], "data": x}
    ]
    return server.request("POST", f"/v2/models/{model}/infer", {"inputs": inputs})


def predict(server: DeepaasRun, model: str, body: Any) -> tuple[int, Any]:
    return server.request("POST", f"/v2/models/{model}/predict/", body)


def batch_sizes(server: DeepaasRun, model: str) -> tuple[float, float]:
    """(calls, requests) the model's ``deepaas_batch_size`` has counted."""
    _, raw, _ = server.call("GET", "/metrics")
    text = raw.decode()
    found = []
    for what in ("count", "sum"):
        match = re.search(
            rf'^deepaas_batch_size_{what}{{model="{model}"}} (\S+)$', text, re.M
        )
        found.append(float(match.group(1)) if match else 0.0)
    return found[0], found[1]


def test_models_are_listed_beside_the_plugin(server: DeepaasRun) -> None:
    status, listing = server.request("GET", "/v2/models/")
    assert status == 200
    by_name = {m["name"]: m for m in listing["models"]}
    assert set(by_name) == {"batched", "echo", "fixed", "image", "linear"}
    assert by_name["linear"]["description"] == "A linear classifier"
    assert by_name["linear"]["framework"] == "onnxruntime"
    assert by_name["fixed"]["model_file"] == "fixed.onnx"


def test_oip_metadata_comes_from_the_file(server: DeepaasRun) -> None:
    status, meta = server.request("GET", "/v2/models/linear/versions/1")
    assert status == 200
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "best", "datatype": "INT64", "shape": [-1]},
    ]
    _, fixed = server.request("GET", "/v2/models/fixed/versions/1")
    assert fixed["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [2, 4]}]


def test_infer_with_tritonclient(server: DeepaasRun) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_model_ready("linear")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(
        "linear",
        [tensor],
        outputs=[
            triton.InferRequestedOutput("scores", binary_data=True),
            triton.InferRequestedOutput("best"),
        ],
    )
    np.testing.assert_allclose(result.as_numpy("scores"), models.linear(x), rtol=1e-5)
    assert result.as_numpy("best").tolist() == models.linear(x).argmax(1).tolist()


def test_predict_takes_json_lists_and_answers_labels(server: DeepaasRun) -> None:
    x = [0.5, -1.0, 2.0, 0.25]
    status, answer = predict(server, "linear", {"x": x})
    assert status == 200, answer
    scores = models.linear(np.array([x]))[0]
    predictions = answer["predictions"]
    np.testing.assert_allclose(predictions["scores"], scores, rtol=1e-5)
    assert predictions["best"] == int(scores.argmax())
    probabilities = np.exp(scores) / np.exp(scores).sum()
    top = np.argsort(-probabilities)[:2]
    assert [p["label"] for p in predictions["labels"]] == [LABELS[i] for i in top]
    assert predictions["labels"][0]["probability"] == pytest.approx(
        probabilities[top[0]], rel=1e-5
    )
    # a model without a batch axis takes its whole shape
    status, answer = predict(server, "fixed", {"x": [x, x]})
    assert status == 200
    assert len(answer["predictions"]["scores"]) == 2


def test_bad_tensors_are_refused_naming_the_input(server: DeepaasRun) -> None:
    status, body = predict(server, "linear", {"x": [1, 2, 3]})
    assert status == 422
    assert body == {
        "x": ["input 'x' takes FP32 [4]: a list of 4 numbers; got a list of shape [3]"]
    }
    status, body = predict(server, "linear", {"x": ["a", 1, 2, 3]})
    assert (status, body) == (
        422,
        {"x": ["input 'x': element 0 is 'a', but FP32 needs a number"]},
    )
    status, body = server.request(
        "POST",
        "/v2/models/linear/infer",
        {
            "inputs": [
                {"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1] * 4}
            ]
        },
    )
    assert (status, body) == (
        400,
        {"error": "input 'x' is FP32, not FP64; send it as FP32"},
    )
    status, body = infer_json(server, "linear", [[1.0, 2.0]])
    assert status == 400 and "input 'x' must have shape [-1, 4]" in body["error"]
    status, body = infer_json(server, "linear", [[1.0] * 4] * 17)  # default: 16
    assert status == 400 and "max_batch_size of model 'linear' (16)" in body["error"]
    status, body = infer_json(server, "fixed", [[1.0] * 4])
    assert status == 400 and "input 'x' must have shape [2, 4]" in body["error"]


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    PIL.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def upload(server: DeepaasRun, data: bytes, name: str = "image") -> tuple[int, Any]:
    boundary = "deepaasboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="picture"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, raw, _ = server.call("POST", "/v2/models/image/predict/", body, headers)
    return status, json.loads(raw)


def test_an_image_upload_is_decoded_resized_and_normalised(server: DeepaasRun) -> None:
    for size in ((8, 8), (31, 17)):  # the model's size, and another: resized
        status, answer = upload(server, png(*size, (255, 0, 51)))
        assert status == 200, answer
        np.testing.assert_allclose(
            answer["predictions"]["mean"], [1.0, -1.0, -0.6], atol=1e-6
        )


def test_a_non_image_upload_is_a_422_naming_the_input(server: DeepaasRun) -> None:
    status, body = upload(server, b"%PDF-1.4 not a picture")
    assert status == 422
    assert body["message"].startswith(
        "argument 'image': the upload is not an image Pillow can read"
    )
    assert "/tmp" not in body["message"]  # the temporary file's path is not said


def test_a_picture_of_too_many_pixels_is_a_413(server: DeepaasRun) -> None:
    # A 10000 x 9000 PNG of 18 KB was decoded (270 MB in RGB) to be resized
    # to 8 x 8; one a request at a time, by every worker.
    out = io.BytesIO()
    PIL.new("1", (10000, 9000)).save(out, format="PNG")
    status, body = upload(server, out.getvalue())
    assert status == 413, body
    assert body["message"] == (
        "argument 'image': the picture is 10000x9000 pixels, more than the "
        "89478485 pixels deepaas decodes; send a smaller picture (it is resized "
        "to 8x8 anyway)"
    )
    status, answer = upload(server, png(8, 8, (255, 0, 51)))  # and serves on
    assert status == 200, answer


def test_concurrent_requests_are_batched(server: DeepaasRun) -> None:
    row = [[1.0, 2.0, 3.0, 4.0]]
    for send in (
        lambda: infer_json(server, "batched", row),
        lambda: predict(server, "batched", {"x": row[0]}),
    ):
        calls, requests = batch_sizes(server, "batched")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _, send=send: send(), range(4)))
        assert [status for status, _ in answers] == [200] * 4
        # one call of the model for the four requests
        assert batch_sizes(server, "batched") == (calls + 1, requests + 4)


def test_a_fixed_batch_axis_is_not_batched(server: DeepaasRun) -> None:
    _, system = server.request("GET", "/v2/system/")
    queues = system["queues"]
    assert queues["fixed"]["max_batch_size"] == 1
    assert queues["linear"]["max_batch_size"] == 16
    assert queues["batched"] == {
        "depth": 0,
        "max_batch_size": 4,
        "batch_window": "fixed",  # its max_delay_ms
        "max_batch_delay_ms": 30000.0,
    }
    assert queues["linear"]["batch_window"] == "adaptive"  # no max_delay_ms
    workers = [w["model"] for w in system["workers"]]
    assert workers.count("image") == 2 and workers.count("linear") == 1
    calls, requests = batch_sizes(server, "fixed")
    body = {"x": [[1.0] * 4, [2.0] * 4]}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: predict(server, "fixed", body), range(4)))
    assert [status for status, _ in answers] == [200] * 4
    assert batch_sizes(server, "fixed") == (calls + 4, requests + 4)


def test_the_api_documents_describe_arguments_and_answers(server: DeepaasRun) -> None:
    _, swagger = server.request("GET", "/swagger.json")
    params = swagger["paths"]["/v2/models/linear/predict/"]["post"]["parameters"]
    (body,) = [p for p in params if p["in"] == "body"]
    assert body["schema"]["properties"]["x"] == {
        "description": "Input 'x', FP32 [4]: a list of 4 numbers.",
        "type": "array",
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
    }
    (image,) = swagger["paths"]["/v2/models/image/predict/"]["post"]["parameters"]
    assert (image["name"], image["in"], image["type"]) == ("image", "formData", "file")
    answer = swagger["definitions"]["linear_ModelPredictionResponse"]
    predictions = answer["properties"]["predictions"]["properties"]
    assert predictions["scores"]["items"] == {"type": "number"}
    assert predictions["best"]["type"] == "integer"
    assert predictions["labels"]["items"]["properties"]["label"] == {"type": "string"}
    _, openapi = server.request("GET", "/openapi.json")
    post = openapi["paths"]["/v2/models/linear/predict/"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["x"]["minItems"] == 4
    assert schema["required"] == ["x"]
    form = openapi["paths"]["/v2/models/image/predict/"]["post"]["requestBody"]
    image_schema = form["content"]["multipart/form-data"]["schema"]
    assert image_schema["properties"]["image"]["format"] == "binary"


def test_the_plugin_serves_beside_them(server: DeepaasRun) -> None:
    status, _ = server.request("GET", "/v2/models/echo/")
    assert status == 200


def test_both_documents_pass_openapi_spec_validator(server: DeepaasRun) -> None:
    validator = needs("openapi_spec_validator")
    _, swagger = server.request("GET", "/swagger.json")
    errors = validator.OpenAPIV2SpecValidator(swagger).iter_errors()
    # None: DEEPaaS 2.6.0's null default of the train route's deepaas_gpus
    # (tests/api/test_mapping_args.py)
    assert [e.message for e in errors if e.instance is not None] == []
    _, openapi = server.request("GET", "/openapi.json")
    assert [
        e.message for e in validator.OpenAPIV31SpecValidator(openapi).iter_errors()
    ] == []
