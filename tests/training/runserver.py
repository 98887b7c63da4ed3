"""``deepaas-run`` as a subprocess serving the training test plugins.

For the tests where servers share a state directory, crash (SIGKILL) and
start again, as a platform runs them (:mod:`tests.deepaas_run`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.deepaas_run import DeepaasRun, children, register_plugins

MODELS = {"trainer": "tests.plugins.trainer", "gated": "tests.plugins.gated"}
TRAIN = "/v2/models/trainer/train/"
GATED = "/v2/models/gated/train/"
RUNNER = b"deepaas.training.runner"


class RunServer(DeepaasRun):
    """One ``deepaas-run`` (``prefix`` runs it through another command, such
    as ``unshare``; ``env`` is added to its environment) serving the
    trainer plugin on a state directory."""

    ready_timeout = request_timeout = 60.0

    def __init__(
        self,
        tmp_path: Path,
        state_dir: Path,
        *args: str,
        prefix: Sequence[str] = (),
        name: str = "server",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        plugin_root = tmp_path / "plugin"
        register_plugins(plugin_root, "deepaas_test_trainers", MODELS)
        super().__init__(
            tmp_path,
            "--model-name",
            "trainer",
            "--state-dir",
            str(state_dir),
            "--devices",
            "cpu",
            *args,
            name=name,
            path=[plugin_root],
            prefix=prefix,
            env=env,
        )

    def submit(self, **kwargs: Any) -> dict[str, Any]:
        status, body = self.request("POST", TRAIN, kwargs)
        assert status == 200, body
        return body

    def record(self, uuid: str, base: str = TRAIN) -> dict[str, Any]:
        status, body = self.request("GET", base + uuid)
        assert status == 200, body
        return body

    def runners(self) -> dict[str, int]:
        """uuid -> pid of this server's live training processes."""
        found = {}
        for pid in children(self.proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if RUNNER in argv:
                found[json.loads(argv[argv.index(RUNNER) + 1])["uuid"]] = pid
        return found


def stored(state_dir: Path) -> dict[str, tuple[str, str | None]]:
    """uuid -> (status, message), as the database holds them."""
    with sqlite3.connect(state_dir / "trainings.sqlite3") as db:
        rows = db.execute("SELECT uuid, status, message FROM trainings")
        return {uuid: (status, message) for uuid, status, message in rows}
