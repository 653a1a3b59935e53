"""The parent's end of a worker pipe: read a chunk at a time, written a frame at a time.

``Connection.recv_bytes`` makes two system calls per message (the length, then the
body) and a round of Python checks around each; the coordinator reads every worker's
messages, several per task. ``FrameReader`` reads whatever the pipe holds in one call
and cuts it into the frames ``Connection.send_bytes`` wrote (a 4-byte big-endian
length, or -1 and an 8-byte length for a frame of 2 GiB or more, then the body).
A frame the pipe holds only part of waits in the buffer for the rest. ``write_frame``
writes the same frames with one ``os.write`` where ``Connection.send_bytes`` adds a
round of checks and copies; the child reads them with ``recv_bytes`` as ever.
"""

from __future__ import annotations

import os
import struct

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
CHUNK = 1 << 16


class FrameReader:
    """Whole frames from a readable file descriptor, without blocking once it is ready."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def read(self) -> list[bytes] | None:
        """One ``read`` of the pipe (call it when it is readable: it blocks otherwise);
        the whole frames it completed, or None at the end of the pipe."""
        try:
            data = os.read(self.fd, CHUNK)
        except OSError:
            return None
        if not data:
            return None
        self._buffer += data
        return self._frames()

    def _frames(self) -> list[bytes]:
        buffer, frames, at = self._buffer, [], 0
        while len(buffer) - at >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, at)
            start = at + _LENGTH.size
            if size == -1:
                if len(buffer) - start < _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(buffer, start)
                start += _LONG_LENGTH.size
            if start + size > len(buffer):
                break
            frames.append(bytes(buffer[start : start + size]))
            at = start + size
        del buffer[:at]
        return frames


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame as ``Connection.send_bytes`` would (blocking while the pipe is
    full); ``OSError`` when the other end is gone."""
    size = len(payload)
    long = size >= 0x7FFFFFFF  # 2 GiB and more: -1, then the length in 8 bytes
    header = _LENGTH.pack(-1) + _LONG_LENGTH.pack(size) if long else _LENGTH.pack(size)
    view = memoryview(header + payload)
    while view:
        view = view[os.write(fd, view) :]
