"""Slow clients, and requests aiohttp's parser refuses, seen where bytes arrive.

aiohttp has no timeout for request heads: a client sending one a byte at a
time keeps its connection for ``keepalive_timeout`` (3630 s by default), and
a few hundred such clients (slowloris) hold sockets for an hour.
:class:`HeaderTimeout` closes them after ``--client-timeout`` (``T``), as
Go's ``ReadHeaderTimeout`` and nginx's ``client_header_timeout`` do.

A request's head (request line and headers) must be complete within ``T`` of
its first byte, whenever that byte comes: on a new connection, after a
keep-alive pause, pipelined while an earlier request is handled or its
response streams, or in the packet that ends an earlier request. A
connection silent for ``T`` is closed too, without an answer (nothing was
asked); one that began a head gets a JSON 408 (``{"error": ...}`` on an OIP
path) and is closed, or aborted when an earlier answer is still going out
on it (a 408 would land inside it; that request is cancelled). Each is
counted by ``on_timeout("headers")``. Not timed: idle time between requests
(``keepalive_timeout``), empty lines, bodies (the body reader's 408),
handlers and responses.

To know where heads start, :class:`_GuardedHandler`, aiohttp's
``RequestHandler``, follows the HTTP/1.1 framing: it feeds aiohttp's parser
each head up to its blank line and sees the request come out, then skips
its ``Content-Length`` body bytes, or follows a chunked body to its end.
Where it cannot tell (aiohttp's queue of 32 pipelined requests is full, an
upgrade request set bytes aside) it errs towards not timing: the next bytes
start a clock.

What the parser refuses (bad request line, method or URL, a line over
``max_line_size``/``max_field_size``, too many headers...) is answered JSON
``{"message": ...}`` (``{"error": ...}`` on an OIP path, read from the head's
first bytes, kept without a copy until aiohttp parsed it) saying what to
change (the advice of :func:`deepaas.api.refusals.explain`), logged at info
and reported to ``on_bad_request(status)`` (the front door never sees it).
A body the parser finds bad (deflate cut short, bad chunk size) fails the
request reading it, which the app answers 400, instead of leaving it waiting
and answering twice.

aiohttp internals used (tested on 3.14; 3.11 to 3.13 fail the tests, so
pyproject.toml requires 3.14): ``RequestHandler._messages``,
``_request_count``, ``_waiter`` and ``_request_handler``, ``_ErrInfo.exc``,
``Server._kwargs``. Cost per request: a ``loop.time()``, two ``bytes.find``
over its head, and for a head followed by body bytes in the same packet, a
second call of aiohttp's parser (little: feeding head and body in one call
instead saved about 1,200 of the ~350,000 instructions of a JSON predict,
measured with callgrind, and was not kept).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Final

from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.streams import StreamReader

from deepaas import tracing
from deepaas.api.errors import json_error, merge_slashes, oip_shaped
from deepaas.api.refusals import explain, late_head_answer, request_target
from deepaas.api.site import GuardedTCPSite

# GuardedTCPSite lives in deepaas.api.site; importable from here as before.
__all__ = ["HEADERS", "GuardedTCPSite", "HeaderTimeout"]

LOG = logging.getLogger(__name__)

HEADERS = "headers"  # the phase label of a header timeout
END: Final = b"\r\n\r\n"  # the end of a request head (aiohttp parses strictly)
CRLF: Final = b"\r\n"
HEAD, BODY, FOLLOW, OFF, DONE = range(5)  # _GuardedHandler._mode


class HeaderTimeout:
    """Closes the connections that do not send a request's head in time.

    ``on_timeout(phase)`` is called (with ``"headers"``) for each connection
    closed, before it is closed; ``on_bad_request(status)`` for each request
    aiohttp's parser refused (answered 400 before the front door). One guard
    may serve several sites.
    """

    def __init__(
        self,
        timeout: float,
        on_timeout: Callable[[str], None] | None = None,
        on_bad_request: Callable[[int], None] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"the header timeout must be more than 0, got {timeout}")
        self.timeout = float(timeout)
        self.on_timeout = on_timeout
        self.on_bad_request = on_bad_request
        # Where an answer is an OIP error, {"error": ...} (set by the server
        # from its app: deepaas.api.errors.OIP_PATHS); None: nowhere.
        self.oip_paths: re.Pattern[str] | None = None
        self.connections: set[web.RequestHandler] = set()  # open ones
        self.timed_out = 0  # connections closed by this guard

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """What ``server()`` makes, guarded: a protocol factory for a site."""
        loop = asyncio.get_running_loop()
        kwargs = server._kwargs  # what server() passes: keep-alive, limits, logs
        handler = server.request_handler  # the front door (deepaas.api.front)

        def make() -> asyncio.Protocol:
            protocol = _GuardedHandler(self, server, loop=loop, **kwargs)
            protocol._request_handler = handler
            return protocol

        return make

    def _expired(self, transport: asyncio.BaseTransport) -> None:
        self.timed_out += 1
        LOG.debug(
            "closing the connection of %s: no complete request head in %gs",
            transport.get_extra_info("peername"),
            self.timeout,
        )
        if self.on_timeout is not None:
            self.on_timeout(HEADERS)


class _GuardedHandler(web.RequestHandler):
    """aiohttp's protocol, following the framing of the bytes it is fed.

    ``_mode`` HEAD: between requests or in a head (``_deadline`` set once a
    head's first byte came; ``_carry``: its last 3 bytes; ``_line_done``: its
    request line ended). BODY: ``_left`` bytes of ``_body`` to come. FOLLOW:
    ``_body`` (or an unknown one, None) until it ends. OFF: not HTTP any more.
    DONE: the parser refused a body; nothing more is read.
    ``_silent``: not a byte yet (the deadline is the connection's).
    """

    __slots__ = (
        "_body",
        "_carry",
        "_chunked",
        "_deadline",
        "_guard",
        "_head_at",
        "_head_bytes",
        "_left",
        "_line_done",
        "_line_len",
        "_mode",
        "_refusal",
        "_seen",
        "_silent",
        "_timer",
    )

    def __init__(self, guard: HeaderTimeout, server: web.Server, **kwargs: Any):
        super().__init__(server, **kwargs)
        self._guard = guard
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._mode, self._left, self._carry, self._silent = HEAD, 0, b"", True
        self._refusal: BaseException | None = None  # set on a body's reader
        self._chunked = self._line_done = False
        self._line_len = self._seen = 0  # _seen: _request_count when last looked
        # Where the latest head began (no copy): its target, should it have
        # to be answered before aiohttp parsed it (an error, a timeout).
        self._head_bytes, self._head_at = b"", 0

    # -- the clock -------------------------------------------------------------

    def _arm(self) -> None:
        deadline = self._loop.time() + self._guard.timeout
        self._deadline = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)
        # else: the pending timer fires no later (deadlines only grow) and
        # sleeps again until this one: no timer per request.

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        transport = self.transport
        if deadline is None or transport is None or transport.is_closing():
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._check)
            return
        self._deadline = None
        self._guard._expired(transport)
        if self._silent or self._current_request is not None:
            # Not a byte yet (nothing asked), or an answer is going out on
            # this connection (ours would land inside it): just close.
            transport.abort()
        else:
            self._answer_timeout(transport)

    def _answer_timeout(self, transport: asyncio.WriteTransport) -> None:
        """A JSON 408 to a head that did not arrive in time, then close
        (aborted when the client does not read it either)."""
        transport.write(late_head_answer(self._guard.timeout, self._oip_target()))
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _oip_target(self) -> bool:
        """Whether the head that began last asks for an OIP path (as far as
        its request line came)."""
        oip_paths = self._guard.oip_paths
        target = request_target(self._head_bytes, self._head_at)
        if not oip_paths or not target:
            return False
        # /v2/models//infer too: its 404 would be an OIP error
        return any(
            oip_paths.fullmatch(path) for path in (target, merge_slashes(target))
        )

    def _begin(self, data: bytes) -> int:
        """Where a head starts in ``data`` (after empty lines), its clock
        started; -1 if none does."""
        if not data:
            return -1
        start = 0
        if data[0] in CRLF:  # rare: no copy for a head that starts at once
            start = len(data) - len(data.lstrip(CRLF))
            if start == len(data):
                return -1
        self._arm()
        self._silent = self._line_done = False
        self._carry, self._line_len = b"", 0
        self._head_bytes, self._head_at = data, start
        return start

    def _scan(self, data: bytes, start: int) -> None:
        """Head bytes: measure its request line (for a too-long line)."""
        if not self._line_done:
            eol = data.find(b"\n", start)
            self._line_done = eol >= 0
            self._line_len += (eol if eol >= 0 else len(data)) - start

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.connections.add(self)
        self._arm()  # a connection that never says anything
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._deadline = None
        self._body = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._guard.connections.discard(self)
        super().connection_lost(exc)

    def set_parser(self, parser: Any, *args: Any, **kwargs: Any) -> None:
        self._mode = OFF  # an accepted upgrade (WebSocket): not HTTP any more
        self._deadline = None
        super().set_parser(parser, *args, **kwargs)

    def data_received(self, data: bytes) -> None:
        if self._mode >= OFF:
            if self._mode == OFF:
                super().data_received(data)
            return  # DONE: the parser is past a body it refused
        if not data:
            # aiohttp resuming its parser after flow control paused it
            # (``resume_reading``): the parser goes on with the bytes it
            # held, which were framed when they came.
            self._feed(data)
            return
        if self._request_count != self._seen:
            self._resync()  # aiohttp parsed bytes it had set aside
        while data:
            if self._mode == BODY:
                piece, data = data[: self._left], data[self._left :]
                self._left -= len(piece)
                self._feed(piece)
                if not self._left and self._mode == BODY:
                    self._mode, self._body = HEAD, None
            elif self._mode == FOLLOW:
                self._follow(data)
                return
            elif self._mode == HEAD:
                data = self._head(data)
            else:
                super().data_received(data)
                return

    # -- framing ---------------------------------------------------------------------

    def _head(self, data: bytes) -> bytes:
        """Feed ``data`` up to the end of a head; return the rest."""
        start = 0
        if self._deadline is None or self._silent:
            start = self._begin(data)
            if start < 0:  # empty lines between requests: not a head yet
                self._feed(data)
                return b""
        self._scan(data, start)
        carry = self._carry
        end = (carry + data).find(END, start) if carry else data.find(END, start)
        if end < 0:
            self._carry = (carry + data)[-3:]
            self._feed(data)
            return b""
        end += len(END) - len(carry)
        count = self._request_count
        whole = end == len(data)  # the usual case: one head, no body after it
        super().data_received(data if whole else data[:end])
        self._seen = self._request_count
        self._deadline, self._carry = None, b""
        if self._request_count == count:
            # aiohttp set the head aside (its queue is full, or an upgrade):
            # lost track; the next bytes start a clock again.
            self._mode, self._body = FOLLOW, None
        else:
            self._after(*self._messages[-1], framed=True)
        return b"" if whole else data[end:]

    def _follow(self, data: bytes) -> None:
        """A body of unknown length, then what follows it."""
        body, before = self._body, self._carry
        self._carry = (before + data[-3:])[-3:]
        self._feed(data)
        if self._mode != FOLLOW or self._body is not body:
            return  # aiohttp refused it, or parsed more than expected
        if body is not None and not body.is_eof():
            return
        self._mode, self._body = HEAD, None
        if body is not None and self._chunked:
            # A chunked body ends with a blank line: bytes after the last one
            # begin a head (they hold no blank line, or aiohttp parsed them).
            buf = before + data
            rest = buf[buf.rfind(END) + len(END) :] if END in buf else b""
            start = self._begin(rest)
            if start >= 0:
                self._scan(rest, start)
                self._carry = rest[-3:]

    def _feed(self, data: bytes) -> None:
        """Hand aiohttp bytes in which no request should end."""
        super().data_received(data)
        if self._request_count != self._seen:
            self._resync()

    def _resync(self) -> None:
        """Requests were parsed where not expected: go on from the newest."""
        self._seen = self._request_count
        self._deadline, self._carry = None, b""
        if self._messages:
            self._after(*self._messages[-1], framed=False)
        else:  # already handled: where it ended is unknown
            self._mode, self._body = HEAD, None

    def _after(self, msg: Any, payload: StreamReader, framed: bool) -> None:
        """What follows the head of ``msg`` (``framed``: right after it)."""
        if isinstance(getattr(msg, "exc", None), BaseException):
            self._refused(msg.exc)  # answered by handle_error: keep its head
            return
        self._head_bytes = b""  # parsed: not kept with what came after it
        if payload.is_eof():
            self._mode, self._body = HEAD, None
        else:
            length = "" if msg.chunked else msg.headers.get("Content-Length", "")
            if framed and length.isdigit():
                self._mode, self._body, self._left = BODY, payload, int(length)
            else:
                self._mode, self._body, self._chunked = FOLLOW, payload, msg.chunked

    def _refused(self, exc: BaseException) -> None:
        """aiohttp's parser refused the bytes; it answers and closes."""
        body, self._mode, self._body = self._body, OFF, None
        messages = self._messages
        waiting = self._waiter is not None  # for a message: this error
        if (
            body is not None
            and not body.is_eof()
            and (len(messages) > 1 or not waiting)
        ):
            # A body undecodable at its end (bad deflate, bad chunk size...):
            # aiohttp would leave its request waiting for more, and answer
            # this error after it. Fail the read instead, and close after
            # that request's answer: not at once (close() would drop it when
            # requests pipelined before it are still queued), and without
            # lingering to read the rest of its body after the answer (that
            # read raised this error again, logged as an unhandled
            # exception): aiohttp closes a connection whose request left
            # its body unread. No byte more is parsed.
            messages.pop()
            self._refusal = web.RequestPayloadError(
                explain(exc, self._line_len, self.max_headers)
            )
            body.set_exception(self._refusal)
            self._lingering_time = 0.0
            self._mode = DONE

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's log of an error it caught; not for the refusal of a body
        that aiohttp was reading after its request's answer (lingering):
        the connection is closed, as it should be, and any client could
        otherwise have a traceback logged at ERROR at will."""
        if self._refusal is not None and kwargs.get("exc_info") is self._refusal:
            LOG.debug("closed after a refused body: %s", self._refusal)
            return
        super().log_exception(*args, **kwargs)

    # -- errors aiohttp answers itself ---------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """JSON instead of aiohttp's plain text, saying what to change, with
        a request id of its own (the front door never sees this request)."""
        if request.writer.output_size > 0:  # too late for an answer
            return super().handle_error(request, status, exc, message)
        request_id = tracing.new_id()
        tracing.REQUEST_ID.set(request_id)  # this request's task: for the log
        if isinstance(exc, hx.HttpProcessingError) and status < 500:
            text = explain(exc, self._line_len, self.max_headers)
            # Port scanners and TLS clients: debug, as aiohttp logs them.
            first = self._request_count == 1 and "Method" in type(exc).__name__
            level = logging.DEBUG if first else logging.INFO
            LOG.log(level, "answered %d to %s: %s", status, request.remote, text)
            if self._guard.on_bad_request is not None:
                self._guard.on_bad_request(status)
        else:
            self.log_exception("Error handling request", exc_info=exc)
            text = f"the server failed on this request ({status}); see its log"
        response = json_error(status, text, {tracing.HEADER: request_id})
        response.force_close()
        return oip_shaped(response) if self._oip_target() else response
