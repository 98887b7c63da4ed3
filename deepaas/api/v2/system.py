"""``GET /v2/system/``: devices (with telemetry), workers, queues and reloads,
as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.engine.devices import Device
from deepaas.engine.runtime import ModelRuntime
from deepaas.engine.telemetry import Telemetry


def system_document(
    devices: Sequence[Device],
    runtimes: Mapping[str, ModelRuntime],
    telemetry: Telemetry | None,
) -> dict[str, Any]:
    # The sampler's last reading, never NVML itself: "telemetry" is null for
    # a device until there is one (and while NVML hangs).
    samples = telemetry.read() if telemetry is not None else {}
    statuses = {name: runtime.status() for name, runtime in runtimes.items()}
    return {
        "devices": [
            {
                "label": device.label,
                "kind": device.kind,
                "index": device.index,
                "uuid": device.uuid,
                "name": device.name,
                "memory_total_bytes": device.memory_total,
                "telemetry": (
                    dataclasses.asdict(samples[device.label])
                    if device.label in samples
                    else None
                ),
            }
            for device in devices
        ],
        "workers": [
            {
                "model": name,
                "index": worker.index,
                "device": worker.device,
                "pid": worker.pid,
                "state": worker.state,
                "in_flight": worker.in_flight,
                "restarts": worker.restarts,
                "generation": worker.generation,
                **({"error": worker.error} if worker.error else {}),
            }
            for name, status in statuses.items()
            for worker in status.workers
        ],
        "queues": {
            name: {
                "depth": status.queue_depth,
                "max_batch_size": status.max_batch_size,
                "batch_window": status.batch_window,
                "max_batch_delay_ms": status.max_batch_delay * 1000,
            }
            for name, status in statuses.items()
        },
        # The latest reload of each model's workers after a training ended.
        "reloads": {
            name: dataclasses.asdict(status.reload)
            for name, status in statuses.items()
            if status.reload is not None
        },
    }


def setup(
    app: web.Application,
    spec: SpecBuilder,
    devices: Sequence[Device],
    runtimes: Mapping[str, ModelRuntime],
    telemetry: Telemetry | None,
) -> None:
    bp = spec.base_path

    async def get_system(request: web.Request) -> web.Response:
        return web.json_response(system_document(devices, runtimes, telemetry))

    app.router.add_get(
        f"{bp}/v2/system/", label(get_system, "", "system"), allow_head=False
    )
    spec.add(
        Operation(
            "get",
            f"{bp}/v2/system/",
            "Devices with telemetry, workers and queues",
            "system",
            {200: "The state of the engine"},
            operation_id="get_system",
        )
    )
