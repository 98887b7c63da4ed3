"""How one request of the client goes out and its answer comes back.

:class:`Transport` is what :class:`~deepaas.client.aio.AsyncClient` is
built on: the server's URL, the timeouts and headers every request gets,
the ``aiohttp`` session (made on first use, or the caller's), and one
request sent (a form, a multipart upload or a JSON body), its answer read
whole or streamed, an error status, a failed connection or a timeout
raised as the exceptions of :mod:`deepaas.client.errors`. It knows no
route of the API: :mod:`deepaas.client.aio` holds those, one method each,
so that a reader of either finds one thing there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any

import aiohttp

from deepaas import __version__
from deepaas.client import _body
from deepaas.client._body import Files
from deepaas.client._wire import JSON, Answer, error_body, failure, parse_json
from deepaas.client.errors import ClientError, api_error

DEFAULT_URL = "http://127.0.0.1:5000"
USER_AGENT = f"deepaas-client/{__version__}"


class _Unset:
    def __repr__(self) -> str:
        return "<the client's timeout>"


UNSET: Any = _Unset()


class Transport:
    """The connection settings and the session of a client, and its
    requests (the constructor's arguments are documented on
    :class:`~deepaas.client.aio.AsyncClient`)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float | None = 300.0,
        connect_timeout: float | None = 10.0,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._session = session
        self._own_session = session is None
        self._closed = False

    async def close(self) -> None:
        """Close the connections (and the session, if the client made it)."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._own_session:
            await session.close()

    def _client_timeout(self, timeout: float | None) -> aiohttp.ClientTimeout:
        total = self.timeout if timeout is UNSET else timeout
        return aiohttp.ClientTimeout(total=total, sock_connect=self.connect_timeout)

    async def _post(
        self,
        path: str,
        args: Mapping[str, Any] | None,
        files: Files | None,
        json: Mapping[str, Any] | None,
        params: list[tuple[str, str]],
        headers: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Answer:
        _body.no_files_with_json(json, args, files)
        extra = dict(headers or {})
        opened: list[IO[bytes]] = []
        try:
            data: Any
            if json is not None:
                data = _body.json_body(json)
                extra["Content-Type"] = "application/json"
            else:
                data = _body.form(args, files, opened)
            return await self._send(
                "POST", path, params=params, data=data, headers=extra, timeout=timeout
            )
        finally:
            for fileobj in opened:
                fileobj.close()

    async def _json(
        self, method: str, path: str, *, timeout: float | None = UNSET
    ) -> JSON:
        answer = await self._send(method, path, timeout=timeout)
        return parse_json(answer, method, path)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = UNSET,
        **kwargs: Any,
    ) -> Answer:
        """One request; the whole answer."""
        limits = self._client_timeout(timeout)
        async with self._response(method, path, limits, **kwargs) as resp:
            body = await resp.read()
            disposition = resp.content_disposition
            return Answer(
                resp.status,
                resp.content_type,
                resp.charset,
                disposition.filename if disposition is not None else None,
                resp.headers,
                body,
            )

    @contextlib.asynccontextmanager
    async def _response(
        self,
        method: str,
        path: str,
        timeout: aiohttp.ClientTimeout,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The answer of a successful request, while it is read; an error
        status, a failed connection or a timeout raised as the client's
        exceptions."""
        if self._closed:
            raise ClientError("the client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self.url + path
        sent = {**self.headers, **(headers or {})}
        try:
            async with self._session.request(
                method, url, headers=sent, timeout=timeout, **kwargs
            ) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise api_error(
                        resp.status, resp.reason or "", error_body(resp, body),
                        method, url,
                    )  # fmt: skip
                yield resp
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise failure(exc, method, url, timeout) from exc
