"""Wall time of a suite against how it is executed, with the harness's cost per run.

Runs one suite (default: the smoke suite on CPU, assets cached) into fresh folders under
each regime: a fresh interpreter per run (``METHODBENCH_FORKSERVER=0``, how runs started
before the fork server), the fork server with ``--jobs 1``, ``--jobs 2`` (each run pinned
to its own core) and the Ray executor on this machine. Reports the ``bench run`` wall
time, the sum of the runs' own durations, and each record's ``harness_overhead_s``
(median and max). Regimes alternate over ``--repeats`` rounds so that a drifting machine
load falls on all of them; run it with the machine otherwise idle.

Writes ``results/scaling/RESULTS.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmark.measure.environment import capture_environment

REGIMES: dict[str, tuple[list[str], dict[str, str]]] = {
    # name: (bench run flags, environment)
    "spawn-jobs1": (["--jobs", "1"], {"METHODBENCH_FORKSERVER": "0"}),
    "fork-jobs1": (["--jobs", "1"], {}),
    "fork-jobs2": (["--jobs", "2"], {}),
    "ray-local": (["--executor", "ray"], {}),
}


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]


def run_regime(suite: str, flags: list[str], env: dict[str, str], folder: Path) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "benchmark.cli", "run", suite, "--device", "cpu"]
    cmd += ["--results", str(folder), "--no-report", *flags]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    records = _records(folder)
    overheads = [
        r["harness_overhead_s"] for r in records if r.get("harness_overhead_s") is not None
    ]
    return {
        "exit": proc.returncode,
        "wall_s": wall,
        "runs": len(records),
        "ok": sum(r["status"] == "ok" for r in records),
        "sum_duration_s": sum(r.get("duration_s") or 0.0 for r in records),
        "overhead_median_s": statistics.median(overheads) if overheads else None,
        "overhead_max_s": max(overheads) if overheads else None,
        "launchers": sorted({str(r.get("harness", {}).get("launcher")) for r in records}),
        "stderr_tail": proc.stderr[-500:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="suites/smoke.yaml")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated names")
    parser.add_argument("--out", default="results/scaling")
    args = parser.parse_args(argv)
    chosen = [r.strip() for r in args.regimes.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in REGIMES]
    if unknown:
        parser.error(f"unknown regimes {unknown}; known: {list(REGIMES)}")
    rows: dict[str, list[dict[str, Any]]] = {r: [] for r in chosen}
    with tempfile.TemporaryDirectory(prefix="mb-scaling-") as tmp:
        # One untimed pass so every asset and reference model is cached.
        run_regime(args.suite, ["--jobs", "1"], {}, Path(tmp) / "warm")
        for i in range(args.repeats):
            for name in chosen if i % 2 == 0 else reversed(chosen):
                flags, env = REGIMES[name]
                result = run_regime(args.suite, flags, env, Path(tmp) / f"r{i}")
                rows[name].append(result)
                print(f"{name}: {result['wall_s']:.1f} s wall, exit {result['exit']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    environment = capture_environment("cpu")
    (out / "results.json").write_text(
        json.dumps({"suite": args.suite, "rows": rows, "environment": environment}, indent=2)
    )
    lines = [
        f"# Wall time of `{args.suite}` against the executor ({args.repeats} round(s))",
        "",
        f"Machine: {environment.get('cpu', '?')}, {os.cpu_count()} cores; commit "
        f"{environment.get('git_commit')} (dirty: {environment.get('git_dirty')}). "
        "Assets cached; each regime into a fresh results folder; regimes alternated.",
        "",
        "| regime | bench run wall, s | runs ok | sum of run durations, s | harness overhead "
        "per run, median / max, s | launcher |",
        "|---|---|---|---|---|---|",
    ]
    for name, results in rows.items():
        walls = [r["wall_s"] for r in results]
        wall = f"{statistics.median(walls):.1f}" + (
            f" ({min(walls):.1f}-{max(walls):.1f})" if len(walls) > 1 else ""
        )
        last = results[-1]
        med, mx = last["overhead_median_s"], last["overhead_max_s"]
        over = "n/a" if med is None else f"{med:.2f} / {mx:.2f}"
        lines.append(
            f"| {name} | {wall} | {last['ok']}/{last['runs']} | {last['sum_duration_s']:.1f} | "
            f"{over} | {', '.join(last['launchers'])} |"
        )
    lines += [
        "",
        "Harness overhead: from the executor taking a run's spec to the start of the run's "
        "own work, plus from the protocol's return to the record reaching the executor "
        "(`harness_overhead_s` in each record). Under Ray the spec also waits for Ray to "
        "schedule the task, which that figure does not include (the wall time does).",
    ]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
