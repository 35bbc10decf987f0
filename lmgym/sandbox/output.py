"""What a run prints, kept as it comes: the head and tail of each stream, never all of it.

A program that prints a gigabyte must cost the parent kilobytes, and must be stopped once
it has printed more than `output_kill_bytes`.
"""

from __future__ import annotations

import asyncio

from lmgym.sandbox.limits import SandboxLimits


class OutputCapture:
    """The first and last bytes of a stream, and a count of the rest."""

    def __init__(self, keep: int):
        keep = max(keep, 2)  # a tail of 0 would slice as [-0:], everything
        self.head_size, self.tail_size = keep // 2, keep - keep // 2
        self.head, self.tail, self.total = b"", b"", 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_size - len(self.head)
        if room > 0:
            self.head, data = self.head + data[:room], data[room:]
        if data:
            self.tail = (self.tail + data)[-self.tail_size :]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head, tail = self.head.decode(errors="replace"), self.tail.decode(errors="replace")
        return f"{head}\n... [{self.dropped} bytes dropped] ...\n{tail}" if self.dropped else head + tail


class OutputProtocol(asyncio.SubprocessProtocol):
    """Collects both pipes without buffering more than the capture keeps."""

    def __init__(self, limits: SandboxLimits):
        loop = asyncio.get_running_loop()
        self.streams = {1: OutputCapture(limits.output_bytes), 2: OutputCapture(limits.output_bytes)}
        self.kill_bytes = limits.output_kill_bytes
        self.exited = loop.create_future()
        self.closed = {1: loop.create_future(), 2: loop.create_future()}
        self.over = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.streams[fd].add(data)
        if self.streams[1].total + self.streams[2].total > self.kill_bytes and not self.over.done():
            self.over.set_result(None)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self.closed and not self.closed[fd].done():
            self.closed[fd].set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
