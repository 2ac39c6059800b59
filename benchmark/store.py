"""The results store: one RunRecord per JSON file under ``<results>/runs/``.

Records are written to a temporary file in the same directory, flushed, fsync'ed and
renamed into place, so a killed writer leaves either the whole record or none (at most a
stray ``.tmp`` file, which loaders ignore). Every stored record counts as finished for
resume, failed ones included: redoing a failure is a deliberate ``--rerun``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import filelock
from pydantic import ValidationError

from benchmark.fileio import atomic_write_text
from benchmark.records import RunRecord, hparams_label

if TYPE_CHECKING:
    import pandas as pd

RUNS = "runs"


class StoreError(OSError):
    """The results directory cannot be created or written."""


def runs_dir(results_dir: Path | str) -> Path:
    return Path(results_dir) / RUNS


def check_writable(results_dir: Path | str) -> None:
    path = runs_dir(results_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True) as probe:
            probe.write(b"probe")
    except OSError as exc:
        raise StoreError(
            f"results directory {results_dir} is not writable: {exc.strerror or exc}"
        ) from None


LOCK = ".lock"


@contextlib.contextmanager
def exclusive(results_dir: Path | str) -> Iterator[None]:
    """Hold the results directory for one ``bench run`` at a time: two runs of a suite
    into one directory would both do every run and overwrite each other's logs. The lock
    is the kernel's (flock), so a killed holder releases it."""
    lock = filelock.FileLock(str(Path(results_dir) / LOCK))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise StoreError(
            f"results directory {results_dir} is in use by another bench run (it holds "
            f"{Path(results_dir) / LOCK}); wait for it to finish or pass another --results"
        ) from None
    try:
        yield
    finally:
        lock.release()


def write_record(results_dir: Path | str, record: RunRecord) -> Path:
    target = runs_dir(results_dir) / f"{record.id}.json"
    return atomic_write_text(target, record.model_dump_json(indent=2))


def record_paths(results_dir: Path | str) -> list[Path]:
    """Record files (hidden ones are a writer's temporaries)."""
    folder = runs_dir(results_dir)
    if not folder.is_dir():
        return []
    # Regular files only: a FIFO named like a record would block every reader.
    return [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".") and p.is_file()]


MAX_RECORD_BYTES = 256 << 20  # far above any record (curves included): a cap, not a size


def read_records(results_dir: Path | str) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """(records, [(path, why) for each file that is not a readable record]).

    A corrupt file (a hand edit, a disk error, a record from an incompatible version) must
    neither crash a report nor vanish from it silently: reports say how many were left
    out and why."""
    records, unreadable = [], []
    for path in record_paths(results_dir):
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES:,} bytes")
            records.append(RunRecord.model_validate_json(raw))
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {"msg": str(exc), "loc": ()}
            where = ".".join(str(p) for p in first.get("loc", ())) or "record"
            unreadable.append((path, f"{where}: {first['msg']}"))
        except (OSError, ValueError) as exc:
            unreadable.append((path, f"{type(exc).__name__}: {exc}"))
    return records, unreadable


def load_records(results_dir: Path | str) -> list[RunRecord]:
    return read_records(results_dir)[0]


def finished_ids(results_dir: Path | str) -> set[str]:
    return {r.id for r in load_records(results_dir)}


def current_records(records: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(current, superseded). A record is superseded when a later record measured the same
    experiment, or when a later record of the same method on the same workload ran newer
    code (its fingerprint differs): a grid point that a changed suite no longer runs must
    not stay in the table as if today's code had produced it. A leaderboard counts each
    seed once, and only as the latest code measured it."""
    ordered = sorted(records, key=lambda r: r.started_at or "")
    newest_code: dict[tuple[str, str, str], str] = {}
    for r in ordered:
        newest_code[(r.spec.kind, r.spec.method, r.spec.workload_label)] = r.spec.code
    latest: dict[str, RunRecord] = {}
    superseded: list[RunRecord] = []
    for r in ordered:
        if r.spec.code != newest_code[(r.spec.kind, r.spec.method, r.spec.workload_label)]:
            superseded.append(r)
            continue
        key = r.spec.content(with_code=False)
        if key in latest:
            superseded.append(latest[key])
        latest[key] = r
    return list(latest.values()), superseded


METRIC_FIELDS = ("unit", "n", "ci_low", "ci_high", "std", "reason")


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run: the spec's fields (workload options included, so ``mnist-cnn`` with
    ``ood: mnist-noise`` stays apart from the default), status, provenance and regime, and
    each metric's value with its unit, sample count, 95% interval, std and null reason
    (columns ``<metric>__unit``, ``<metric>__n``, ...)."""
    rows = []
    for r in records:
        regime = r.environment.get("regime") or {}
        row: dict[str, object] = {
            "id": r.id,
            "suite": r.spec.suite,
            "kind": r.spec.kind,
            "method": r.spec.method,
            "hparams": hparams_label(r.spec.hparams),
            "workload": r.spec.workload,
            "workload_options": json.dumps(r.spec.workload_options, sort_keys=True),
            "workload_label": r.spec.workload_label,
            "seed": r.spec.seed,
            "device": r.spec.device,
            "code": r.spec.code,
            "status": r.status,
            "reason": r.reason,
            "duration_s": r.duration_s,
            "harness_overhead_s": r.harness_overhead_s,
            "git_commit": r.environment.get("git_commit"),
            "git_dirty": r.environment.get("git_dirty"),
            "torch_threads": regime.get("torch_threads"),
            "concurrent_runs": regime.get("concurrent_runs"),
            "pinned": regime.get("pinned"),
        }
        for name, m in r.metrics.items():
            row[name] = m.value
            for key in METRIC_FIELDS:
                row[f"{name}__{key}"] = getattr(m, key)
        rows.append(row)
    import pandas as pd  # only reports need it: listing and validating stay light

    return pd.DataFrame(rows)
