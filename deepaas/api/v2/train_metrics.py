"""``GET .../train/{uuid}/metrics``: every value a training reported, as
curves a page can poll.

The answer (see :mod:`deepaas.training.history` for where it comes from)::

    {"uuid": "...", "status": "running", "x": "step",
     "series": {"loss": [[1, 0.93], [2, null], [3, 0.71]]},
     "text": {"phase": [[1, "warmup"]]},
     "cursor": 3, "reports": 3, "downsampled": 1, "eta_seconds": 41.5}

``series``: per key, ``[x, value]`` points; ``value`` is null for NaN or
infinity (a gap). ``text``: values that are not numbers. ``cursor``: give
it back as ``?since=`` to get only what came after (a page polls so).
``downsampled``: 1 when every point is there, else the bucket size of
:func:`~deepaas.training.history.downsample` (``?max_points=`` per key).
The handler reads store snapshots through the job manager, never a job.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from marshmallow import fields, validate

from deepaas.api.openapi import Operation, SpecBuilder
from deepaas.api.response_schemas import TRAINING_METRICS
from deepaas.api.v2.query import query_int, query_one
from deepaas.exceptions import DeepaasError, echoed
from deepaas.model.v2.fields import arg_specs
from deepaas.model.v2.results import dumps
from deepaas.training import history
from deepaas.training.jobs import JobManager

AXES = ("auto", "step", "time")
MAX_SINCE = 2**62  # a cursor SQLite's INTEGER holds with room to spare

METRICS_ARGS = arg_specs(
    {
        "since": fields.Int(
            load_default=0,
            validate=validate.Range(min=0, max=MAX_SINCE),
            metadata={
                "location": "query",
                "description": "Only reports after this cursor (the last answer's)",
            },
        ),
        "max_points": fields.Int(
            load_default=history.MAX_POINTS,
            validate=validate.Range(min=2, max=history.MAX_POINTS_LIMIT),
            metadata={
                "location": "query",
                "description": "Points per key at most (longer curves are "
                "downsampled, keeping spikes and gaps)",
            },
        ),
        "x": fields.Str(
            load_default="auto",
            validate=validate.OneOf(AXES),
            metadata={
                "location": "query",
                "description": "The x of each point: the reported step (step, "
                "else epoch), seconds since the start (time), or auto (step "
                "when the training reports one)",
            },
        ),
    },
    "deepaas",
)


class MetricsRoute:
    """The handler of one model's ``.../train/{uuid}/metrics``."""

    def __init__(self, model: str, manager: JobManager) -> None:
        self.model = model
        self.manager = manager

    async def get(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        query = request.query
        since = query_int(query, "since", 0, 0, MAX_SINCE)
        limit = query_int(
            query, "max_points", history.MAX_POINTS, 2, history.MAX_POINTS_LIMIT
        )
        asked = query_one(query, "x") or "auto"
        if asked not in AXES:
            choices = ", ".join(AXES)
            raise DeepaasError(422, f"x must be one of {choices}, got {echoed(asked)}")
        record = await self.manager.get(uuid, self.model)
        if record is None:
            raise DeepaasError(
                404,
                f"no such training: model {self.model!r} "
                f"has no training {echoed(uuid)}",
            )
        read = await self.manager.reports(uuid, since)
        loop = asyncio.get_running_loop()  # tens of ms for a long run: off the loop
        curves = await loop.run_in_executor(
            None,
            _curves,
            read.reports,
            read.stride,
            history.x_axis(read.first, asked),
            limit,
        )
        answer = {
            "uuid": uuid,
            "status": record.status,
            **curves,
            "cursor": _cursor(read, since),
            "reports": len(read.reports),
            "eta_seconds": None if record.finished else record.eta_seconds,
        }
        # NaN anywhere (a text value may be a list holding one) is null:
        # never a bare NaN token, which JSON parsers refuse
        return web.Response(body=dumps(answer), content_type="application/json")


def _cursor(read: history.Read, since: int) -> int:
    """The answer's cursor: the last report given; when none came after
    ``since``, ``since``, or the last report's number when ``since`` is past
    it (a cursor from another training, or made up), so the next poll sees
    what comes. ``read.last`` came with the reports: no second query."""
    if read.reports:
        return read.reports[-1].seq
    return min(since, read.last)


def _curves(
    reports: list[history.Report], stride: int, axis: str, limit: int
) -> dict[str, Any]:
    """The answer's ``x``, ``series``, ``text`` and ``downsampled``."""
    numbers, texts = history.series(reports, axis)
    bucket = stride
    for key, points in numbers.items():
        numbers[key], k = history.downsample(points, limit)
        bucket = max(bucket, k * stride)
    for key, points in texts.items():
        texts[key] = points[-limit:]  # the latest texts
    return {"x": axis, "series": numbers, "text": texts, "downsampled": bucket}


def document(spec: SpecBuilder, path: str, name: str, uuid_param: Any) -> None:
    """The route in the API documents."""
    spec.add(
        Operation(
            "get",
            path,
            "The values the training reported, as curves (?since= resumes)",
            "models",
            {
                200: "Per key [x, value] points (null: NaN, a gap), texts, and "
                "the cursor to give back as since",
                404: "No such training",
                422: "Bad since, max_points or x",
            },
            args=METRICS_ARGS,
            path_params=uuid_param,
            operation_id=f"training_metrics_{name}",
            schemas={200: TRAINING_METRICS},
        )
    )
