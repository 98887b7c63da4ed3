"""``deepaas-run`` serving TensorFlow models from a model repository: a
``.keras`` file and a SavedModel directory; metadata, infer and predict."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.deepaas_run import DeepaasRun
from tests.needs import needs
from tests.repository import models

needs("tensorflow")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

X = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    repo = tmp_path_factory.mktemp("repository")
    models.save_keras_linear(repo / "dense.keras")
    models.save_saved_model_linear(repo / "saved")
    run = DeepaasRun(
        tmp_path_factory.mktemp("logs"),
        "--model-repository",
        str(repo),
        "--devices",
        "cpu",
    )
    run.ready_timeout = 120.0  # TensorFlow is imported by two probes and two workers
    try:
        yield run.wait_ready()
    finally:
        run.close()


@pytest.mark.parametrize(
    ("model", "framework"), [("dense", "keras"), ("saved", "tensorflow")]
)
def test_metadata_infer_and_predict(
    server: DeepaasRun, model: str, framework: str
) -> None:
    status, meta = server.request("GET", f"/v2/models/{model}")
    assert status == 200
    assert meta["framework"] == framework
    ((x,), (y,)) = meta["inputs"], meta["outputs"]
    assert (x["datatype"], x["shape"], y["shape"]) == ("FP32", [-1, 4], [-1, 3])
    inputs = [{"name": x["name"], "datatype": "FP32", "shape": [2, 4], "data": X}]
    status, answer = server.request(
        "POST", f"/v2/models/{model}/infer", {"inputs": inputs}
    )
    assert status == 200, answer
    (scores,) = answer["outputs"]
    expected = models.linear(np.array(X))
    np.testing.assert_allclose(np.reshape(scores["data"], (2, 3)), expected, rtol=1e-5)
    status, answer = server.request(
        "POST", f"/v2/models/{model}/predict/", {x["name"]: X[0]}
    )
    assert status == 200, answer
    np.testing.assert_allclose(answer["predictions"][y["name"]], expected[0], rtol=1e-5)
