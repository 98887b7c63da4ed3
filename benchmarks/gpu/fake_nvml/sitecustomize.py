"""The self-test's fake NVML, in every process of ``run.py --self-test``.

``benchmarks/gpu/run.py --self-test`` puts this folder first on the
``PYTHONPATH`` of the servers it starts, so Python imports this module at
start-up in each of them and in their workers and training jobs. When
``GPU_CHECK_FAKE_NVML`` holds a JSON description (the path of the test
suite's fake, ``tests/fakes/nvml.py``, and its GPUs), ``import pynvml``
there gets that fake instead of NVIDIA's bindings; without the variable this
module does nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

ENV = "GPU_CHECK_FAKE_NVML"


def install(spec: dict[str, Any]) -> Any:
    """Put a ``FakePynvml`` with ``spec["gpus"]`` in ``sys.modules["pynvml"]``."""
    found = importlib.util.spec_from_file_location(
        "_gpu_check_fake_nvml", spec["module"]
    )
    if found is None or found.loader is None:
        raise ImportError(f"cannot load the fake NVML from {spec['module']}")
    module = importlib.util.module_from_spec(found)
    sys.modules[found.name] = module  # its dataclasses look themselves up there
    found.loader.exec_module(module)
    fake = module.FakePynvml([module.FakeGpu(**gpu) for gpu in spec["gpus"]])
    sys.modules["pynvml"] = fake
    return fake


if os.environ.get(ENV):
    try:
        install(json.loads(os.environ[ENV]))
    except Exception as exc:  # say it, but let the process start
        sys.stderr.write(f"fake NVML not installed ({type(exc).__name__}: {exc})\n")
