"""A model whose train() does what its ``mode`` says (training tests).

Modes: ``sleep`` (``seconds``), ``fail`` (raises), ``report`` (reports
``steps`` progress values, then sleeps ``seconds``), ``print`` (prints
``lines`` lines, one every ``seconds``), ``file`` (reads the uploaded
``data`` file), ``stubborn`` (ignores SIGTERM), ``env`` (answers its device
environment), ``exit`` (dies without a word), ``context`` (answers its
training context), ``badresult`` and ``deepresult`` (return what JSON cannot encode),
``curve`` (reports ``steps`` steps of a total, a loss that is NaN at step 3
and a phase name, ``seconds`` apart).
"""

import math
import os
import sys
import time

from marshmallow import fields

from deepaas.training import context, report


def get_metadata():
    return {"name": "trainer"}


def get_predict_args():
    return {"x": fields.Int(load_default=1)}


def predict(x=1):
    return {"x": x, "pid": os.getpid()}


def get_train_args():
    return {
        "mode": fields.Str(load_default="sleep"),
        "seconds": fields.Float(load_default=0.0),
        "steps": fields.Int(load_default=3),
        "lines": fields.Int(load_default=3),
        "data": fields.Field(
            load_default=None,
            metadata={"type": "file", "location": "form"},
        ),
    }


def train(mode="sleep", seconds=0.0, steps=3, lines=3, data=None):
    if mode == "sleep":
        time.sleep(seconds)
        return {"slept": seconds}
    if mode == "fail":
        raise ValueError("the training failed on purpose")
    if mode == "report":
        for step in range(steps):
            report(step=step, loss=1.0 / (step + 1))
        time.sleep(seconds)
        return {"steps": steps}
    if mode == "curve":
        for step in range(1, steps + 1):
            loss = math.nan if step == 3 else 1.0 / step
            phase = "warmup" if step <= 2 else "main"
            report(step=step, total=steps, loss=loss, phase=phase)
            time.sleep(seconds)
        return {"steps": steps}
    if mode == "print":
        for i in range(lines):
            print(f"line {i}", flush=True)
            time.sleep(seconds)
        print("to stderr", file=sys.stderr, flush=True)
        return {"lines": lines}
    if mode == "file":
        with open(data.filename, "rb") as fh:
            content = fh.read()
        return {
            "content": content.decode(),
            "path": data.filename,
            "original_filename": data.original_filename,
            "content_type": data.content_type,
            "exists": os.path.exists(data.filename),
        }
    if mode == "env":
        time.sleep(seconds)
        return {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "deepaas_devices": os.environ.get("DEEPAAS_DEVICES"),
        }
    if mode == "context":
        ctx = context.current()
        ctx.logger.info("hello from the context logger")
        return {
            "uuid": ctx.uuid,
            "model": ctx.model,
            "devices": list(ctx.devices),
            "job_dir": ctx.job_dir,
            "log_path": ctx.log_path,
        }
    if mode == "stubborn":  # ignores SIGTERM: only SIGKILL ends it
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(seconds)
        return {"slept": seconds}
    if mode == "exit":
        os._exit(7)
    if mode == "badresult":
        return object()
    if mode == "deepresult":  # nested deeper than JSON encoding recurses
        nested: list = []
        for _ in range(100_000):
            nested = [nested]
        return nested
    raise ValueError(f"unknown mode {mode}")
