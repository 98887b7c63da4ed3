"""Imports fine in the API process, fails in a worker (as CUDA init might)."""

import os

if os.environ.get("DEEPAAS_WORKER"):
    raise ImportError("no GPU driver in the worker")


def predict(**kwargs):
    return "never"
