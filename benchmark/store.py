"""The results store: one RunRecord per JSON file under ``<results>/runs/``.

Records are written to a temporary file in the same directory, flushed, fsync'ed and
renamed into place, so a killed writer leaves either the whole record or none (at most a
stray ``.tmp`` file, which loaders ignore). Every stored record counts as finished for
resume, failed ones included: redoing a failure is a deliberate ``--rerun``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from benchmark.fileio import atomic_write_text
from benchmark.records import RunRecord

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


def write_record(results_dir: Path | str, record: RunRecord) -> Path:
    target = runs_dir(results_dir) / f"{record.id}.json"
    return atomic_write_text(target, record.model_dump_json(indent=2))


def load_records(results_dir: Path | str) -> list[RunRecord]:
    records = []
    for path in sorted(runs_dir(results_dir).glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            records.append(RunRecord.model_validate_json(path.read_text()))
        except (OSError, ValidationError, ValueError) as exc:
            warnings.warn(f"skipping unreadable record {path}: {exc}", stacklevel=2)
    return records


def finished_ids(results_dir: Path | str) -> set[str]:
    return {r.id for r in load_records(results_dir)}


def hparams_label(hparams: dict[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(hparams.items())) or "defaults"


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run: the spec's fields, status, and each metric's value and unit."""
    rows = []
    for r in records:
        row: dict[str, object] = {
            "id": r.id,
            "suite": r.spec.suite,
            "kind": r.spec.kind,
            "method": r.spec.method,
            "hparams": hparams_label(r.spec.hparams),
            "workload": r.spec.workload,
            "seed": r.spec.seed,
            "device": r.spec.device,
            "status": r.status,
            "reason": r.reason,
            "duration_s": r.duration_s,
        }
        for name, m in r.metrics.items():
            row[name] = m.value
            row[f"{name}__unit"] = m.unit
        rows.append(row)
    return pd.DataFrame(rows)
