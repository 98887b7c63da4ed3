"""A plugin for the batch-mode tests: its behaviour is chosen by each
input file's content (``fail``, ``crash``, ``print``, ``gate:PATH``,
``bytes:N``, ``named``), so one
run over a folder mixes successes and failures. ``gate:PATH`` waits until
the test writes into the FIFO at PATH. With ``BATCHY_WARM_FAILS`` set, the
workers cannot warm."""

import io
import os

from marshmallow import fields


def warm():
    if os.environ.get("BATCHY_WARM_FAILS"):
        raise RuntimeError("no weights found")


def get_predict_args():
    return {
        "suffix": fields.Str(load_default="", metadata={"description": "Appended"}),
        "data": fields.Field(metadata={"type": "file", "description": "The input"}),
        "other": fields.Field(metadata={"type": "file", "description": "Another"}),
    }


def predict(suffix="", data=None, other=None):
    if data is None:
        return {"no_data": True, "other": getattr(other, "original_filename", None)}
    with open(data.filename, "rb") as fh:
        content = fh.read().strip()
    if content == b"fail":
        raise ValueError(f"cannot use {data.original_filename}")
    if content == b"crash":
        os._exit(3)
    if content.startswith(b"gate:"):
        print(f"at the gate: pid {os.getpid()}", flush=True)
        with open(content[5:].decode()) as gate:
            gate.read()
    if content.startswith(b"bytes:"):  # raw bytes, in a file if big
        return b"\x00" * int(content[6:])
    if content == b"named":
        named = io.BytesIO(b"\x89PNG...")
        named.name = "mask.png"
        return named
    if content == b"print":
        print(f"printing for {data.original_filename}")
    return {
        "name": data.original_filename,
        "content": content.decode() + suffix,
        "pid": os.getpid(),
        "device": os.environ.get("DEEPAAS_DEVICE"),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
