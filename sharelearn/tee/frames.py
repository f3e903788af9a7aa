"""The one frame format of the TEE route: u32 big-endian length ‖ codec map with an `op` field.

Every TEE channel uses it: host <-> enclave control streams (simulated process sockets, Gramine
stdio pipes), and the loopback TCP endpoints of enclave hosts and the cluster manager. Frames
over `MAX_FRAME` bytes and messages that are not maps with a string `op` are refused.
"""

from __future__ import annotations

import os
import struct
from typing import Protocol

from sharelearn.core.codec import decode, encode
from sharelearn.core.errors import ProtocolError
from sharelearn.core.types import Wire

__all__ = ["MAX_FRAME", "FrameStream", "PipeStream", "recv_frame", "send_frame"]

MAX_FRAME = 64 << 20


class FrameStream(Protocol):
    """A byte stream the control frames travel on: a socket, or `PipeStream` (Gramine's stdio)."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, n: int, /) -> bytes: ...


class PipeStream:
    """`FrameStream` over a pair of pipe file descriptors (read end, write end)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def sendall(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]

    def recv(self, n: int, /) -> bytes:
        return os.read(self.read_fd, n)


def send_frame(sock: FrameStream, msg: dict[str, Wire]) -> None:
    """Send one length-prefixed codec message over the control socket."""
    payload = encode(msg)
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _recv_exact(sock: FrameStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("enclave control socket closed", peer="enclave")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: FrameStream) -> dict[str, Wire]:
    """Receive one length-prefixed codec message; refuse oversized frames and non-maps."""
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise ProtocolError(f"enclave control frame of {size} bytes exceeds {MAX_FRAME}", peer="enclave")
    msg = decode(_recv_exact(sock, size), peer="enclave", tag="control")
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolError("enclave control frame is not a message map", peer="enclave")
    return msg
