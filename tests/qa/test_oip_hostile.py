"""QA: defects found by a hostile pass over the OIP routes of a real
``deepaas-run`` (the example ``demo`` plugin, a tensor-native plugin and a
mapped plugin whose result is chosen by its input); each test held a defect,
now fixed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deepaas_run import DeepaasRun

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TENSOR_PLUGIN = """
import numpy as np


def get_infer_signature():
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "mean", "datatype": "FP32", "shape": [1]}],
        "max_batch_size": 4,
    }


def infer(x):
    # The mean of no values is NaN, as numpy computes it.
    with np.errstate(all="ignore"):
        return {"mean": x.mean(axis=1, keepdims=True).astype(np.float32)}
"""

MAPPED_PLUGIN = """
from webargs import fields

VALUES = {
    # all integers, one past INT64's largest: a UINT64 tensor holds them
    0: [2**63 + 1, 1],
}


def get_predict_args():
    return {"mode": fields.Int(required=True)}


def predict(mode):
    return VALUES[mode]
"""

#: Small, so that a binary infer body of a few KiB passes it.
DECODED_LIMIT = 4096


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    root = tmp_path_factory.mktemp("qa_oip")
    (root / "qa_tensor.py").write_text(TENSOR_PLUGIN)
    (root / "qa_mapped.py").write_text(MAPPED_PLUGIN)
    server = DeepaasRun(
        root,
        "--model-name",
        "demo",
        "--plugin",
        str(root / "qa_tensor.py"),
        "--plugin",
        str(root / "qa_mapped.py"),
        "--client-max-decoded-size",
        str(DECODED_LIMIT),
        name="qa-oip",
    )
    try:
        yield server.wait_ready()
    finally:
        server.close()


def post_json(srv: DeepaasRun, path: str, body: Any) -> tuple[int, bytes]:
    status, raw, _ = srv.call(
        "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    return status, raw


def assert_healthy(srv: DeepaasRun) -> None:
    status, _ = srv.request("GET", "/healthz")
    assert status == 200


def strict_json(raw: bytes) -> Any:
    """JSON as browsers, jq, Go, Java and orjson (KServe's client) read it:
    no bare NaN / Infinity / -Infinity tokens."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: bare {token}")

    return json.loads(raw, parse_constant=refuse)


def test_infer_body_over_decoded_limit_gives_advice_an_oip_client_can_follow(
    srv: DeepaasRun,
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 2048],
                    "parameters": {"binary_data_size": 2048 * 4},
                }
            ]
        }
    ).encode()
    body = header + bytes(2048 * 4)
    status, raw, _ = srv.call(
        "POST",
        "/v2/models/qa_tensor/infer",
        body,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 413
    message = json.loads(raw)["error"]
    assert "--client-max-decoded-size" in message
    assert "multipart" not in message  # an infer body cannot be multipart
    assert_healthy(srv)


def test_infer_path_with_trailing_slash_says_what_to_change(srv: DeepaasRun) -> None:
    status, raw = post_json(srv, "/v2/models/demo/infer/", {"inputs": []})
    assert 400 <= status < 500
    answer = json.loads(raw)
    assert set(answer) == {"error"}, answer
    assert "/v2/models/demo/infer" in answer["error"]  # the path to use
    assert_healthy(srv)


def test_mapped_result_integers_past_int64_are_not_rounded(srv: DeepaasRun) -> None:
    request = {
        "inputs": [{"name": "mode", "datatype": "INT64", "shape": [1], "data": [0]}]
    }
    status, raw = post_json(srv, "/v2/models/qa_mapped/infer", request)
    assert status == 200, raw
    (output,) = json.loads(raw)["outputs"]
    # UINT64 [2] holds them exactly; BYTES JSON text would too. Not FP64.
    assert output["datatype"] != "FP64", output
    if output["datatype"] == "BYTES":
        assert json.loads(output["data"][0]) == [2**63 + 1, 1]
    else:
        assert output["data"] == [2**63 + 1, 1]


def test_json_infer_response_with_nan_output_is_standard_json(srv: DeepaasRun) -> None:
    # One row of no values: the plugin's mean is NaN, a valid model output.
    request = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 0], "data": []}]
    }
    status, raw = post_json(srv, "/v2/models/qa_tensor/infer", request)
    assert status == 200, raw
    strict_json(raw)
