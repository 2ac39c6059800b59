"""A run's log with a size cap that keeps its head and its tail.

A worker is plugin code: it may print 400 MB without a newline. Reading its pipes line by
line would hold that in the parent's memory, and an unbounded log fills the disk. Pipes
are read in bounded chunks; the first ``head_bytes`` go to the file as they come (where a
crash's cause usually is: the start-up), the last ``tail_bytes`` are kept in memory and
appended on close (where the final error is), and what lies between is counted.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

HEAD_BYTES = 1 << 20
TAIL_BYTES = 1 << 20
CHUNK = 1 << 16


class CappedLog:
    """Thread-safe: stdout and stderr pumps write to one log."""

    def __init__(
        self, path: Path, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES
    ) -> None:
        self.path = path
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._written = 0
        self._tail = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()
        self.closed = False

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.closed:
                return
            room = self.head_bytes - self._written
            if room > 0:
                self._file.write(data[:room])
                self._file.flush()
                self._written += min(room, len(data))
                data = data[room:]
            if not data:
                return
            self._tail += data
            excess = len(self._tail) - self.tail_bytes
            if excess > 0:
                del self._tail[:excess]
                self._dropped += excess

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            if self._dropped:
                self._file.write(
                    f"\n[... {self._dropped:,} bytes of output left out: the log keeps the "
                    f"first {self.head_bytes:,} and the last {self.tail_bytes:,} ...]\n".encode()
                )
            self._file.write(bytes(self._tail))
            self._file.close()
            self.closed = True


def pump(stream: IO[bytes], log: CappedLog, on_line: object = None) -> None:
    """Copy ``stream`` to ``log`` in chunks of at most CHUNK bytes. ``on_line``: called
    with each complete line of up to CHUNK bytes that it wants to claim (returns True when
    the line is consumed, e.g. a progress message) instead of logging it."""
    claim = on_line if callable(on_line) else None
    while True:
        # readline with a limit never holds more than CHUNK bytes of a line without end.
        chunk = stream.readline(CHUNK)
        if not chunk:
            return
        if claim is not None and chunk.endswith(b"\n") and claim(chunk):
            continue
        log.write(chunk)


def read_tail(path: Path, size: int) -> str | None:
    """The last ``size`` bytes of a file as text, without reading the rest."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - size))
            data = f.read()
    except OSError:
        return None
    return data.decode(errors="replace") or None
