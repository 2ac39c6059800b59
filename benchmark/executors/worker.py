"""What a run's own process does, whether it was started as ``python -m
benchmark.executors.worker`` or forked from the fork server (``forkserver.py``).

The parent passes the spec as a JSON file and a path for the record; progress goes to
stdout as ``@@progress <text>`` lines the parent shows live. A process per run gives clean
memory figures and lets the parent survive a crash, an out-of-memory kill or a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
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
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def set_regime(*, concurrent: int, cpus: str, launcher: str) -> None:
    """The timing regime travels as environment variables, so the record's environment
    capture (which also runs inline and on Ray) reads it from one place."""
    from benchmark.measure.environment import CONCURRENT_RUNS_VAR, LAUNCHER_VAR, PINNED_VAR

    os.environ[CONCURRENT_RUNS_VAR] = str(concurrent) if concurrent > 0 else "unknown"
    os.environ[LAUNCHER_VAR] = launcher
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        os.environ[PINNED_VAR] = "1"


def run_spec_file(
    spec_path: Path,
    record_path: Path,
    *,
    plugins: Sequence[str] = (),
    threads: int = 0,
    handed_at: float | None = None,
    launcher: str = "subprocess",
) -> int:
    """Run the spec in ``spec_path`` here and write its record to ``record_path``."""
    import torch

    from benchmark.executors.runner import execute
    from benchmark.fileio import atomic_write_text
    from benchmark.host import Registry
    from benchmark.records import RunSpec

    if threads > 0:
        torch.set_num_threads(threads)
        # Every other pool too (OpenBLAS under numpy and scipy, scikit-learn's OpenMP):
        # they size themselves when first loaded, which in a forked run was in the server,
        # on all of the machine's cores rather than this run's.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    spec = RunSpec.model_validate(json.loads(Path(spec_path).read_text()))
    registry = Registry(extra_plugins=list(plugins))

    def progress(message: str) -> None:
        print(PROGRESS_PREFIX + message.replace("\n", " "), flush=True)

    record = execute(spec, registry, progress, handed_at=handed_at, launcher=launcher)
    atomic_write_text(Path(record_path), record.model_dump_json())
    return 0


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
    parser.add_argument(
        "--handed-at", type=float, default=None, help="time.monotonic() when the spec was handed"
    )
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    set_regime(concurrent=args.concurrent, cpus=args.cpus, launcher="subprocess")
    return run_spec_file(
        Path(args.spec),
        Path(args.record),
        plugins=args.plugin,
        threads=args.threads,
        handed_at=args.handed_at,
        launcher="subprocess",
    )


if __name__ == "__main__":
    code = main()
    # Leave at once: the record is written, and a plugin's non-daemon thread or atexit hook
    # must not keep the process (and its timeout) alive after it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
