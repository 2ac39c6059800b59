"""Side-by-side: our OOD detectors against pytorch-ood on the same model and data.

Benchmark-only (``tox -e compare-pytorch-ood``): pytorch-ood imports torchvision, which
does not import beside the CPU torch 2.13 wheel, so that environment pins its own torch
and torchvision and pytorch-ood is never a runtime dependency.

The trained ``mnist-cnn`` reference model, its fit batches (2,000 training digits with
labels), its 1,000 held-out test digits (ID) and each OOD set go to both implementations
with the same hyperparameters. For MSP, Energy, ODIN, Mahalanobis, kNN and ReAct it
reports:

- score agreement: ours = a·theirs + b fitted by least squares, the expected (a, b) from
  the two definitions, the largest residual relative to the score range, and Spearman's
  rank correlation (1 = the same ordering, so the same ROC);
- AUROC of both (OOD positive, our ``benchmark.metrics.ood``) and their difference;
- score latency per sample: median over batches of 256, ours and theirs timed in
  alternation so that machine noise hits both alike; warm-up pass excluded.

Writes ``results/compare-pytorch-ood/RESULTS.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from benchmark.measure.environment import capture_environment
from benchmark.measure.timing import Stats
from benchmark.metrics.ood import auroc
from plugins.detectors.baselines import Energy, MaxSoftmax
from plugins.detectors.knn import KNN
from plugins.detectors.mahalanobis import Mahalanobis
from plugins.detectors.odin import ODIN
from plugins.detectors.react import ReAct
from plugins.workloads.images import ImageClassification

Scorer = Callable[[torch.Tensor], torch.Tensor]


def build(
    name: str, model: torch.nn.Module, fit: list, args: argparse.Namespace
) -> tuple[Scorer, Scorer, str]:
    """(ours, theirs, expected relation ours = a·theirs + b) for one method, both fitted."""
    import pytorch_ood.detector as pod

    if name == "msp":
        ours = MaxSoftmax()
        return lambda x: ours.score(model, x), pod.MaxSoftmax(model).predict, "a=1, b=0"
    if name == "energy":
        ours_e = Energy()
        return lambda x: ours_e.score(model, x), pod.EnergyBased(model).predict, "a=1, b=0"
    if name == "odin":
        ours_o = ODIN(temperature=args.temperature, epsilon=args.epsilon)
        theirs_o = pod.ODIN(model, eps=args.epsilon, temperature=args.temperature)
        return lambda x: ours_o.score(model, x), theirs_o.predict, "a=1, b=0"
    if name == "mahalanobis":
        ours_m = Mahalanobis()
        ours_m.fit(model, fit)
        theirs_m = pod.Mahalanobis(model.penultimate)
        theirs_m.fit(fit)
        # Theirs: ½·dᵀS⁻¹d with S the *summed* scatter (+1e-6·I); ours: dᵀΣ⁺d, Σ = S/N.
        n = sum(len(y) for _, y in fit)
        return lambda x: ours_m.score(model, x), theirs_m.predict, f"a=2N={2 * n}, b=0"
    if name == "knn":
        ours_k = KNN()
        ours_k.fit(model, fit)
        assert ours_k.k is not None
        theirs_k = pod.KNN(model.penultimate, k=ours_k.k)
        theirs_k.fit(fit)
        return lambda x: ours_k.score(model, x), theirs_k.predict, f"a=1, b=0 (k={ours_k.k})"
    if name == "react":
        ours_r = ReAct(percentile=90.0)
        ours_r.fit(model, fit)
        theirs_r = pod.ReAct(backbone=model.penultimate, head=model.last_layer, percentile=0.9)
        theirs_r.fit(fit)
        return lambda x: ours_r.score(model, x), theirs_r.predict, "a=1, b=0"
    raise ValueError(name)


def scores_and_times(
    ours: Scorer, theirs: Scorer, batches: list[torch.Tensor], repeats: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"ours": [], "theirs": [], "t_ours": [], "t_theirs": []}
    for rep in range(repeats + 1):  # repetition 0 warms up and is not timed
        for x in batches:
            for who, fn in (("ours", ours), ("theirs", theirs)):
                t0 = time.perf_counter()
                s = torch.as_tensor(fn(x)).detach().double().reshape(-1).cpu().numpy()
                dt = (time.perf_counter() - t0) / len(x)
                if rep == 0:
                    out[who].append(s)
                else:
                    out[f"t_{who}"].append(dt)
    out["ours"], out["theirs"] = np.concatenate(out["ours"]), np.concatenate(out["theirs"])
    return out


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    a, b = np.polyfit(theirs, ours, 1)
    residual = np.abs(ours - (a * theirs + b)).max() / max(np.ptp(ours), 1e-300)
    rho = stats.spearmanr(ours, theirs).statistic
    return {"a": float(a), "b": float(b), "max_rel_residual": float(residual), "spearman": rho}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ood", nargs="+", default=["animal-mnist", "mnist-noise"])
    parser.add_argument(
        "--methods", nargs="+", default=["msp", "energy", "odin", "mahalanobis", "knn", "react"]
    )
    parser.add_argument("--temperature", type=float, default=1000.0)
    parser.add_argument("--epsilon", type=float, default=0.0014)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/compare-pytorch-ood")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    rows = []
    for ood in args.ood:
        wl = ImageClassification(ood=ood)
        model = wl.model(cpu)
        fit = wl.fit_batches(cpu)
        id_batches = list(wl.test_batches("in", cpu))
        ood_batches = list(wl.test_batches("out", cpu))
        for name in args.methods:
            ours, theirs, relation = build(name, model, fit, args)
            s_in = scores_and_times(ours, theirs, id_batches, args.repeats)
            s_out = scores_and_times(ours, theirs, ood_batches, args.repeats)
            both_ours = np.r_[s_in["ours"], s_out["ours"]]
            both_theirs = np.r_[s_in["theirs"], s_out["theirs"]]
            t_ours = Stats.of(s_in["t_ours"] + s_out["t_ours"])
            t_theirs = Stats.of(s_in["t_theirs"] + s_out["t_theirs"])
            a_ours = auroc(s_in["ours"], s_out["ours"])
            a_theirs = auroc(s_in["theirs"], s_out["theirs"])
            rows.append(
                {
                    "pair": f"mnist-5k vs {ood}",
                    "method": name,
                    "expected": relation,
                    **agreement(both_ours, both_theirs),
                    "auroc_ours": a_ours,
                    "auroc_theirs": a_theirs,
                    "auroc_abs_diff": abs(a_ours - a_theirs),
                    "latency_ours_s": t_ours.median,
                    "latency_theirs_s": t_theirs.median,
                    "latency_samples": t_ours.n,
                    "theirs_over_ours": t_theirs.median / t_ours.median,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    write(Path(args.out), args, rows)


def write(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    import pytorch_ood

    out.mkdir(parents=True, exist_ok=True)
    env = capture_environment(torch.device("cpu"))
    env["pytorch_ood"] = getattr(pytorch_ood, "__version__", "unknown")
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "environment": env}, indent=2)
    )
    lines = [
        "# OOD detectors side by side: methodbench vs pytorch-ood",
        "",
        f"mnist-cnn (BatchNorm CNN on MNIST-5k), fit on its 2,000 labelled fit digits, scored "
        f"on 1,000 held-out digits (ID) and 1,000 OOD images; ODIN T={args.temperature:g}, "
        f"ε={args.epsilon:g}; ReAct 90th percentile; kNN with our k scaled to the fit set. "
        f"pytorch-ood {env['pytorch_ood']}, torch {env['torch']}, {env['device_name']}. "
        "Agreement: ours = a·theirs + b (least squares), largest residual relative to the "
        "range of our scores, Spearman ρ. Latency: median seconds per sample over batches "
        f"of 256 ({rows[0]['latency_samples'] if rows else 0} batch timings each, "
        "alternating ours and theirs, warm-up excluded).",
        "",
        "| pair | method | expected | fitted a | fitted b | max rel. residual | Spearman ρ | "
        "AUROC ours | AUROC theirs | abs diff | ours µs/sample | theirs µs/sample | "
        "theirs / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pair']} | {r['method']} | {r['expected']} | {r['a']:.6g} | {r['b']:.2e} | "
            f"{r['max_rel_residual']:.1e} | {r['spearman']:.6f} | {r['auroc_ours']:.6f} | "
            f"{r['auroc_theirs']:.6f} | {r['auroc_abs_diff']:.1e} | "
            f"{r['latency_ours_s'] * 1e6:.1f} | {r['latency_theirs_s'] * 1e6:.1f} | "
            f"{r['theirs_over_ours']:.2f}x |"
        )
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
