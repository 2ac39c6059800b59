"""Side-by-side: our GaLore against the published galore-torch and pytorch-optimizer.

Benchmark-only (``tox -e compare-galore``): those packages are never runtime dependencies.
The same tiny LLaMA, the same seed, the same batches, rank and gap; each optimizer trains
its own copy. Reported per implementation: the relative difference of every step's update
from ours (max over steps; "same algorithm" means float-rounding level), the median step
time with p10/p90 (warm-up excluded; CPU or synchronised CUDA), and the optimizer-state
bytes (every tensor kept between steps, the projector included: the packages keep it in a
projector object, which is counted here too).

Writes ``results/compare-galore/RESULTS.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmark.measure.environment import capture_environment
from benchmark.measure.tensors import tensor_bytes
from benchmark.measure.timing import Stats, synchronize
from plugins.optimizers.galore import build_galore
from plugins.optimizers.lowrank import split_params
from plugins.workloads.text import CorpusLM


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            total += tensor_bytes(value)
            matrix = getattr(value, "ortho_matrix", None)  # the packages' projector objects
            total += tensor_bytes(matrix) if matrix is not None else 0
    return total


def theirs_galore_torch(model: torch.nn.Module, args: argparse.Namespace) -> Any:
    from galore_torch import GaLoreAdamW

    lowrank, rest = split_params(model)
    return GaLoreAdamW(
        [
            {"params": rest},
            {
                "params": lowrank,
                "rank": args.rank,
                "update_proj_gap": args.gap,
                "scale": args.scale,
                "proj_type": "std",
            },
        ],
        lr=args.lr,
        eps=1e-8,
        weight_decay=0.0,
        no_deprecation_warning=True,
    )


def theirs_pytorch_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> Any:
    from pytorch_optimizer import GaLore

    lowrank, rest = split_params(model)
    return GaLore(
        [
            {"params": rest},
            {
                "params": lowrank,
                "rank": args.rank,
                "update_proj_gap": args.gap,
                "scale": args.scale,
                "projection_type": "std",
            },
        ],
        lr=args.lr,
        eps=1e-8,
        weight_decay=0.0,
        foreach=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--gap", type=int, default=50)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/compare-galore")
    args = parser.parse_args()
    device = torch.device(args.device)

    workload = CorpusLM()
    base = workload.build_model(0, device)
    impls = {
        "methodbench": lambda m: build_galore(
            m,
            lr=args.lr,
            rank=args.rank,
            update_gap=args.gap,
            scale=args.scale,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=0.0,
        ),
        "galore-torch 1.0": lambda m: theirs_galore_torch(m, args),
        "pytorch-optimizer": lambda m: theirs_pytorch_optimizer(m, args),
    }
    models = {name: copy.deepcopy(base) for name in impls}
    optimizers = {name: build(models[name]) for name, build in impls.items()}
    times: dict[str, list[float]] = {name: [] for name in impls}
    max_rel_diff: dict[str, float] = {name: 0.0 for name in impls}
    first_diverging: dict[str, int | None] = {name: None for name in impls}
    batches = workload.train_batches(0, device)
    for step in range(1, args.steps + 1):
        batch = next(batches)
        updates = {}
        for name, model in models.items():
            before = [p.detach().clone() for p in model.parameters()]
            opt = optimizers[name]
            opt.zero_grad(set_to_none=True)
            workload.loss(model, batch).backward()
            synchronize(device)
            t0 = time.perf_counter()
            opt.step()
            synchronize(device)
            if step > 3:
                times[name].append(time.perf_counter() - t0)
            updates[name] = [
                p.detach() - b for p, b in zip(model.parameters(), before, strict=True)
            ]
        ours = updates["methodbench"]
        for name, upd in updates.items():
            rel = max(
                float((a - b).norm() / b.norm().clamp(min=1e-30))
                for a, b in zip(upd, ours, strict=True)
            )
            max_rel_diff[name] = max(max_rel_diff[name], rel)
            if rel > 1e-4 and first_diverging[name] is None:
                first_diverging[name] = step
    rows = []
    ours_time = Stats.of(times["methodbench"]).median
    for name in impls:
        stats = Stats.of(times[name])
        rows.append(
            {
                "implementation": name,
                "max_rel_update_diff": max_rel_diff[name],
                "first_step_over_1e-4": first_diverging[name],
                "step_time_median_s": stats.median,
                "step_time_p10_s": stats.p10,
                "step_time_p90_s": stats.p90,
                "samples": stats.n,
                "time_ratio_vs_ours": stats.median / ours_time,
                "optimizer_state_bytes": state_bytes(optimizers[name]),
            }
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = capture_environment(device)
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "environment": env}, indent=2)
    )
    lines = [
        "# GaLore side by side",
        "",
        f"Tiny LLaMA (KJV), {args.steps} steps, rank {args.rank}, gap {args.gap}, scale "
        f"{args.scale}, lr {args.lr}, eps 1e-8, no weight decay; device {env['device_name']}, "
        f"torch {env['torch']}. Step time: median (p10-p90) over {rows[0]['samples']} steps, "
        "the first 3 excluded.",
        "",
        "| implementation | max rel. update diff vs ours | first step > 1e-4 | step time | "
        "time vs ours | optimizer state |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['implementation']} | {r['max_rel_update_diff']:.2e} | "
            f"{r['first_step_over_1e-4'] or '-'} | {r['step_time_median_s'] * 1e3:.2f} ms "
            f"({r['step_time_p10_s'] * 1e3:.2f}-{r['step_time_p90_s'] * 1e3:.2f}) | "
            f"{r['time_ratio_vs_ours']:.2f}x | {r['optimizer_state_bytes'] / 2**20:.3f} MiB |"
        )
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
