"""The gauges of ``/metrics``, read when Prometheus scrapes: the engine's
state (queue depth, requests in flight, workers by state, per model), the
last NVML reading of each GPU (taken in the background every second: a
scrape never calls NVML), and the trainings by state with their progress.
Registered by :class:`deepaas.api.metrics.Metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

from deepaas.engine.runtime import WORKER_STATES, ModelRuntime
from deepaas.engine.telemetry import Telemetry
from deepaas.training.jobs import JobManager
from deepaas.training.store import STATUSES

# GpuSample field -> help text; the gauge is deepaas_gpu_<field>.
GPU_GAUGES = {
    "utilization_ratio": "GPU utilisation over the last sample period (0-1).",
    "memory_used_bytes": "GPU memory in use.",
    "memory_total_bytes": "GPU memory in all.",
    "temperature_celsius": "GPU temperature.",
    "power_watts": "GPU power draw.",
}


class EngineCollector:
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
        # With the queue depth, the load of a replica (what autoscaling reads:
        # deploy/kubernetes/components/keda).
        held = GaugeMetricFamily(
            "deepaas_in_flight",
            "Requests handed to workers and not answered yet (running, or "
            "waiting in a worker behind the one it runs).",
            labels=["model"],
        )
        workers = GaugeMetricFamily(
            "deepaas_workers",
            "Worker processes by model, device and state.",
            labels=["model", "device", "state"],
        )
        for name, runtime in self.runtimes.items():
            status = runtime.status()
            depth.add_metric([name], status.queue_depth)
            held.add_metric([name], sum(w.in_flight for w in status.workers))
            counts: dict[tuple[str, str], int] = {}
            for worker in status.workers:
                key = (worker.device, worker.state)
                counts[key] = counts.get(key, 0) + 1
            for device in sorted({w.device for w in status.workers}):
                for state in WORKER_STATES:
                    value = counts.get((device, state), 0)
                    workers.add_metric([name, device, state], value)
        yield depth
        yield held
        yield workers
        yield from self._gpus()

    def _gpus(self) -> Iterator[Metric]:
        if self.telemetry is None:
            return
        # The sampler's last reading ({} before the first, or while NVML
        # hangs): a scrape never waits for NVML.
        samples = self.telemetry.read()
        families = {
            field: GaugeMetricFamily(
                f"deepaas_gpu_{field}", text, labels=["gpu", "uuid", "name"]
            )
            for field, text in GPU_GAUGES.items()
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


class TrainingCollector:
    """``deepaas_trainings`` and ``deepaas_training_progress``, at scrape time.

    Both come from the job manager's memory (its counts snapshot, kept fresh
    as records change and re-read from the database each heartbeat by the
    manager, never here): a scrape must not wait on SQLite's locks.
    """

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counts = GaugeMetricFamily(
            "deepaas_trainings",
            "Training records by model and status.",
            labels=["model", "status"],
        )
        found: dict[str, dict[str, int]] = {}
        for model, status, count in self.manager.counts():
            found.setdefault(model, {})[status] = count
        for model in sorted(set(found) | set(self.manager.targets)):
            for status in STATUSES:
                counts.add_metric([model, status], found.get(model, {}).get(status, 0))
        progress = GaugeMetricFamily(
            "deepaas_training_progress",
            "Latest values a running training reported with deepaas.training.report().",
            labels=["model", "uuid", "key"],
        )
        for model, uuid, key, value in self.manager.progress():
            progress.add_metric([model, uuid, key], value)
        yield counts
        yield progress
