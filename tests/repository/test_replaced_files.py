"""A model file replaced under a running server (deepaas.frameworks.unchanged).

A worker that starts after the file changed (a crash, a recycle) loaded the
new file and ran it against requests checked for the old one: every
request failed (a 503 "changed since the server started") while
``/readyz`` said ready, and a file of the same input names went unseen.
Now such a worker refuses to start, and once no worker can run the model,
``/readyz`` is 503 naming the model and the reason.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from deepaas.frameworks import ModelFileError
from deepaas.frameworks.unchanged import ENV, check, record
from tests.deepaas_run import DeepaasRun, until
from tests.needs import needs
from tests.repository import models


def test_a_record_sees_a_file_replaced_removed_or_added(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"one")
    toml = tmp_path / "m.toml"  # none yet
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    (saved / "variables" / "v.index").write_bytes(b"v")
    paths = [str(model), str(toml), str(saved)]
    environ = {ENV: record(paths)}
    check("m", environ)  # unchanged
    check("m", {})  # not started by a server: nothing to compare with

    def refused() -> str:
        with pytest.raises(ModelFileError) as caught:
            check("m", environ)
        return str(caught.value)

    aside = tmp_path / "aside"
    model.rename(aside)
    model.write_bytes(b"one")  # the same bytes, another file
    assert refused() == (
        f"{model}: was replaced since the server started, which serves model 'm' "
        "as it described it then; restart the server to serve the new files (or "
        "put the old ones back)"
    )
    aside.replace(model)  # the same file back
    check("m", environ)
    toml.write_text("top_k = 1\n")
    assert refused().startswith(f"{toml}: appeared since the server started")
    toml.unlink()
    (saved / "variables" / "v.index").write_bytes(b"w2")  # (a tick may keep mtime)
    assert refused().startswith(f"{saved}: was replaced since")
    environ = {ENV: record(paths)}
    model.unlink()
    assert refused().startswith(f"{model}: was removed since")


def readiness(server: DeepaasRun) -> tuple[int, Any]:
    return server.request("GET", "/readyz")


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_replaced_file_takes_the_server_out_of_rotation(tmp_path: Path) -> None:
    needs("onnxruntime")
    repo = tmp_path / "repository"
    repo.mkdir()
    models.save_onnx_linear(repo / "m.onnx")
    server = DeepaasRun(
        tmp_path,
        "--devices",
        "cpu",
        "--workers",
        "1",
        env={"DEEPAAS_MODEL_REPOSITORY": str(repo)},
    )
    try:
        server.wait_ready()
        [worker] = server.note_workers()
        assert readiness(server)[0] == 200
        # The new file has the same inputs, names and shapes: only its
        # weights may differ, which went unseen.
        (repo / "m.onnx").rename(tmp_path / "old.onnx")
        models.save_onnx_linear(repo / "m.onnx")
        os.kill(worker, signal.SIGKILL)  # its replacement loads the files again

        def unready() -> Any:
            status, body = readiness(server)
            return body if status == 503 and "error" in body["models"]["m"] else None

        body = until(unready, "/readyz says model m cannot start")
        assert body["status"] == "unavailable"
        assert body["message"] == "model(s) m cannot start"
        error = body["models"]["m"]["error"]
        assert f"{repo / 'm.onnx'}: was replaced since the server started" in error
        assert "restart the server to serve the new files" in error
        status, answer = server.request(
            "POST", "/v2/models/m/predict/", {"x": [1.0, 2.0, 3.0, 4.0]}
        )
        assert status == 503
        assert "was replaced since the server started" in answer["message"]
        # The old file back (the same file): the next respawn serves it.
        (tmp_path / "old.onnx").replace(repo / "m.onnx")
        until(lambda: readiness(server)[0] == 200, "/readyz is 200 again")
        status, answer = server.request(
            "POST", "/v2/models/m/predict/", {"x": [1.0, 2.0, 3.0, 4.0]}
        )
        assert status == 200, answer
    finally:
        server.note_workers()
        server.close()
