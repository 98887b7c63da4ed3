"""One decoder per Content-Encoding, fed a request body a slice at a time.

Each yields at most ``limit`` bytes a step (a bomb is inflated in steps,
never whole), says whether output is ``pending`` without more input, and
whether the stream is ``complete``: every format we accept marks its end
(gzip's trailer, zlib's Adler-32, brotli's last meta-block, zstd's last
block of a frame), so a body that stops before that end is refused
(:class:`deepaas.api.guards.Decoded`) rather than the part that arrived
taken as the whole body. Bad data raises ``zlib.error`` or ValueError.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

from deepaas.api.limits import not_installed


class Decoder(Protocol):
    """What :class:`deepaas.api.guards.Decoded` uses of a decoder."""

    def decode(self, data: bytes, limit: int) -> bytes: ...

    @property
    def pending(self) -> bool: ...

    def complete(self) -> bool: ...


def decoder_for(encoding: str) -> Decoder:
    """The decoder of ``encoding`` (gzip, deflate, br or zstd); 400 when
    the library that decodes it is not installed."""
    if encoding in ("gzip", "deflate"):
        return _Zlib(encoding)
    from aiohttp import compression_utils as codecs

    if encoding == "zstd" and getattr(codecs, "HAS_ZSTD", False):
        return _Frames(codecs.ZstdDecompressor)
    if encoding == "br" and getattr(codecs, "HAS_BROTLI", False):
        return _Brotli(codecs.BrotliDecompressor())
    raise not_installed(encoding)


class _Zlib:
    """gzip or deflate (zlib-wrapped or raw, as aiohttp accepts), member
    after member; ``pending`` while output is left without more input."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding == "gzip"
        self._inflater: Any = None  # of the member under way
        self._tail = b""  # input not consumed yet
        self._full = False  # the last step filled its output: more may come
        self._members = 0  # ended so far: zero bytes are no gzip or deflate

    def decode(self, data: bytes, limit: int) -> bytes:
        if self._tail:
            data, self._tail = self._tail + data, b""
        if self._inflater is None:
            if not data:
                return b""
            if self._gzip:
                wbits = 16 + zlib.MAX_WBITS
            else:  # RFC 1950 header (CM = 8), else a raw deflate stream
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self._inflater = zlib.decompressobj(wbits)
        out: bytes = self._inflater.decompress(data, limit)
        if self._inflater.eof:  # a member ended: what follows starts another
            self._tail = self._inflater.unused_data
            self._inflater = None
            self._members += 1
            self._full = False
        else:
            self._tail = self._inflater.unconsumed_tail
            self._full = len(out) >= limit
        return out

    @property
    def pending(self) -> bool:
        return bool(self._tail) or self._full

    def complete(self) -> bool:
        return self._members > 0 and self._inflater is None and not self._tail


class _Frames:
    """zstd (RFC 8878), frame after frame, with the library's own
    decompressor (the one aiohttp uses: ``compression.zstd`` or
    ``backports.zstd``). Not through aiohttp's decoder: it starts a new
    decompressor at each frame's end, so a stream cut inside a frame and
    one that ended between two frames looked the same, and a zstd body cut
    short was taken as a shorter body. Here a frame under way when the body
    ends is a stream cut short."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._frame: Any = None  # the decompressor of the frame under way
        self._tail = b""  # input after the last frame's end, not fed yet
        self._full = False  # the frame has output left without more input
        self._frames = 0  # ended so far: zero bytes are no zstd

    def decode(self, data: bytes, limit: int) -> bytes:
        if self._tail:
            data, self._tail = self._tail + data, b""
        if self._frame is None:
            if not data:
                return b""
            self._frame = self._factory()
        try:
            out = bytes(self._frame.decompress(data, limit))
        except Exception as exc:  # ZstdError's only base is Exception
            raise ValueError(str(exc) or type(exc).__name__) from exc
        if self._frame.eof:  # what follows starts another frame
            self._tail = self._frame.unused_data
            self._frame = None
            self._frames += 1
            self._full = False
        else:  # it keeps the input it has not decoded yet
            self._full = not self._frame.needs_input
        return out

    @property
    def pending(self) -> bool:
        return bool(self._tail) or self._full

    def complete(self) -> bool:
        return self._frames > 0 and self._frame is None and not self._tail


class _Brotli:
    """br, through aiohttp's decoder for it (the Brotli library). brotli
    marks its last meta-block (RFC 7932, ISLAST), read from the library
    object aiohttp's decoder holds (an aiohttp internal,
    ``BrotliDecompressor._obj``; tests/api/test_body_decoding.py checks
    it). An empty stream (zero bytes) is refused."""

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self._fed = False

    def decode(self, data: bytes, limit: int) -> bytes:
        """Raises ValueError for bad data (``brotli.error`` has no base
        class but Exception)."""
        self._fed = self._fed or bool(data)
        try:
            return bytes(self._decoder.decompress_sync(data, max_length=limit))
        except Exception as exc:
            raise ValueError(str(exc) or type(exc).__name__) from exc

    @property
    def pending(self) -> bool:
        return bool(self._decoder.data_available)

    def complete(self) -> bool:
        if not self._fed:
            return False
        brotli = getattr(self._decoder, "_obj", None)
        if brotli is not None and hasattr(brotli, "is_finished"):
            return bool(brotli.is_finished())
        return True
