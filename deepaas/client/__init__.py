"""A small Python client of the DEEPaaS v2 API, blocking and asyncio.

::

    from deepaas.client import Client

    with Client("http://127.0.0.1:5000") as client:
        print([m["name"] for m in client.models()])
        answer = client.predict("demo", {"number": 7}, files={"image": "cat.png"})
        png = client.predict("demo", accept="image/png")  # a RawResult
        png.save("out.png")
        job = client.train("demo", {"epochs": 3})
        for text in client.follow_logs("demo", job["uuid"]):
            print(text, end="")
        print(client.wait("demo", job["uuid"])["status"])

:class:`AsyncClient` has the same methods as coroutines (``follow_logs`` is
an async iterator). Errors: :mod:`deepaas.client.errors`. See
``docs/client.md``.
"""

from deepaas.client.aio import DEFAULT_URL, AsyncClient, LogChunk, RawResult
from deepaas.client.errors import (
    APIError,
    ClientError,
    ConnectionFailed,
    InvalidArguments,
    NotFound,
    Timeout,
)
from deepaas.client.sync import Client

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "InvalidArguments",
    "LogChunk",
    "NotFound",
    "RawResult",
    "Timeout",
]
