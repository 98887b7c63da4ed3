"""Prometheus metrics, recorded in the API process, served at ``/metrics``.

Workers send their compute time back with each result, so everything is
recorded here and prometheus-client needs no multiprocess mode. Counters
and histograms are updated as requests and batches complete; gauges (queue
depth, workers, GPUs) are read when Prometheus scrapes, from the engine's
own state and the NVML telemetry cache (sampled at most once a second).
Each app has its own registry, so several apps can live in one process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deepaas.engine.batching import Call
from deepaas.engine.devices import Telemetry
from deepaas.engine.pool import PoolEvents, WorkerState
from deepaas.engine.runtime import ModelRuntime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OTHER = ("", "other")  # labels of routes that say nothing (static files, 404s)


def labels_of(handler: Any) -> tuple[str, str]:
    """The (model, endpoint) labels a route handler declared."""
    return getattr(handler, "metric_labels", OTHER)


def label(handler: Any, model: str, endpoint: str) -> Any:
    """Declare the (model, endpoint) labels of a route handler."""
    handler.metric_labels = (model, endpoint)
    return handler


class Metrics(PoolEvents):
    """Every deepaas metric of one app."""

    def __init__(
        self,
        runtimes: Mapping[str, ModelRuntime],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "deepaas_requests",
            "HTTP requests answered, by model, endpoint and status code.",
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "deepaas_request_duration_seconds",
            "Time from receiving a request to answering it.",
            ["model", "endpoint"],
            registry=registry,
        )
        self.queue_duration = Histogram(
            "deepaas_queue_duration_seconds",
            "Time a prediction waited for a worker.",
            ["model"],
            registry=registry,
        )
        self.compute_duration = Histogram(
            "deepaas_compute_duration_seconds",
            "Time a worker spent on one call or batch (model and rendering).",
            ["model"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "deepaas_batch_size",
            "Requests per call to the model (1 without batching).",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.worker_restarts = Counter(
            "deepaas_worker_restarts",
            "Worker processes that died and were replaced.",
            ["model", "device"],
            registry=registry,
        )
        registry.register(_EngineCollector(runtimes, telemetry))
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- PoolEvents ---------------------------------------------------------

    def dispatched(self, model: str, calls: list[Call], now: float) -> None:
        queue = self._child(self.queue_duration, model)
        for call in calls:
            queue.observe(now - call.queued_at)

    def computed(self, model: str, size: int, seconds: float) -> None:
        self._child(self.compute_duration, model).observe(seconds)
        self._child(self.batch_size, model).observe(size)

    def restarted(self, model: str, device: str) -> None:
        self._child(self.worker_restarts, model, device).inc()

    # -- HTTP ---------------------------------------------------------------

    def middleware(self) -> Any:
        """Counts and times every request, labelled by its route."""

        @web.middleware
        async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                model, endpoint = labels_of(request.match_info.handler)
                self._child(self.requests, model, endpoint, str(status)).inc()
                self._child(self.request_duration, model, endpoint).observe(
                    time.perf_counter() - started
                )

        return observe

    def handler(self) -> Handler:
        """The ``/metrics`` route handler."""

        async def scrape(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

        return label(scrape, "", "metrics")


class _EngineCollector:
    """Gauges read at scrape time: queues, workers, GPUs."""

    def __init__(
        self, runtimes: Mapping[str, ModelRuntime], telemetry: Telemetry | None
    ) -> None:
        self.runtimes = runtimes
        self.telemetry = telemetry

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "deepaas_queue_depth", "Requests waiting for a worker.", labels=["model"]
        )
        workers = GaugeMetricFamily(
            "deepaas_workers",
            "Worker processes by model, device and state.",
            labels=["model", "device", "state"],
        )
        for name, runtime in self.runtimes.items():
            depth.add_metric([name], len(runtime.queue))
            counts: dict[tuple[str, str], int] = {}
            for worker in runtime.pool.workers:
                key = (worker.device.label, worker.state.value)
                counts[key] = counts.get(key, 0) + 1
            for device in {w.device.label for w in runtime.pool.workers}:
                for state in WorkerState:
                    value = counts.get((device, state.value), 0)
                    workers.add_metric([name, device, state.value], value)
        yield depth
        yield workers
        yield from self._gpus()

    def _gpus(self) -> Iterator[Metric]:
        if self.telemetry is None:
            return
        samples = self.telemetry.read()
        families = {
            "utilization_ratio": GaugeMetricFamily(
                "deepaas_gpu_utilization_ratio",
                "GPU utilisation over the last sample period (0-1).",
                labels=["gpu", "uuid", "name"],
            ),
            "memory_used_bytes": GaugeMetricFamily(
                "deepaas_gpu_memory_used_bytes",
                "GPU memory in use.",
                labels=["gpu", "uuid", "name"],
            ),
            "memory_total_bytes": GaugeMetricFamily(
                "deepaas_gpu_memory_total_bytes",
                "GPU memory in all.",
                labels=["gpu", "uuid", "name"],
            ),
            "temperature_celsius": GaugeMetricFamily(
                "deepaas_gpu_temperature_celsius",
                "GPU temperature.",
                labels=["gpu", "uuid", "name"],
            ),
            "power_watts": GaugeMetricFamily(
                "deepaas_gpu_power_watts",
                "GPU power draw.",
                labels=["gpu", "uuid", "name"],
            ),
        }
        for device in self.telemetry.devices:
            sample = samples.get(device.label)
            if sample is None:
                continue
            index = "" if device.index is None else str(device.index)
            labels = [index, device.uuid or "", device.name]
            for field, family in families.items():
                value = getattr(sample, field)
                if value is not None:
                    family.add_metric(labels, float(value))
        yield from families.values()
