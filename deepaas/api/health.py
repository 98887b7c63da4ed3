"""Liveness and readiness probes.

``/healthz`` answers 200 while the process serves. ``/readyz`` answers 200
once every model has a warm worker, and 503 while starting, while a model
cannot start, and from SIGTERM on (so a load balancer stops sending traffic
before the server stops: with ``--drain-delay`` new requests are still
served meanwhile). Leaving and draining are the
:class:`~deepaas.lifecycle.Lifecycle`'s; the models' state comes from each
runtime's status snapshot. The Open Inference Protocol names
``/v2/health/live`` and ``/v2/health/ready`` answer the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.engine.runtime import ModelRuntime
from deepaas.lifecycle import Lifecycle


class Health:
    """Readiness from the models' status and the server's life cycle."""

    def __init__(
        self, runtimes: Mapping[str, ModelRuntime], lifecycle: Lifecycle
    ) -> None:
        self.runtimes = runtimes
        self.lifecycle = lifecycle

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        models = {}
        for name, runtime in self.runtimes.items():
            snapshot = runtime.status()
            models[name] = {
                "ready_workers": snapshot.ready_workers,
                **({"error": snapshot.start_error} if snapshot.start_error else {}),
            }
        if not self.lifecycle.ready:  # leaving or draining
            return False, {
                "status": "draining",
                "ready": False,
                "message": "the server is stopping",
                "models": models,
            }
        not_ready = [name for name, m in models.items() if not m["ready_workers"]]
        if not_ready:
            failed = [n for n in not_ready if "error" in models[n]]
            status = "unavailable" if failed else "starting"
            message = (
                f"model(s) {', '.join(failed)} cannot start"
                if failed
                else f"model(s) {', '.join(not_ready)} still starting"
            )
            return False, {
                "status": status,
                "ready": False,
                "message": message,
                "models": models,
            }
        return True, {"status": "ready", "ready": True, "models": models}


def setup(app: web.Application, spec: SpecBuilder, health: Health) -> None:
    bp = spec.base_path

    async def live(request: web.Request) -> web.Response:
        # "live": what OIP clients read (KServe's InferenceRESTClient).
        return web.json_response({"status": "alive", "live": True})

    async def ready(request: web.Request) -> web.Response:
        ok, document = health.readiness()
        return web.json_response(document, status=200 if ok else 503)

    label(live, "", "health")  # open: probes send no token
    label(ready, "", "health")
    for path, handler, summary in (
        (f"{bp}/healthz", live, "Liveness: 200 while the process serves"),
        (f"{bp}/v2/health/live", live, "Liveness (Open Inference Protocol)"),
        (f"{bp}/readyz", ready, "Readiness: 200 when every model has a warm worker"),
        (f"{bp}/v2/health/ready", ready, "Readiness (Open Inference Protocol)"),
    ):
        # HEAD too: some probes and load balancers check with it (the API's
        # other routes answer GET only, as DEEPaaS 2.x did).
        app.router.add_get(path, handler)
        spec.add(
            Operation(
                "get",
                path,
                summary,
                "health",
                {200: "Yes"} if handler is live else {200: "Ready", 503: "Not ready"},
                operation_id=path.strip("/").replace("/", "_") or "health",
            )
        )
