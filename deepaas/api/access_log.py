"""The access log (``--access-log``): one line per request, once answered.

aiohttp calls :meth:`AccessLog.log` after an answer is written (so the
bytes sent are known), in the request's task: the request id is still the
current one (:mod:`deepaas.tracing`). Fields: time, request id, method,
path (as sent, percent-encoded, without the query string, which may carry
a model's arguments), status, duration (from the front door taking it to
the answer's last byte written), bytes sent (headers included, as
aiohttp's ``%b``), model (of the route; none for routes of no model),
client address (the peer's: behind a proxy, the proxy's; its
``X-Forwarded-For`` is not trusted here).

``text`` lines go through the log's handlers and format, the request id
where every other line has it::

    2024-05-01 12:00:00,123 INFO deepaas.access: [3f2a...] POST
    /v2/models/demo/predict/ 200 12.30ms 227B model=demo client=127.0.0.1

``json`` lines are one JSON object each, alone on their line (no time or
level prefix: what log shippers such as Fluent Bit, Vector or Promtail
parse), on the log's stream and ``--log-file``::

    {"time": "2024-05-01T12:00:00.123+00:00", "request_id": "3f2a...",
     "method": "POST", "path": "/v2/models/demo/predict/", "status": 200,
     "duration_ms": 12.3, "bytes": 227, "model": "demo", "client": "127.0.0.1"}

Off by default: when the logger is not enabled for INFO, aiohttp does not
call it at all (nothing per request). ``--debug`` turns text lines on.
A request whose client hung up before its answer is not logged (aiohttp
writes no answer); ``deepaas_requests_total{code="499"}`` counts it.
"""

from __future__ import annotations

import datetime
import json
import logging
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from deepaas.api.front import STARTED
from deepaas.api.metrics import OTHER, labels_of
from deepaas.log import ACCESS_LOGGER
from deepaas.tracing import HEADER, REQUEST_ID

LOGGER = ACCESS_LOGGER  # set up by deepaas.log.setup


class AccessLog(AbstractAccessLogger):
    """Writes one line per request to ``logger``; ``log_format`` is the
    mode, ``text`` or ``json`` (aiohttp hands it over as given to the
    runner's ``access_log_format``)."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self.json = log_format == "json"

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        started = request.get(STARTED)  # the front door's, finer than aiohttp's
        if started is not None:
            time = perf_counter() - started
        match_info = getattr(request, "_match_info", None)
        labels = OTHER if match_info is None else labels_of(match_info.handler)
        model = labels[0] or None
        request_id = REQUEST_ID.get() or response.headers.get(HEADER)
        path = request.rel_url.raw_path
        if self.json:
            now = datetime.datetime.now(datetime.timezone.utc)
            line: dict[str, Any] = {
                "time": now.isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "method": request.method,
                "path": path,
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
                "bytes": response.body_length,
                "model": model,
                "client": request.remote,
            }
            self.logger.info(json.dumps(line))
            return
        self.logger.info(
            "%s %s %d %.2fms %dB model=%s client=%s",
            request.method,
            path,
            response.status,
            time * 1000,
            response.body_length,
            model or "-",
            request.remote,
        )
