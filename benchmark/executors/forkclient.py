"""The executor's side of the fork server (``forkserver.py``): start it, ask it for a run,
and learn each run's pid and exit status, with the interface of ``subprocess.Popen`` that
the local executor uses (``pid``, ``poll``, ``kill``, ``wait``, ``returncode``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.executors.forkserver import MAX_MESSAGE

READY_TIMEOUT_S = 300.0  # preloading transformers on a slow disk takes a while
DISABLE_ENV = "METHODBENCH_FORKSERVER"  # "0": spawn a fresh interpreter per run


class ForkServerError(RuntimeError):
    """The fork server could not start or stopped answering."""


def forkserver_supported() -> bool:
    """Linux (``PR_SET_PDEATHSIG``, ``SOCK_SEQPACKET``), not disabled by the user."""
    return (
        sys.platform.startswith("linux")
        and hasattr(socket, "SOCK_SEQPACKET")
        and hasattr(socket, "send_fds")
        and os.environ.get(DISABLE_ENV, "1") != "0"
    )


class ForkedProcess:
    """A run forked by the server: what the executor needs of a ``Popen``."""

    def __init__(self, client: ForkServer, pid: int) -> None:
        self.client = client
        self.pid = pid
        self.returncode: int | None = None
        self.lost: str | None = None  # why no exit status will come (the server died)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode, self.lost = self.client.status(self.pid)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is not None:
            return  # reaped by the server: the pid may already be someone else's
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked run {self.pid}", timeout or 0)
            self.client.wait_change(0.05)
        return self.returncode


class ForkServer:
    """One server per executor run: started with the parent's environment and the suite's
    plugin modules preloaded, closed when the executor is done."""

    def __init__(self, preload: Sequence[str], log_path: Path) -> None:
        started = time.monotonic()
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._cond = threading.Condition()
        self._started: dict[str, int] = {}
        self._exited: dict[int, int] = {}
        self._closed: str | None = None
        self._ready = False
        self._send_lock = threading.Lock()
        cmd = [sys.executable, "-m", "benchmark.executors.forkserver"]
        cmd += ["--fd", str(child.fileno()), "--parent", str(os.getpid())]
        for module in preload:
            cmd += ["--preload", module]
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child.close()
        self._reader = threading.Thread(target=self._read, name="forkserver-reader", daemon=True)
        self._reader.start()
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._closed, timeout=READY_TIMEOUT_S)
            if not self._ready:
                reason = self._closed or f"not ready after {READY_TIMEOUT_S:g} s"
                self.close()
                raise ForkServerError(f"the fork server did not start: {reason}")
        # What starting it cost (a fresh interpreter, torch, the preloaded plugins): the
        # executor spreads it over the runs it serves.
        self.start_s = time.monotonic() - started

    @property
    def closed(self) -> str | None:
        with self._cond:
            return self._closed

    def _read(self) -> None:
        try:
            self._read_messages()
        except BaseException as exc:  # never leave the executor waiting on a dead reader
            with self._cond:
                self._closed = self._closed or f"its reader failed: {type(exc).__name__}: {exc}"
                self._cond.notify_all()

    def _read_messages(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError as exc:
                data, why = b"", f"{type(exc).__name__}: {exc}"
            else:
                why = "the fork server exited"
            if not data:
                with self._cond:
                    self._closed = self._closed or why
                    self._cond.notify_all()
                return
            message: dict[str, Any] = json.loads(data)
            with self._cond:
                if "ready" in message:
                    self._ready = True
                elif "started" in message:
                    self._started[str(message["started"])] = int(message["pid"])
                elif "exited" in message:
                    self._exited[int(message["exited"])] = int(message["returncode"])
                self._cond.notify_all()

    def start(
        self, run_id: str, args: dict[str, Any], stdout_w: int, stderr_w: int
    ) -> ForkedProcess:
        """Fork a run; ``stdout_w``/``stderr_w`` become its stdout and stderr (the caller
        keeps the read ends and closes these after the call)."""
        payload = json.dumps({"id": run_id, "args": args})
        if len(payload) >= MAX_MESSAGE:
            raise ForkServerError(f"the request for {run_id} is too large ({len(payload)} bytes)")
        with self._send_lock:
            try:
                socket.send_fds(self._sock, [payload.encode()], [stdout_w, stderr_w])
            except OSError as exc:
                raise ForkServerError(f"the fork server is gone: {exc}") from exc
        with self._cond:
            self._cond.wait_for(lambda: run_id in self._started or self._closed, timeout=60)
            if run_id not in self._started:
                raise ForkServerError(
                    f"the fork server did not start run {run_id}: {self._closed or 'no answer'}"
                )
            return ForkedProcess(self, self._started.pop(run_id))

    def status(self, pid: int) -> tuple[int | None, str | None]:
        with self._cond:
            if pid in self._exited:
                return self._exited.pop(pid), None
            if self._closed:
                return -signal.SIGKILL, f"the fork server stopped ({self._closed})"
            return None, None

    def wait_change(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; the server sees EOF
        with contextlib.suppress(OSError):
            self._sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
