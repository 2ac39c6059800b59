"""Derive an optimizer workload's target loss from tuned AdamW runs, as AlgoPerf does.

A target every run meets at its first evaluation says nothing (the tiny LLaMA's old 6.0
nats was met at step 30 by all 19 configurations). The target should be what a
well-tuned AdamW reaches at a fraction (default 70%) of the budget: then faster methods
reach it earlier, slower ones later or never, and steps-to-target discriminates.

Usage: run AdamW on a learning-rate grid with several seeds that the benchmark itself
does not use (`suites/targets-tiny-llama.yaml`: seeds 10-12), then

    python benchmarks/derive_target.py RESULTS_DIR [--fraction 0.7]

It picks the learning rate with the best mean validation loss at the end, takes each of
its seeds' validation curves at fraction x budget (linear interpolation between
evaluations) and prints their median, rounded to 0.05 nats.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from benchmark import store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results")
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--method", default="adamw")
    args = parser.parse_args(argv)

    current, _superseded = store.current_records(store.load_records(args.results))
    records = [
        r
        for r in current
        if r.status == "ok" and r.spec.method == args.method and "val_eval_loss" in r.metrics
    ]
    if not records:
        print(f"no ok {args.method} records with a validation loss in {args.results}")
        return 2
    by_lr: dict[float, list] = {}
    for r in records:
        by_lr.setdefault(r.spec.hparams.get("lr"), []).append(r)
    best_lr, best = min(
        by_lr.items(),
        key=lambda kv: statistics.fmean(r.metrics["val_eval_loss"].value for r in kv[1]),
    )
    at = []
    for r in best:
        curve = r.curves["eval_loss"]
        points = [(x, y) for x, y in zip(curve.x, curve.y, strict=True) if y is not None]
        step = args.fraction * (r.spec.budget.steps or curve.x[-1])
        at.append(float(np.interp(step, [x for x, _ in points], [y for _, y in points])))
    target = round(statistics.median(at) / 0.05) * 0.05
    for lr, rs in sorted(by_lr.items()):
        mean = statistics.fmean(r.metrics["val_eval_loss"].value for r in rs)
        print(f"lr={lr}: final validation loss {mean:.4f} over {len(rs)} seeds")
    print(
        f"tuned lr={best_lr}; validation loss at {args.fraction:.0%} of the budget per seed: "
        + ", ".join(f"{v:.4f}" for v in at)
        + f"; median {statistics.median(at):.4f} -> target {target:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
