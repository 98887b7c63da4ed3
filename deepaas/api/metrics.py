"""Prometheus metrics, recorded in the API process, served at ``/metrics``.

Workers send their compute time back with each result, so everything is
recorded here and prometheus-client needs no multiprocess mode. Counters
and histograms are updated as requests and batches complete; gauges (queue
depth, requests in flight, workers, GPUs, trainings) are read when
Prometheus scrapes (:mod:`deepaas.api.metrics_gauges`), from the engine's
own state and the last NVML reading (taken in the background every second:
a scrape never calls NVML).
Each app has its own registry, so several apps can live in one process.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from deepaas.api.metrics_gauges import EngineCollector, TrainingCollector
from deepaas.engine.runtime import EngineEvents, ModelRuntime
from deepaas.engine.telemetry import Telemetry
from deepaas.training.jobs import JobManager

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# prometheus-client's default buckets, in seconds
DEFAULT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that hung up
OTHER = ("", "other")  # labels of routes that say nothing (static files, 404s)


def labels_of(handler: Any) -> tuple[str, str]:
    """The (model, endpoint) labels a route handler declared."""
    return getattr(handler, "metric_labels", OTHER)


class _Family:
    """The default of :func:`label`'s ``scope``: that of the route family."""


FAMILY: Any = _Family()


def label(handler: Any, model: str, endpoint: str, scope: Any = FAMILY) -> Any:
    """Declare the (model, endpoint) labels of a route handler, and with them
    who may call it: the scope of the family ``endpoint`` in
    :data:`deepaas.api.scopes.ENDPOINT_SCOPES`, or ``scope`` when given
    (None: open to every client). :func:`deepaas.api.auth.protect` reads
    it, and refuses an app with a route that declares neither.
    """
    handler.metric_labels = (model, endpoint)
    if scope is not FAMILY:
        handler.scope = scope
    return handler


class _Histogram:
    """A labelled histogram updated without locks (the event loop is the only
    writer and the scrape runs on it too): a bisect and two additions."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: list[str],
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = list(buckets)
        self.series: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float, times: int = 1) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        series[0][bisect.bisect_left(self.bounds, value)] += times
        series[1] += value * times

    def collect(self) -> Metric:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=self.labelnames
        )
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for labels, (counts, total) in self.series.items():
            cumulative = list(itertools.accumulate(counts))
            family.add_metric(
                list(labels), list(zip(edges, cumulative, strict=True)), total
            )
        return family


class _Counter:
    """A labelled counter updated without locks (see :class:`_Histogram`)."""

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.series: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.series[labels] = self.series.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self.series.get(labels, 0.0)

    def collect(self) -> Metric:
        family = CounterMetricFamily(
            self.name, self.documentation, labels=self.labelnames
        )
        for labels, value in self.series.items():
            family.add_metric(list(labels), value)
        return family


class Metrics(EngineEvents):
    """Every deepaas metric of one app."""

    def __init__(
        self,
        runtimes: Mapping[str, ModelRuntime],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.requests = _Counter(
            "deepaas_requests",
            "HTTP requests answered, by model, endpoint and status code.",
            ["model", "endpoint", "code"],
        )
        self.request_duration = _Histogram(
            "deepaas_request_duration_seconds",
            "Time from receiving a request to answering it.",
            ["model", "endpoint"],
        )
        self.queue_duration = _Histogram(
            "deepaas_queue_duration_seconds",
            "Time a prediction waited for a worker.",
            ["model"],
        )
        self.compute_duration = _Histogram(
            "deepaas_compute_duration_seconds",
            "Time a worker spent on one call or batch (model and rendering).",
            ["model"],
        )
        self.batch_size = _Histogram(
            "deepaas_batch_size",
            "Requests per call to the model (1 without batching).",
            ["model"],
            buckets=BATCH_BUCKETS,
        )
        self.worker_restarts = _Counter(
            "deepaas_worker_restarts",
            "Worker processes replaced, by why: crashed, start_failed, timeout, "
            "max_requests, max_memory, out_of_memory, reload.",
            ["model", "device", "reason"],
        )
        self.client_timeouts = _Counter(
            "deepaas_client_timeouts",
            "Connections closed because the client was too slow, by phase "
            "(headers: a request's headers not complete within --client-timeout; "
            "body: a request body that paused longer than that; both answered "
            "408 when the client had begun a request).",
            ["phase"],
        )
        for phase in ("headers", "body"):  # a series before the first
            self.client_timeouts.inc((phase,), 0.0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            _Collector(
                [
                    self.requests,
                    self.request_duration,
                    self.queue_duration,
                    self.compute_duration,
                    self.batch_size,
                    self.worker_restarts,
                    self.client_timeouts,
                ]
            )
        )
        self.registry.register(EngineCollector(runtimes, telemetry))

    def add_trainings(self, manager: JobManager) -> None:
        """Export the trainings' states and progress (read at scrape time)."""
        self.registry.register(TrainingCollector(manager))

    # -- EngineEvents -------------------------------------------------------

    def dispatched(self, model: str, waited: list[float]) -> None:
        labels = (model,)
        observe = self.queue_duration.observe
        for seconds in waited:
            observe(labels, seconds)

    def computed(self, model: str, size: int, seconds: float, times: int = 1) -> None:
        self.compute_duration.observe((model,), seconds, times)
        self.batch_size.observe((model,), size, times)

    def restarted(self, model: str, device: str, reason: str) -> None:
        self.worker_restarts.inc((model, device, reason))

    # -- connections ------------------------------------------------------------

    def client_timed_out(self, phase: str) -> None:
        """A connection was closed because its client was too slow in ``phase``
        (the ``on_timeout`` of :class:`deepaas.api.connections.HeaderTimeout`)."""
        self.client_timeouts.inc((phase,))

    # -- HTTP ---------------------------------------------------------------

    def refused(self, status: int) -> None:
        """A request aiohttp's parser refused before any route saw it (a bad
        request line, an over-long header...): counted under the labels of
        an unknown route (the ``on_bad_request`` of
        :class:`deepaas.api.connections.HeaderTimeout`)."""
        self.requests.inc((*OTHER, str(status)))

    def request_done(
        self, request: web.BaseRequest, status: int, started: float
    ) -> None:
        """Count and time a request that ended with ``status``, under the
        labels of the route it matched (:class:`deepaas.api.front.FrontDoor`
        calls it for every request).

        A request cancelled before it was answered comes as 499 (nginx's
        "client closed request"), not 500: no answer was sent.
        """
        if status == 408:  # a body that stopped arriving (--client-timeout)
            self.client_timeouts.inc(("body",))
        # Unset only if routing itself failed: then no route's labels apply.
        match_info = getattr(request, "_match_info", None)
        labels = OTHER if match_info is None else labels_of(match_info.handler)
        self.requests.inc((*labels, str(status)))
        self.request_duration.observe(labels, time.perf_counter() - started)

    def handler(self) -> Handler:
        """The ``/metrics`` route handler."""

        async def scrape(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

        return label(scrape, "", "metrics")


class _Collector:
    """Hands prometheus-client the families of our own metrics at scrape time."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.collect()
