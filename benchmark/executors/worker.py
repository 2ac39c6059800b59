"""Entry point of a run's own process: ``python -m benchmark.executors.worker``.

The parent passes the spec as JSON and a path for the record; progress goes to stdout as
``@@progress <text>`` lines the parent shows live. A process per run gives clean memory
figures and lets the parent survive a crash, an out-of-memory kill or a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROGRESS_PREFIX = "@@progress "


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies, however the parent dies
    (kill -9, a CI cancellation): a worker runs in its own session, so nothing else ties
    its lifetime to the parent's, and an orphan would go on writing into a log that the
    resumed suite reopens. Elsewhere the parent's SIGINT/SIGTERM handling still stops it."""
    if not sys.platform.startswith("linux") or parent <= 0:
        return
    import ctypes
    import os
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.executors.worker")
    parser.add_argument("--spec", required=True, help="path to the RunSpec JSON")
    parser.add_argument("--record", required=True, help="where to write the RunRecord JSON")
    parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--concurrent", type=int, default=1, help="runs that may share the machine; 0: unknown"
    )
    parser.add_argument("--cpus", default="", help="cores to pin this run to, e.g. 0,1")
    parser.add_argument("--parent", type=int, default=0, help="die when this process dies")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)

    import os

    from benchmark.measure.environment import CONCURRENT_RUNS_VAR, PINNED_VAR

    # The timing regime travels as environment variables so the record's environment
    # capture (which also runs inline and on Ray) reads it from one place.
    os.environ[CONCURRENT_RUNS_VAR] = str(args.concurrent) if args.concurrent > 0 else "unknown"
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        os.environ[PINNED_VAR] = "1"

    import torch

    from benchmark.executors.runner import execute
    from benchmark.fileio import atomic_write_text
    from benchmark.host import Registry
    from benchmark.records import RunSpec

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    spec = RunSpec.model_validate(json.loads(Path(args.spec).read_text()))
    registry = Registry(extra_plugins=args.plugin)

    def progress(message: str) -> None:
        print(PROGRESS_PREFIX + message.replace("\n", " "), flush=True)

    record = execute(spec, registry, progress)
    atomic_write_text(Path(args.record), record.model_dump_json())
    return 0


if __name__ == "__main__":
    code = main()
    # Leave at once: the record is written, and a plugin's non-daemon thread or atexit hook
    # must not keep the process (and its timeout) alive after it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
