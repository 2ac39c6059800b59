"""A/B runs: one suite under a git revision and under the working tree, on one machine.

Absolute timings on a shared machine move by tens of percent from one hour to the next, so
a timing taken today and a baseline taken last week say little about a change. Running both
sides now, interleaved run by run (as ``asv continuous`` does), puts whatever load the
machine has on both equally. The order alternates per configuration (rev, tree, tree, rev,
...) so that a drift within the session does not favour one side. Both sides run one at a
time with the same torch threads, so their records share one timing regime and their
timings are judged (``report/compare.py``).

The revision is checked out into a temporary ``git worktree``; its workers import
``benchmark`` and ``plugins`` from there (first on their path, and their working
directory), so its records measure its code. The suite file, its expansion and the
registry that checks names are the working tree's.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmark.executors.local import LocalExecutor, RunEvents, SilentEvents
from benchmark.host import Registry
from benchmark.records import RunRecord, RunSpec


class ABError(RuntimeError):
    """The revision cannot be checked out (not a git checkout, an unknown revision)."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def git_root(start: Path) -> Path:
    done = _git(start, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise ABError(f"{start} is not inside a git checkout: {done.stderr.strip()}")
    return Path(done.stdout.strip())


@contextlib.contextmanager
def worktree(root: Path, rev: str) -> Iterator[tuple[Path, str]]:
    """(a detached checkout of ``rev``, its full commit id), removed afterwards."""
    resolved = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}")
    if resolved.returncode != 0:
        raise ABError(f"unknown revision {rev!r}: {resolved.stderr.strip()}")
    commit = resolved.stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="methodbench-ab-"))
    added = _git(root, "worktree", "add", "--detach", str(folder), commit)
    if added.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise ABError(f"git worktree add failed: {added.stderr.strip()}")
    try:
        yield folder, commit
    finally:
        _git(root, "worktree", "remove", "--force", str(folder))


def run_ab(
    specs: Sequence[RunSpec],
    rev_source: Path,
    results_root: Path,
    registry: Registry,
    *,
    plugins: Sequence[str] = (),
    events: RunEvents | None = None,
) -> tuple[list[RunRecord], list[RunRecord]]:
    """(records of the revision, records of the working tree), interleaved run by run."""
    events = events or SilentEvents()
    rev_side = LocalExecutor(
        results_root / "rev", registry, jobs=1, plugins=plugins, source=rev_source
    )
    # Both sides spawn a fresh interpreter per run (the revision's workers must import its
    # own code, which a fork server holding this tree's modules cannot give), so both are
    # timed under one regime.
    tree_side = LocalExecutor(
        results_root / "tree", registry, jobs=1, plugins=plugins, forkserver=False
    )
    rev_records: list[RunRecord] = []
    tree_records: list[RunRecord] = []
    for i, spec in enumerate(specs):
        # The revision's records claim no code fingerprint: the worker records its own.
        rev_spec = spec.model_copy(update={"code": ""})
        order = [(rev_side, rev_spec, rev_records), (tree_side, spec, tree_records)]
        if i % 2:
            order.reverse()
        for executor, s, sink in order:
            sink.extend(executor.run([s], events))
    return rev_records, tree_records
