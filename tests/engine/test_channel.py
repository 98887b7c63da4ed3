"""The parent's end of a child's socket writes a frame carrying a big array
a slice at a time, as the child reads it, keeping frames in order: the
array is not copied whole into the event loop's write buffer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import numpy as np
import pytest

from deepaas.engine import protocol
from deepaas.engine.channel import WRITE_SLICE, Channel

pytestmark = pytest.mark.timeout(30)


def read_all(sock: socket.socket) -> bytes:
    """The child's side: everything until end-of-file."""
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_big_frame_is_written_a_slice_at_a_time_and_in_order() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    received: list[Any] = []
    channel = Channel("child", received.append)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_unix_connection(lambda: channel, sock=ours)
    try:
        x = np.arange(4 << 20, dtype=np.float32)  # 16 MiB
        frame = protocol.pack_parts(protocol.Invoke("infer", [(1, {"x": x})]))
        assert channel.write(frame)
        assert channel.write(protocol.pack(protocol.Ready(7)))  # waits behind it
        # The loop's buffer holds at most one slice, not the array.
        assert transport.get_write_buffer_size() <= WRITE_SLICE
        channel.finish()  # end-of-file once the waiting parts are written
        data = await asyncio.to_thread(read_all, theirs)
    finally:
        transport.close()
        theirs.close()
    invoke, ready = protocol.FrameDecoder().feed(data)
    assert ready == protocol.Ready(7)
    assert np.array_equal(invoke.items[0][1]["x"], x)


async def test_closing_drops_what_waits() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel = Channel("child", lambda message: None)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_unix_connection(lambda: channel, sock=ours)
    try:
        x = np.zeros(4 << 20, dtype=np.float32)
        channel.write(protocol.pack_parts(protocol.Invoke("infer", [(1, {"x": x})])))
        assert channel._waiting
        channel.close()
        assert not channel._waiting  # the array may be freed
        assert not channel.write(protocol.pack(protocol.Ready(1)))
    finally:
        transport.abort()
        theirs.close()
