"""The pool's pipe reader and writer (``engine.frames``) against a real ``Connection``
on the other end: several frames per read, one split over many reads, the end of the
pipe, and frames the child reads with ``recv_bytes``."""

from __future__ import annotations

import multiprocessing as mp
import threading

from orchestrator.engine.frames import CHUNK, FrameReader, write_frame


def read_all(reader: FrameReader, count: int) -> list[bytes]:
    frames: list[bytes] = []
    while len(frames) < count:
        got = reader.read()
        assert got is not None, "the pipe ended early"
        frames += got
    return frames


def test_many_small_frames_come_whole_and_in_order_from_one_read() -> None:
    parent, child = mp.Pipe(duplex=True)
    sent = [f"message {n}".encode() * (n % 5 + 1) for n in range(50)]
    for body in sent:
        child.send_bytes(body)
    reader = FrameReader(parent.fileno())
    assert reader.read() == sent  # all 50 were in the pipe: one read brings them


def test_a_frame_bigger_than_a_read_waits_for_its_rest() -> None:
    parent, child = mp.Pipe(duplex=True)
    big = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # spans several reads
    sent = [b"before", big, b"", b"after"]
    writer = threading.Thread(target=lambda: [child.send_bytes(b) for b in sent])
    writer.start()  # a big frame blocks its writer until the reader makes room
    reader = FrameReader(parent.fileno())
    assert read_all(reader, len(sent)) == sent
    writer.join()


def test_the_end_of_the_pipe_reads_as_none_after_the_last_frame() -> None:
    parent, child = mp.Pipe(duplex=True)
    child.send_bytes(b"last words")
    child.close()
    reader = FrameReader(parent.fileno())
    assert reader.read() == [b"last words"]
    assert reader.read() is None


def test_written_frames_are_what_recv_bytes_reads_on_the_other_end() -> None:
    parent, child = mp.Pipe(duplex=True)
    big = bytes(range(256)) * (4 * CHUNK // 256)  # more than the pipe holds at once
    sent = [b"", b"small", big, b"after"]
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(child.recv_bytes() for _ in sent))
    reader.start()
    for body in sent:
        write_frame(parent.fileno(), body)
    reader.join()
    assert received == sent
