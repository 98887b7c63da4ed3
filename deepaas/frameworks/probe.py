"""Describe model files from child processes, at start-up.

The API process must know a repository model's tensors (its routes, API
documents and request checks come from them) but must not import a
framework: torch or TensorFlow would stay in its memory for good (hundreds
of MB), and a GPU build could grab GPU memory there. So each file is opened
once by a short-lived child, ``python -m deepaas.frameworks.probe``, on the
CPU (``CUDA_VISIBLE_DEVICES`` empty), which prints what
:func:`deepaas.frameworks.load` found and exits. The children run side by
side; a file that cannot be loaded (corrupt, absent framework) fails here,
so that start-up stops with the file's one-line :class:`ModelFileError`
before any worker starts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from deepaas.frameworks.base import ModelFileError, Runtime, TensorInfo

#: A probe that has not answered by then has hung in its framework.
PROBE_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class Described:
    """A model file's tensors, as its :class:`Runtime` has them."""

    framework: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_rows: int | None = None  # as Runtime.max_rows

    @property
    def batch_axis_dynamic(self) -> bool:
        """As :attr:`Runtime.batch_axis_dynamic`."""
        return bool(self.inputs) and all(
            t.shape is not None and len(t.shape) > 0 and t.shape[0] == -1
            for t in self.inputs
        )

    @classmethod
    def of(cls, runtime: Runtime) -> Described:
        return cls(runtime.framework, runtime.inputs, runtime.outputs, runtime.max_rows)

    def as_json(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "max_rows": self.max_rows,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Described:
        def infos(items: Sequence[Mapping[str, Any]]) -> tuple[TensorInfo, ...]:
            return tuple(
                TensorInfo(
                    item["name"],
                    item["datatype"],
                    None if item["shape"] is None else tuple(item["shape"]),
                )
                for item in items
            )

        return cls(
            data["framework"],
            infos(data["inputs"]),
            infos(data["outputs"]),
            data.get("max_rows"),
        )


@dataclasses.dataclass(frozen=True)
class ProbeJob:
    """One file to describe; ``signature`` as ``frameworks.load`` takes it."""

    path: str
    signature: Mapping[str, Any] | None = None


def describe_all(
    jobs: Sequence[ProbeJob], env: Mapping[str, str], timeout: float = PROBE_TIMEOUT_S
) -> list[Described | str]:
    """Each job's :class:`Described`, or the one-line reason it failed (a
    :class:`ModelFileError`'s message, naming the file), in order.

    ``env`` is the children's environment (on the CPU: see the module)."""
    if not jobs:
        return []
    width = max(2, min(len(jobs), os.cpu_count() or 2))
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        return list(pool.map(lambda job: _describe(job, env, timeout), jobs))


def _describe(job: ProbeJob, env: Mapping[str, str], timeout: float) -> Described | str:
    request = json.dumps({"path": job.path, "signature": job.signature})
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, request],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"{job.path}: loading it did not end within {timeout:g}s"
    answer = _last_json_line(done.stdout)
    if answer is None:
        said = [line for line in done.stderr.splitlines() if line.strip()]
        last = said[-1].strip() if said else f"exit status {done.returncode}"
        return f"{job.path}: the process describing it failed ({last})"
    if "error" in answer:
        return str(answer["error"])
    return Described.from_json(answer)


def _last_json_line(text: str) -> dict[str, Any] | None:
    """The answer: the last stdout line (a framework may print before it)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def probe(path: str, signature: Mapping[str, Any] | None) -> dict[str, Any]:
    """In the child: load ``path`` on the CPU, one thread; what it is."""
    from deepaas import frameworks

    try:
        runtime = frameworks.load(path, "cpu", signature=signature, threads=1)
    except ModelFileError as exc:
        return {"error": str(exc)}
    except ValueError as exc:  # a declared signature frameworks.load refuses
        return {"error": " ".join(str(exc).split())}
    except Exception as exc:  # a framework's own error, while loading
        text = " ".join(str(exc).split())[:300]
        return {"error": f"{path}: cannot be loaded ({type(exc).__name__}: {text})"}
    return Described.of(runtime).as_json()


def main() -> None:
    request = json.loads(sys.argv[1])
    answer = probe(request["path"], request.get("signature"))
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
