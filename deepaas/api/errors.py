"""One middleware turns every error into JSON ``{"message": ...}``.

DEEPaaS 2.x advertised a ``Failure`` schema but answered HTML or plain text;
here every 4xx/5xx is JSON, a missing trailing slash is a 308 (the method
and body are kept), and nothing unexpected escapes as an HTML 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from deepaas.exceptions import DeepaasError, ShuttingDown

LOG = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    reason: str | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        reason=reason,
        body=json.dumps({"message": message}).encode(),
        content_type="application/json",
        headers=headers,
    )


class ValidationFailed(web.HTTPUnprocessableEntity):
    """422 whose body is marshmallow's messages, exactly as DEEPaaS 2.x sent."""

    def __init__(self, messages: object) -> None:
        super().__init__(text=json.dumps(messages), content_type="application/json")


async def _redirect_with_slash(request: web.Request) -> web.Response | None:
    """A 308 to ``path/`` when that path exists (DEEPaaS routes end in /).

    The path counts as existing even when the method is wrong there: the
    client then gets the 405 from the right URL rather than a 404.
    """
    path = request.path
    if path.endswith("/"):
        return None
    url = request.rel_url
    with_slash = url.with_path(url.raw_path + "/", encoded=True)
    match = await request.app.router.resolve(request.clone(rel_url=with_slash))
    error = match.http_exception
    if error is not None and error.status != 405:  # 405: the path exists
        return None
    # Keep the query string: predict arguments may travel in it.
    location = str(with_slash)
    if url.raw_query_string:
        location += "?" + url.raw_query_string
    return web.Response(
        status=308,
        headers={"Location": location},
        body=json.dumps({"message": f"use {location}"}).encode(),
        content_type="application/json",
    )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationFailed:
        raise
    except web.HTTPException as exc:
        if exc.status == 404:
            redirect = await _redirect_with_slash(request)
            if redirect is not None:
                return redirect
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() in ("allow", "retry-after")
        }
        return json_error(exc.status, exc.reason or exc.text or "", headers)
    except DeepaasError as exc:
        if exc.status >= 500 and not isinstance(exc, ShuttingDown):  # said once
            LOG.warning(
                "%s %s -> %s: %s", request.method, request.path, exc.status, exc.message
            )
        return json_error(exc.status, exc.message, exc.headers or None)
    except Exception as exc:
        LOG.exception("unexpected error handling %s %s", request.method, request.path)
        return json_error(500, f"Internal server error: {type(exc).__name__}: {exc}")
