"""Every error is answered as JSON ``{"message": ...}``.

DEEPaaS 2.x advertised a ``Failure`` schema but answered HTML or plain text;
here every 4xx/5xx is JSON, a missing trailing slash or a run of slashes
is a 308 to the route meant (the method and body are kept), and nothing
unexpected escapes as an HTML 500.

An ``OSError`` that reaches here is a file the server itself failed to
write (an upload in the scratch directory): a full disk or quota is a 507
and a scratch directory removed under the server a 503 to retry; no answer
names a server path (the log has it).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web
from yarl import URL

from deepaas import scratch
from deepaas.api.limits import MULTIPART_ADVICE
from deepaas.exceptions import DeepaasError, ShuttingDown, echoed, elided
from deepaas.log import with_detail

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


_SLASHES = re.compile(r"//+")


def merge_slashes(path: str) -> str:
    """``path`` with each run of slashes made one."""
    return _SLASHES.sub("/", path)


async def _redirect_to_route(request: web.Request) -> web.Response | None:
    """A 308 to the route the client meant, when it exists: runs of slashes
    merged into one, and a trailing slash added (DEEPaaS routes end in /),
    as DEEPaaS 2.x (aiohttp's ``normalize_path_middleware``) answered.

    The path counts as existing even when the method is wrong there: the
    client then gets the 405 from the right URL rather than a 404. The
    query string is kept (predict arguments may travel in it). The
    Location is always one of this server's routes, a path that starts
    with a single ``/``: never another host (``//evil.com/x`` is merged
    into ``/evil.com/x``, which is no route: a 404).
    """
    url = request.rel_url
    raw_path = url.raw_path
    merged = merge_slashes(raw_path)
    candidates = []
    if merged != raw_path:
        candidates.append(merged)
    if not merged.endswith("/"):
        candidates.append(merged + "/")
    oip_paths = request.app.get(OIP_PATHS)
    if (
        merged != raw_path
        and oip_paths is not None
        and oip_paths.fullmatch(merged)
        and not await _dual_document(request, url.with_path(merged, encoded=True))
    ):
        # /v2/models//infer is no OIP path: not one with a segment fewer
        # (/v2/models/infer, the metadata of a model named "infer"), nor a
        # DEEPaaS route (error_response answers it).
        return None
    for path in candidates:
        if path.startswith("/\\"):  # a browser reads that as //: another host
            continue
        if await _routed(request, url.with_path(path, encoded=True)):
            return _redirect(path, url.raw_query_string)
    return None


async def _dual_document(request: web.Request, url: URL) -> bool:
    """Whether ``url`` is ``/v2`` or ``/v2/models/<a served model>``: OIP
    paths that are DEEPaaS documents too (a model's ``self`` link), which
    DEEPaaS clients that join URLs loosely reach through runs of slashes
    (``//v2//models//demo``), redirected as DEEPaaS 2.x did. Not an OIP
    action (``/infer``, ``/ready``, ``/versions/...``), nor a model not
    served (the catch-all route), which OIP clients alone ask for."""
    if not re.fullmatch(r".*/v2(?:/models/[^/]+)?", url.path):
        return False
    match = await request.app.router.resolve(request.clone(rel_url=url))
    route = getattr(match, "route", None)
    return match.http_exception is None and isinstance(
        getattr(route, "resource", None), web.PlainResource
    )


def _redirect(path: str, raw_query: str) -> web.Response:
    location = f"{path}?{raw_query}" if raw_query else path
    return web.Response(
        status=308,
        headers={"Location": location},
        body=json.dumps({"message": f"use {location}"}).encode(),
        content_type="application/json",
    )


#: The paths of the Open Inference Protocol routes (set by
#: :mod:`deepaas.api.oip`): their errors are ``{"error": ...}``, as OIP says.
OIP_PATHS = web.AppKey("oip_paths", re.Pattern[str])


#: Triton's extensions of the protocol that deepaas does not serve, by the
#: path segment after ``/v2`` (docs/oip.md says why): a client calling one
#: (tritonclient's ``get_system_shared_memory_status()``...) gets a 404
#: ``{"error": ...}`` that says so.
UNSERVED_EXTENSIONS = {
    "repository": "the model repository extension",
    "systemsharedmemory": "the system shared memory extension",
    "cudasharedmemory": "the CUDA shared memory extension",
    "trace": "the trace extension",
    "logging": "the logging extension",
}


async def error_response(
    request: web.BaseRequest, exc: BaseException
) -> web.StreamResponse | None:
    """The JSON answer to ``exc``, raised while handling ``request``; None
    when ``exc`` is an HTTP answer to send as it is (JSON already, such as a
    422 of :class:`ValidationFailed`, or not an error: a redirect).

    A 404 whose path differs from a route only by slashes is a 308 to it.
    On an Open Inference Protocol path (:data:`OIP_PATHS`) the answer is
    ``{"error": ...}`` instead of ``{"message": ...}``.
    """
    answer = await _error_response(request, exc)
    if not isinstance(request, web.Request):
        return answer
    oip_paths = request.app.get(OIP_PATHS)
    if oip_paths is None:
        return answer
    path = request.path
    # The path as the router matched it: an encoded slash (%2F) stays in its
    # segment (a version named "/"), not two segments or an empty one.
    routed = request.rel_url.path_safe
    if not oip_paths.fullmatch(routed):
        merged = merge_slashes(routed)
        if (
            answer is not None
            and answer.status == 404
            and merged != routed
            and oip_paths.fullmatch(merged)
        ):
            # /v2/models//infer: not redirected to /v2/models/infer (the
            # metadata of a model named "infer"), nor any OIP path.
            message = (
                f"no route {request.method} {path}: an empty path segment "
                "(//); Open Inference Protocol paths are not redirected"
            )
            return web.json_response({"error": message}, status=404)
        meant = path.rstrip("/")
        if (
            answer is not None
            and answer.status == 404
            and request.match_info.http_exception is not None  # no route
            and oip_paths.fullmatch(meant)
            and await _routed(request, request.rel_url.with_path(meant))
        ):
            # /v2/models/m/infer/ and the like: OIP paths end without a slash
            # (a slash is added only to reach a DEEPaaS route).
            message = (
                f"no route {path}; Open Inference Protocol paths have no "
                f"trailing slash: use {meant}"
            )
            return web.json_response({"error": message}, status=404)
        return answer
    if answer is None:  # sent as raised: a JSON error (413, 408...) too
        if isinstance(exc, web.HTTPException) and exc.status >= 400 and exc.text:
            exc.text = _as_oip_error(exc.text)
        return None
    if answer.status == 404 and request.match_info.http_exception is not None:
        unserved = _unserved_extension(routed, oip_paths)
        if unserved is not None:
            message = (
                f"no route {request.method} {path}: this server does not "
                f"implement {unserved} of the Open Inference Protocol"
            )
            return web.json_response({"error": message}, status=404)
    return oip_shaped(answer)


def oip_shaped(answer: web.StreamResponse) -> web.StreamResponse:
    """``answer`` (an error of deepaas's, ``{"message": ...}``) as OIP has
    it, ``{"error": ...}``; another answer as it is."""
    if answer.status >= 400 and isinstance(answer, web.Response) and answer.body:
        answer.body = _as_oip_error(bytes(answer.body).decode()).encode()  # type: ignore[arg-type]
    return answer


def _unserved_extension(path: str, oip_paths: re.Pattern[str]) -> str | None:
    """Which of :data:`UNSERVED_EXTENSIONS` ``path`` is under (the
    ``extension`` group of :func:`deepaas.api.oip.oip_paths`)."""
    match = oip_paths.fullmatch(path)
    extension = match and match.groupdict().get("extension")
    return UNSERVED_EXTENSIONS.get(extension) if extension else None


def _no_route(request: web.Request) -> str:
    """A 404's message for a path that is no route: where the routes are
    listed (the OpenAPI document under the app's base path), not aiohttp's
    bare "404: Not Found"."""
    text = f"no route {request.method} {elided(request.path)}"
    for resource in request.app.router.resources():
        listed = resource.canonical
        if listed.endswith("/openapi.json"):
            return f"{text}: the routes are listed in {listed}"
    return text


async def _routed(request: web.Request, url: URL) -> bool:
    """Whether ``url``'s path is a route of ``request``'s app, for any
    method (a 405 there: the path exists)."""
    match = await request.app.router.resolve(request.clone(rel_url=url))
    error = match.http_exception
    return error is None or error.status == 405


def _as_oip_error(text: str) -> str:
    """``{"message": m}`` as OIP has it: ``{"error": m}`` (other text as is)."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, dict) and set(document) == {"message"}:
        message = str(document["message"]).replace(MULTIPART_ADVICE, _OIP_ADVICE)
        return json.dumps({"error": message})
    return text


#: What an infer client can do instead (an infer body is held whole).
_OIP_ADVICE = (
    "send smaller tensors (a binary tensor is 4x smaller than its JSON), or "
    "ask the server's operator to raise it"
)


async def _error_response(
    request: web.BaseRequest, exc: BaseException
) -> web.StreamResponse | None:
    if isinstance(exc, web.HTTPException):
        if exc.status == 404 and isinstance(request, web.Request):
            redirect = await _redirect_to_route(request)
            if redirect is not None:
                return redirect
        if exc.status < 400 or exc.content_type == "application/json":
            return None
        text = exc.text or exc.reason or ""
        if (
            exc.status == 404
            and isinstance(request, web.Request)
            and request.match_info.http_exception is exc  # no route at all
        ):
            text = _no_route(request)
        elif isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            path = elided(request.path)
            text = f"{exc.method} is not allowed on {path}; it takes {allowed}"
        if exc.status == 417:  # raised by aiohttp before any route runs
            text = (
                f"{text}: the only expectation this server meets is "
                "'Expect: 100-continue'; leave the header out"
            )
            LOG.info("answered 417 to %s: %s", request.remote, text)
        headers = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() in ("allow", "retry-after")
        }
        return json_error(exc.status, text, headers)
    if isinstance(exc, DeepaasError):
        _log_error(request, exc)
        return json_error(exc.status, exc.message, exc.headers or None)
    expectation = _unmet_expectation(request)
    if expectation is not None:
        # No handler ran: aiohttp's expect handler failed to make its 417
        # (its text holds the value as sent, and a value of bytes that are
        # no UTF-8 cannot be encoded).
        refused = web.HTTPExpectationFailed(
            text=f"Unknown Expect: {echoed(expectation)}"
        )
        return await _error_response(request, refused)
    if isinstance(exc, OSError):
        return os_error(request, exc)
    LOG.error(
        "unexpected error handling %s %s",
        request.method,
        request.path,
        exc_info=exc,
    )
    return json_error(500, f"Internal server error: {type(exc).__name__}: {exc}")


def _unmet_expectation(request: web.BaseRequest) -> str | None:
    """The request's ``Expect`` value when it is one aiohttp refuses (417)
    before any handler runs: anything but ``100-continue``, in HTTP/1.1."""
    expectation = request.headers.get(hdrs.EXPECT)
    if (
        expectation
        and request.version == HttpVersion11
        and expectation.lower() != "100-continue"
    ):
        return expectation
    return None


def _log_error(request: web.BaseRequest, exc: DeepaasError) -> None:
    """A 5xx is a WARNING; a 4xx that comes with a detail (a plugin raised
    an HTTPException: its traceback) is INFO; other 4xx are the client's
    business and not logged. The detail is in the same record, so it shows
    wherever the line does."""
    if isinstance(exc, ShuttingDown):  # said once, when the drain began
        return
    if exc.status >= 500:
        level = logging.WARNING
    elif exc.detail:
        level = logging.INFO
    else:
        return
    summary = f"{request.method} {request.path} -> {exc.status}: {exc.message}"
    LOG.log(level, "%s", with_detail(summary, exc.detail))


def os_error(request: web.BaseRequest, exc: OSError) -> web.Response:
    """The answer to a file the server could not write; the path is logged,
    never sent."""
    where = f"{request.method} {request.path}"
    owner = _scratch_of(exc)
    if scratch.is_no_space(exc):
        LOG.warning("%s -> 507: %s", where, exc)
        if owner is None and exc.filename is not None:  # not an upload
            return json_error(507, "no space left on the server's disk: retry later")
        # A write (no file named) in a request: the uploads are its only writes.
        return json_error(507, scratch.NO_SPACE_MESSAGE)
    if isinstance(exc, FileNotFoundError) and owner is not None:
        LOG.warning("%s -> 503, the scratch directory is gone: %s", where, exc)
        owner.recheck()  # made again before the next request writes there
        return json_error(
            503,
            "the server's scratch directory was removed while this request "
            "was received; it is being made again: retry",
            {"Retry-After": "1"},
        )
    LOG.error("%s -> 500: %s", where, exc, exc_info=exc)
    # strerror, not str(exc): that names the file.
    reason = exc.strerror or ("" if exc.filename is not None else str(exc))
    message = f"Internal server error: {type(exc).__name__}: {reason}"
    return json_error(500, message.rstrip(": "))


def _scratch_of(exc: OSError) -> scratch.ScratchDir | None:
    """The live scratch directory that holds the file of ``exc``, if any."""
    if not isinstance(exc.filename, (str, bytes, os.PathLike)):
        return None
    return scratch.owner(os.path.dirname(os.fsdecode(exc.filename)))
