"""The asyncio client (aiohttp) of the DEEPaaS v2 API.

:class:`AsyncClient` talks to one ``deepaas-run`` (or DEEPaaS 2.x) server.
Every method sends one request (:meth:`AsyncClient.wait` polls, and
:meth:`AsyncClient.follow_logs` streams one answer) and raises the
exceptions of :mod:`deepaas.client.errors`. How a request is sent and its
answer read (the session, timeouts, error statuses) is
:class:`~deepaas.client._transport.Transport`'s, which it is built on.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from deepaas.client import _body
from deepaas.client._body import Files
from deepaas.client._transport import DEFAULT_URL, UNSET, Transport
from deepaas.client._wire import (
    JSON,
    LogChunk,
    RawResult,
    is_json,
    log_chunk,
    parse_json,
)
from deepaas.client.errors import ClientError, Timeout

__all__ = ["DEFAULT_URL", "JSON", "AsyncClient", "LogChunk", "RawResult"]

FINISHED = ("done", "error", "cancelled")


class AsyncClient(Transport):
    """A client of one DEEPaaS server, for asyncio code.

    Args:
        url: the server's root, with its ``--base-path`` if it has one, e.g.
            ``http://127.0.0.1:5000`` or ``https://host/my-model``.
        timeout: seconds one request may take, from connecting to the last
            byte of the answer (``None``: no limit); each call can override
            it. Past it: :class:`~deepaas.client.errors.Timeout`.
        connect_timeout: seconds to open a connection (``None``: no limit).
        headers: sent with every request (e.g. ``{"Authorization": "Bearer
            ..."}``).
        session: an ``aiohttp.ClientSession`` to use (it is not closed by
            :meth:`close`); by default the client makes its own.

    Use it as ``async with AsyncClient(url) as client: ...``, or call
    :meth:`close` when done.
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- models ---------------------------------------------------------------

    async def models(self) -> list[dict[str, JSON]]:
        """The served models' documents: ``[{"id", "name", "links", ...the
        model's metadata}, ...]`` (``GET /v2/models/``)."""
        doc = await self._json("GET", "/v2/models/")
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            raise ClientError(f"{self.url}/v2/models/ did not answer a model list")
        return doc["models"]

    async def metadata(self, model: str) -> dict[str, JSON]:
        """One model's document (``GET /v2/models/{model}/``): its
        ``get_metadata()`` plus ``id``, ``name`` and ``links``.
        Unknown model: :class:`~deepaas.client.errors.NotFound`."""
        return await self._json("GET", _model(model))

    # -- predict --------------------------------------------------------------

    async def predict(
        self,
        model: str,
        args: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        json: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        accept: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = UNSET,
    ) -> JSON | RawResult:
        """Run a prediction (``POST /v2/models/{model}/predict/``).

        Args:
            model: the model's name.
            args: arguments sent as form fields (urlencoded, or multipart
                with the files): what a field with no location, or with
                ``location="form"``, reads. Lists repeat the name; ``None``
                leaves an argument out; ``True`` is sent as ``true``.
            files: ``{argument: file}`` where a file is a path, bytes, a
                binary file object, or ``(filename, content[, content_type])``;
                a list sends several files in one argument. Paths are
                opened and closed by the client; file objects are read from
                their position and left open.
            json: arguments sent as a JSON body (fields with
                ``location="json"``, and any field without a location);
                cannot be combined with ``args`` or ``files``.
            query: arguments sent in the query string (``location="query"``).
            accept: the content type wanted (one of the model's ``accept``
                choices, e.g. ``image/png``): sent as the ``Accept`` header
                and as an ``accept`` query argument.
            headers: extra request headers (fields with
                ``location="headers"``).
            timeout: seconds for this call (default: the client's).

        Returns:
            The answer's parsed JSON when it is JSON (``{"status": "OK",
            "predictions": ...}``, or the model's own document when it has
            a ``schema``); else a :class:`RawResult` (bytes, content type,
            file name).

        Raises:
            InvalidArguments: 422, with the per-field messages in ``errors``.
            NotFound: no such model. APIError: any other error status (500
                ``"ValueError: ..."`` when the model raised).
            ConnectionFailed, Timeout: no (complete) answer.
            ValueError, TypeError: arguments that cannot be sent as asked.
        """
        params = _body.pairs(query)
        extra = dict(headers or {})
        if accept is not None:
            extra["Accept"] = accept
            params.append(("accept", accept))
        answer = await self._post(
            _model(model) + "predict/", args, files, json, params, extra, timeout
        )
        if is_json(answer.content_type):
            return parse_json(answer, "POST", _model(model) + "predict/")
        return RawResult(
            answer.body, answer.content_type, answer.charset, answer.filename
        )

    # -- training -------------------------------------------------------------

    async def train(
        self,
        model: str,
        args: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        json: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        gpus: int | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = UNSET,
    ) -> dict[str, JSON]:
        """Start a training (``POST /v2/models/{model}/train/``).

        ``args``, ``files``, ``json``, ``query`` and ``headers`` are sent as
        for :meth:`predict`; ``gpus`` is the number of GPUs the training
        holds (``deepaas_gpus``; default: the server's ``--train-gpus``).

        Returns the training's record at once: ``{"uuid": "<32 hex>",
        "date": "YYYY-MM-DD HH:MM:SS.ffffff", "args": {...}, "status":
        "queued" | "running", "model", "progress", ...}``. Follow it with
        :meth:`training`, :meth:`wait` or :meth:`follow_logs`.

        Raises InvalidArguments (422, also for more GPUs than the server
        has), APIError (501: the model has no ``train``; 402: training is
        disabled; 503: the server is stopping; 507: its disk is full),
        ConnectionFailed, Timeout.
        """
        params = _body.pairs(query)
        if gpus is not None:
            params.append(("deepaas_gpus", str(int(gpus))))
        answer = await self._post(
            _model(model) + "train/", args, files, json, params, headers, timeout
        )
        return parse_json(answer, "POST", _model(model) + "train/")

    async def trainings(self, model: str) -> list[dict[str, JSON]]:
        """The model's trainings' records, oldest first."""
        return await self._json("GET", _model(model) + "train/")

    async def training(self, model: str, uuid: str) -> dict[str, JSON]:
        """One training's record; a finished one has ``"result": {"output":
        <train()'s return>, "finish_date", "duration": "H:MM:SS.ffffff"}``
        and, when it failed, ``"message"``. Unknown: NotFound."""
        return await self._json("GET", _training(model, uuid))

    async def cancel(
        self, model: str, uuid: str, *, timeout: float | None = UNSET
    ) -> dict[str, JSON]:
        """Cancel a training; answers its record once it has stopped (status
        ``cancelled``, or how it ended before). A finished training is
        answered unchanged. Unknown: NotFound; 409 (APIError) when another
        server sharing the state directory runs it and did not cancel it in
        time (``body["owner"]`` names that server)."""
        return await self._json("DELETE", _training(model, uuid), timeout=timeout)

    async def wait(
        self,
        model: str,
        uuid: str,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, JSON]:
        """Poll the training every ``interval`` seconds until it is finished
        (``done``, ``error`` or ``cancelled``); its final record. ``timeout``
        (seconds, ``None``: no limit) raises :class:`Timeout` (the training
        goes on)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            record = await self.training(model, uuid)
            if record.get("status") in FINISHED:
                return record
            now = loop.time()
            if deadline is not None and now >= deadline:
                raise Timeout(
                    f"training {uuid} of {model!r} is still "
                    f"{record.get('status')} after {timeout} s"
                )
            pause = interval if deadline is None else min(interval, deadline - now)
            await asyncio.sleep(pause)

    async def training_metrics(
        self,
        model: str,
        uuid: str,
        *,
        since: int = 0,
        max_points: int | None = None,
        x: str = "auto",
    ) -> dict[str, JSON]:
        """The values the training reported, as curves
        (``GET .../train/{uuid}/metrics``): ``{"x", "series": {key: [[x,
        value], ...]}, "text", "cursor", "reports", "eta_seconds",
        "downsampled", ...}``. Pass ``since=<cursor>`` of the last answer
        to get only what came after; ``max_points`` per key at most (longer
        curves are downsampled); ``x``: ``auto``, ``step`` or ``time``.
        Unknown: NotFound; a bad parameter: 422 (APIError)."""
        params = [("since", str(since)), ("x", x)]
        if max_points is not None:
            params.append(("max_points", str(max_points)))
        path = _training(model, uuid) + "/metrics"
        return parse_json(await self._send("GET", path, params=params), "GET", path)

    async def logs(self, model: str, uuid: str, offset: int = 0) -> LogChunk:
        """The training's output from byte ``offset`` to its current end
        (``GET .../train/{uuid}/logs``); pass the returned ``offset`` next
        time to get only what is new."""
        path = _training(model, uuid) + "/logs"
        answer = await self._send("GET", path, params=[("offset", str(offset))])
        end = int(answer.headers.get("X-Log-Offset", offset + len(answer.body)))
        return log_chunk(answer.body, end)

    async def follow_logs(
        self, model: str, uuid: str, offset: int = 0
    ) -> AsyncGenerator[str, None]:
        """Stream the training's output from byte ``offset`` as it is
        written (``?follow=true``): text pieces, until the training ends or
        the server starts to shut down (:meth:`training` tells which). No
        timeout applies once connected (a training may be quiet for hours).
        """
        path = _training(model, uuid) + "/logs"
        params = [("offset", str(offset)), ("follow", "true")]
        stream = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)
        async with self._response("GET", path, stream, params=params) as resp:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            async for chunk in resp.content.iter_any():
                text = decoder.decode(chunk)
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail


def _model(model: str) -> str:
    return f"/v2/models/{quote(model, safe='')}/"


def _training(model: str, uuid: str) -> str:
    return f"{_model(model)}train/{quote(uuid, safe='')}"
