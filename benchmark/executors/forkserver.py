"""A fork server: torch, the host and a suite's plugin modules imported once, and a fresh
child forked from that warm process for every run.

A process per run stays (a crash, an out-of-memory kill or a timeout still ends one run,
not the suite, and memory figures are the run's), but a run no longer pays a cold Python
start, torch's import and plugin discovery, which were most of a CPU run's fixed cost
(measured: ``results/scaling/README.md``). The server is single-threaded and
never runs torch code before forking, so the children inherit no thread pools or locks.

Linux only (elsewhere the executor spawns a worker per run as before). Protocol, on a
``SOCK_SEQPACKET`` Unix socket pair (one message per packet; a closed end reads empty):

- parent -> server: a JSON request ``{"id", "args"}`` with two file descriptors (the
  run's stdout and stderr pipes) attached;
- server -> parent: ``{"ready": pid}`` once, ``{"started": id, "pid": pid}`` per request
  and ``{"exited": pid, "returncode": code}`` when a child ends (``-signal`` when a
  signal killed it, as ``subprocess`` reports it).

The server dies with its parent (``PR_SET_PDEATHSIG`` on Linux; it also leaves when the
socket closes) and each child dies with the server, so a killed ``bench run`` leaves no
run behind.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import os
import select
import signal
import socket
import sys
from pathlib import Path

MAX_MESSAGE = 1 << 16
# Imported by the server before any fork: what every run needs.
CORE_MODULES = (
    "torch",
    "benchmark.executors.runner",
    "benchmark.host",
    "benchmark.measure.environment",
    "benchmark.measure.meters",
    "benchmark.protocols.base",
)


def _returncode(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def _preload(modules: list[str]) -> None:
    """Import what the runs will need; a module that fails is left for the run that uses
    it to report (its import is then retried, and fails, in the child)."""
    for name in [*CORE_MODULES, *modules]:
        with contextlib.suppress(Exception, SystemExit):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # package versions, read once for every run
        from benchmark.measure.environment import PACKAGES, _version

        for package in PACKAGES:
            _version(package)


def _child(request: dict[str, object], out_fd: int, err_fd: int, server: int) -> int:
    """The run's process: its own session, the run's pipes as stdout and stderr, the
    parent's current environment, then exactly what a spawned worker does."""
    from benchmark.executors.worker import die_with_parent, run_spec_file, set_regime

    os.setsid()  # its own process group, so a timeout kills whatever it starts too
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.close(out_fd)
    os.close(err_fd)
    # Fresh text streams on the new descriptors (the inherited objects carry the server's
    # buffers), line-buffered so progress reaches the parent as it happens.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    args = request["args"]
    assert isinstance(args, dict)
    # Environment variables read at call time follow the parent's current environment
    # (a file: an environment can outgrow a socket message).
    env_file = args.get("env_file")
    if env_file:
        env = json.loads(Path(str(env_file)).read_text())
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    die_with_parent(server)
    set_regime(
        concurrent=int(args["concurrent"]), cpus=str(args.get("cpus") or ""), launcher="forkserver"
    )
    return run_spec_file(
        Path(str(args["spec"])),
        Path(str(args["record"])),
        plugins=[str(p) for p in args.get("plugins", [])],
        threads=int(args.get("threads", 0)),
        handed_at=float(args["handed_at"]) if args.get("handed_at") is not None else None,
        launcher="forkserver",
    )


def _fork(
    sock: socket.socket, wake: tuple[int, int], request: dict[str, object], fds: list[int]
) -> int:
    server = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sock.close()
            signal.set_wakeup_fd(-1)
            for fd in wake:
                os.close(fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            gc.enable()
            code = _child(request, fds[0], fds[1], server)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    return pid


def serve(sock: socket.socket, preload: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when runs stop
    gc.disable()
    _preload(preload)
    # The runs execute the code imported here: their fingerprints are of this code, even
    # if the files change while the suite runs.
    from benchmark.provenance import freeze_digests

    tops = {"benchmark", *(m.split(".")[0] for m in preload)}
    freeze_digests(m for m in list(sys.modules) if m.split(".")[0] in tops)
    # The preloaded objects move to a generation the collector never scans: otherwise every
    # full collection in a child walks (and, by touching reference counts, copies) the
    # hundreds of thousands of objects torch and transformers left in the server.
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
    sock.send(json.dumps({"ready": os.getpid()}).encode())
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.read(wake_r, 4096)
        while children:  # reap every child that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            message = {"exited": pid, "returncode": _returncode(status)}
            sock.send(json.dumps(message).encode())
        if sock in ready:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
            except InterruptedError:
                continue
            if not data:  # the parent closed its end
                return
            request = json.loads(data)
            pid = _fork(sock, (wake_r, wake_w), request, fds)
            children.add(pid)
            sock.send(json.dumps({"started": request["id"], "pid": pid}).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.executors.forkserver")
    parser.add_argument("--fd", type=int, required=True, help="this end of the socket pair")
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    from benchmark.executors.worker import die_with_parent

    die_with_parent(args.parent)
    sock = socket.socket(fileno=args.fd)
    try:
        serve(sock, args.preload)
    except (ConnectionError, OSError):
        return 0  # the parent went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
