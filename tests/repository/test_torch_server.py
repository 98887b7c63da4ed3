"""``deepaas-run`` serving PyTorch files from a model repository: a
TorchScript archive (its signature in NAME.toml) and a ``torch.export``
program (which records its own); metadata, infer and predict."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.deepaas_run import DeepaasRun
from tests.needs import needs
from tests.repository import models

needs("torch")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]

X = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeepaasRun]:
    repo = tmp_path_factory.mktemp("repository")
    models.save_torchscript_linear(repo / "scripted.pt")
    (repo / "scripted.toml").write_text(models.TORCHSCRIPT_SIGNATURE)
    models.save_export_linear(repo / "exported.pt2")
    (repo / "exported.toml").write_text('inputs = ["x"]\noutputs = ["scores"]\n')
    run = DeepaasRun(
        tmp_path_factory.mktemp("logs"),
        "--model-repository",
        str(repo),
        "--devices",
        "cpu",
    )
    try:
        yield run.wait_ready()
    finally:
        run.close()


@pytest.mark.parametrize(
    ("model", "framework"), [("scripted", "torchscript"), ("exported", "torch.export")]
)
def test_metadata_infer_and_predict(
    server: DeepaasRun, model: str, framework: str
) -> None:
    status, meta = server.request("GET", f"/v2/models/{model}")
    assert status == 200
    assert meta["framework"] == framework
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]
    inputs = [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X}]
    status, answer = server.request(
        "POST", f"/v2/models/{model}/infer", {"inputs": inputs}
    )
    assert status == 200, answer
    (scores,) = answer["outputs"]
    expected = models.linear(np.array(X))
    np.testing.assert_allclose(np.reshape(scores["data"], (2, 3)), expected, rtol=1e-5)
    status, answer = server.request("POST", f"/v2/models/{model}/predict/", {"x": X[0]})
    assert status == 200, answer
    np.testing.assert_allclose(answer["predictions"]["scores"], expected[0], rtol=1e-5)
