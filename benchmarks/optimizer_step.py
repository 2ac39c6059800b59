"""One optimizer step at real layer sizes: every built-in optimizer on LLaMA-shaped weights.

Issue 18, item 4. The weight sets are the transformer blocks of the GaLore paper's LLaMA
60M (hidden 512, intermediate 1376, 8 layers) and 130M (768, 2048, 12 layers): per layer
the attention q/k/v/o (h x h), the MLP gate/up (i x h) and down (h x i), and the two
RMSNorm gains (h), which the hybrid optimizers hand to their AdamW. Embeddings and the
output head are left out (vocabulary-dependent, and AdamW for every method). ``--layers N``
(default 2) takes N of the model's layers: every layer has the same shapes, so a step's
cost, its state and its bytes are linear in N (a full model is ``layers_full / N`` times
the figures here). Gradients are fixed random N(0, 1e-3^2) tensors set as ``.grad``, no
model forward: the time is the optimizer step alone.

Implementations: torch AdamW (``foreach=True``, the reference of every ratio), every
optimizer registered under ``kind: optimizer`` with the llama60m suite's hyperparameters
(rank 128 at 60M and 256 at 130M, as in the GaLore paper; each method's default gap), and
where they implement the same method, galore-torch's ``GaLoreAdamW`` and pytorch-optimizer's
``GaLore`` and ``Muon`` (benchmark-only packages: ``tox -e optimizer-step``).

Per implementation and shape:
- the non-refresh step: an instance with the method's own gap, steps after the first (the
  first computes the projector; the timed steps stay inside the first interval);
- the refresh step: a second instance with gap 1, so every step recomputes its projector
  (SVD, range finder, FLORA's momentum transfer, LORENZA's extra gradient) and carries
  the state as the method does at a refresh; the refresh's extra time over the plain step
  is amortised over the default gap (AdaRankGrad: ``max_gap``, its longest interval);
- the ratio of both to torch AdamW's step at the same shapes;
- the optimizer-state bytes after the steps (every tensor in ``optimizer.state``, the
  packages' projector objects included);
- for the other packages' GaLore, the largest relative difference of one update from ours
  (the refresh step and the step after it, identical hyperparameters: "same update" means
  float-rounding level).

Timing is interleaved: one step of each implementation in turn, warm-up excluded (each
instance's first step and ``--warmup`` rounds), median with p10/p90 and n; a step kind stops
after ``--budget-s`` of measured time once it has ``--min-repeats`` samples (refresh steps:
``--min-refresh``). On a loaded machine use ``--threads 1``: a multi-threaded SVD next to
other work was measured 5-15x slower than single-threaded (OpenMP threads waiting on each
other), which would time the neighbours rather than the method.
LORENZA is a closure optimizer: its step evaluates the loss 3 times (4 at a refresh) and
takes one gradient; here the closure is the linear loss sum <G, W> whose gradient is the
fixed G, so those evaluations cost one dot product per weight and the gradient is a copy.
On a model each one is a forward pass, which is the method's real extra cost and is not
in these figures.

On CUDA (``--device cuda``) each step also gets a bytes-moved floor: parameters and
gradients read, parameters written, state read and written, once each, at the copy
bandwidth measured with a large tensor copy; the ratio step/floor says how far a step is
from memory-bound. Writes ``RESULTS.md`` and ``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.measure.environment import capture_environment
from benchmark.measure.tensors import tensor_bytes
from benchmark.measure.timing import Stats, Stopwatch, synchronize
from plugins.optimizers.lowrank import split_params


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    layers_full: int
    rank: int


SHAPES = {
    "60m": Shape("60m", 512, 1376, 8, 128),
    "130m": Shape("130m", 768, 2048, 12, 256),
}

# The llama60m suite's settings (suites/optimizers-llama60m.yaml), the rank set per shape.
SUITE_HPARAMS: dict[str, dict[str, Any]] = {
    "adamw": {"lr": 0.001},
    "adafactor": {"lr": 0.001},
    "galore": {"lr": 0.01, "update_gap": 200, "scale": 0.25},
    "plumage": {"lr": 0.01, "update_gap": 200, "scale": 0.25},
    "adarankgrad": {"lr": 0.01, "eta": 0.9, "scale": 0.25},
    "sumo": {"lr": 0.001, "update_gap": 200},
    "flora": {"lr": 0.001, "kappa": 1000, "scale_parameter": False},
    "lorenza": {"lr": 0.01, "update_gap": 200},
    "muon": {"lr": 0.02, "adam_lr": 0.001},
}
RANK_KEY = {"galore": "rank", "plumage": "rank", "sumo": "rank", "flora": "rank"}
RANK_KEY |= {"lorenza": "rank", "adarankgrad": "max_rank"}
GAP_KEY = {"galore": "update_gap", "plumage": "update_gap", "sumo": "update_gap"}
GAP_KEY |= {"lorenza": "update_gap", "adarankgrad": "max_gap", "flora": "kappa"}
REFERENCE = "torch AdamW (foreach)"
GRAD_STD = 1e-3


def llama_weights(shape: Shape, layers: int, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The blocks' weights, named as split_params expects (``attn``/``mlp`` matrices)."""
    g = torch.Generator().manual_seed(0)
    h, i = shape.hidden, shape.intermediate

    def param(*size: int) -> nn.Parameter:
        w = torch.randn(*size, generator=g) * 0.02 if len(size) == 2 else torch.ones(*size)
        return nn.Parameter(w.to(device=device, dtype=dtype))

    root = nn.Module()
    root.layers = nn.ModuleList()
    for _ in range(layers):
        block = nn.Module()
        block.attn = nn.ParameterDict({k: param(h, h) for k in ("q", "k", "v", "o")})
        block.mlp = nn.ParameterDict({"gate": param(i, h), "up": param(i, h), "down": param(h, i)})
        block.attn_norm = param(h)
        block.mlp_norm = param(h)
        root.layers.append(block)
    return root


def fixed_grads(model: nn.Module) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(p.shape, generator=g) * GRAD_STD).to(device=p.device, dtype=p.dtype)
        for p in model.parameters()
    ]


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            total += tensor_bytes(value)
            matrix = getattr(value, "ortho_matrix", None)  # galore-torch's projector object
            total += tensor_bytes(matrix) if matrix is not None else 0
    return total


# --------------------------------------------------------------------------- implementations


@dataclass
class Impl:
    """How to build one implementation on a model; ``method`` names our registered
    method it implements (for the comparison rows)."""

    name: str
    build: Callable[[nn.Module, bool], torch.optim.Optimizer]  # (model, refresh_every_step)
    method: str | None
    gap: int | None
    ours: bool


def registered_optimizers() -> dict[str, Any]:
    from benchmark.host import Registry

    registry = Registry(entry_points=False)
    return {name: spec for (kind, name), spec in registry.methods.items() if kind == "optimizer"}


def our_impls(shape: Shape) -> list[Impl]:
    impls = []
    for name, spec in sorted(registered_optimizers().items()):
        hp = {**spec.defaults, **SUITE_HPARAMS.get(name, {})}
        if name in RANK_KEY:
            hp[RANK_KEY[name]] = shape.rank
        gap = hp.get(GAP_KEY[name]) if name in GAP_KEY else None

        def build(model: nn.Module, refresh: bool, spec=spec, hp=hp, name=name):  # type: ignore[no-untyped-def]
            kwargs = dict(hp)
            if refresh:
                kwargs[GAP_KEY[name]] = 1
            factory = spec.load() if hasattr(spec, "load") else spec.factory  # lazy refs
            return factory(model, **kwargs)

        impls.append(Impl(name, build, name, gap, ours=True))
    return impls


def external_impls(shape: Shape) -> list[Impl]:
    """The packages' implementations of our methods, with our hyperparameters."""
    impls: list[Impl] = []
    galore = {**SUITE_HPARAMS["galore"], "rank": shape.rank, "eps": 1e-6}
    try:
        from galore_torch import GaLoreAdamW

        def build_gt(model: nn.Module, refresh: bool):  # type: ignore[no-untyped-def]
            lowrank, rest = split_params(model)
            return GaLoreAdamW(
                [
                    {"params": rest},
                    {
                        "params": lowrank,
                        "rank": galore["rank"],
                        "update_proj_gap": 1 if refresh else galore["update_gap"],
                        "scale": galore["scale"],
                        "proj_type": "std",
                    },
                ],
                lr=galore["lr"],
                eps=galore["eps"],
                weight_decay=0.0,
                no_deprecation_warning=True,
            )

        impls.append(Impl("galore-torch GaLoreAdamW", build_gt, "galore", 200, ours=False))
    except ImportError:
        print("galore-torch is not installed: its rows are left out", file=sys.stderr)
    try:
        import pytorch_optimizer as po

        def build_po_galore(model: nn.Module, refresh: bool):  # type: ignore[no-untyped-def]
            lowrank, rest = split_params(model)
            return po.GaLore(
                [
                    {"params": rest},
                    {
                        "params": lowrank,
                        "rank": galore["rank"],
                        "update_proj_gap": 1 if refresh else galore["update_gap"],
                        "scale": galore["scale"],
                        "projection_type": "std",
                    },
                ],
                lr=galore["lr"],
                eps=galore["eps"],
                weight_decay=0.0,
            )

        def build_po_muon(model: nn.Module, refresh: bool):  # type: ignore[no-untyped-def]
            lowrank, rest = split_params(model)
            return po.Muon(
                [{"params": lowrank, "use_muon": True}, {"params": rest, "use_muon": False}],
                lr=SUITE_HPARAMS["muon"]["lr"],
                adamw_lr=SUITE_HPARAMS["muon"]["adam_lr"],
            )

        impls.append(Impl("pytorch-optimizer GaLore", build_po_galore, "galore", 200, False))
        impls.append(Impl("pytorch-optimizer Muon", build_po_muon, "muon", None, False))
    except ImportError:
        print("pytorch-optimizer is not installed: its rows are left out", file=sys.stderr)
    return impls


def reference_impl() -> Impl:
    def build(model: nn.Module, refresh: bool):  # type: ignore[no-untyped-def]
        return torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)

    return Impl(REFERENCE, build, None, None, ours=False)


# --------------------------------------------------------------------------- one instance


class Instance:
    """One optimizer on its own copy of the weights and the fixed gradients."""

    def __init__(
        self,
        impl: Impl,
        shape: Shape,
        layers: int,
        dtype: torch.dtype,
        device: torch.device,
        refresh: bool,
    ) -> None:
        self.model = llama_weights(shape, layers, dtype, device)
        self.grads = fixed_grads(self.model)
        self.params = list(self.model.parameters())
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g.clone()
        self.optimizer = impl.build(self.model, refresh)
        self.steps = 0

    def closure(self, backward: bool = True) -> torch.Tensor:
        """The linear loss sum <G, W>: its gradient is the fixed G (LORENZA's probes)."""
        with torch.no_grad():
            pairs = zip(self.params, self.grads, strict=True)
            loss = sum(torch.dot(p.view(-1), g.view(-1)) for p, g in pairs)
            if backward:
                for p, g in zip(self.params, self.grads, strict=True):
                    if p.grad is None:
                        p.grad = g.clone()
                    else:
                        p.grad.copy_(g)
        return loss  # type: ignore[return-value]

    def step(self) -> None:
        if getattr(self.optimizer, "needs_closure", False):
            self.optimizer.step(self.closure)
        else:
            self.optimizer.step()
        self.steps += 1

    def bytes_moved(self) -> int:
        """Parameters and gradients read, parameters written, state read and written."""
        params = sum(tensor_bytes(p) for p in self.params)
        return 3 * params + 2 * state_bytes(self.optimizer)


@torch.no_grad()
def update_difference(
    a: Impl, b: Impl, shape: Shape, layers: int, dtype: torch.dtype, device: torch.device
) -> dict[str, float]:
    """Largest relative difference (norm of the difference over the norm of b's) of one
    update of a from b's over the first two steps (a refresh and a plain step), both from
    identical weights and gradients: over the attention/MLP matrices (the method's own
    step) and over the rest (the norms, which each package gives its own AdamW)."""
    ia, ib = (Instance(x, shape, layers, dtype, device, False) for x in (a, b))
    lowrank = {id(p) for p in split_params(ia.model)[0]}
    worst = {"lowrank": 0.0, "rest": 0.0}
    for _ in range(2):
        before = [[p.detach().clone() for p in inst.params] for inst in (ia, ib)]
        ia.step()
        ib.step()
        for pa, pb, wa, wb in zip(ia.params, ib.params, *before, strict=True):
            ua, ub = (pa - wa).float(), (pb - wb).float()
            rel = float((ua - ub).norm() / ub.norm().clamp(min=1e-30))
            part = "lowrank" if id(pa) in lowrank else "rest"
            worst[part] = max(worst[part], rel)
    return worst


# --------------------------------------------------------------------------- timing


def time_round_robin(
    steps: list[Callable[[], None]],
    device: torch.device,
    *,
    warmup: int,
    max_repeats: int,
    min_repeats: list[int],
    budget_s: float,
) -> list[Stats]:
    """One call of each function in turn (the machine's load is shared by all), warm-up
    excluded; function k stops after ``budget_s`` of measured time once it has
    ``min_repeats[k]`` samples, or at ``max_repeats``."""
    for _ in range(warmup):
        for fn in steps:
            fn()
    synchronize(device)
    samples: list[list[float]] = [[] for _ in steps]
    while True:
        active = [
            k
            for k, s in enumerate(samples)
            if len(s) < max_repeats and (len(s) < min_repeats[k] or sum(s) < budget_s)
        ]
        if not active:
            break
        for k in active:
            with Stopwatch(device) as sw:
                steps[k]()
            samples[k].append(sw.elapsed_s)
    return [Stats.of(s) for s in samples]


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    synchronize(device)
    times = []
    for _ in range(10):
        with Stopwatch(device) as sw:
            y.copy_(x)
        times.append(sw.elapsed_s)
    return 2 * x.numel() / Stats.of(times).median


def _stats(s: Stats | None) -> dict[str, float | int] | None:
    return None if s is None else {"median_s": s.median, "p10_s": s.p10, "p90_s": s.p90, "n": s.n}


def bench_shape(
    shape: Shape,
    layers: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    external: bool,
    warmup: int,
    max_repeats: int,
    min_repeats: int,
    min_refresh: int,
    budget_s: float,
    bandwidth: float | None,
) -> list[dict[str, Any]]:
    impls = [reference_impl(), *our_impls(shape), *(external_impls(shape) if external else [])]
    gaps = [i.gap for i in impls if i.gap is not None]
    if gaps and warmup + max_repeats >= min(gaps):
        raise ValueError("warm-up + repeats must stay inside the shortest refresh interval")
    plain: dict[str, Instance] = {}
    refresh: dict[str, Instance] = {}
    errors: dict[str, str] = {}
    for impl in impls:
        try:
            plain[impl.name] = Instance(impl, shape, layers, dtype, device, False)
            plain[impl.name].step()  # the first step builds the state (and the projector)
            if impl.gap is not None:
                refresh[impl.name] = Instance(impl, shape, layers, dtype, device, True)
                refresh[impl.name].step()
        except Exception as exc:  # a package that cannot run this dtype/device: a row says so
            errors[impl.name] = f"{type(exc).__name__}: {exc}"
            plain.pop(impl.name, None)
            refresh.pop(impl.name, None)
    keys = [("plain", n) for n in plain] + [("refresh", n) for n in refresh]
    insts = {**{("plain", n): i for n, i in plain.items()}}
    insts |= {("refresh", n): i for n, i in refresh.items()}
    stats = dict(
        zip(
            keys,
            time_round_robin(
                [insts[k].step for k in keys],
                device,
                warmup=warmup,
                max_repeats=max_repeats,
                min_repeats=[min_repeats if kind == "plain" else min_refresh for kind, _ in keys],
                budget_s=budget_s,
            ),
            strict=True,
        )
    )
    ours = {i.name: i for i in impls if i.ours}
    ref = stats[("plain", REFERENCE)].median
    params = sum(tensor_bytes(p) for p in plain[REFERENCE].params)
    rows = []
    for impl in impls:
        row: dict[str, Any] = {
            "shape": shape.name,
            "layers": layers,
            "implementation": impl.name,
            "method": impl.method,
            "ours": impl.ours,
            "rank": shape.rank if impl.method in RANK_KEY else None,
            "gap": impl.gap,
            "param_bytes": params,
            "param_tensors": len(plain[REFERENCE].params),
        }
        if impl.name in errors:
            rows.append({**row, "error": errors[impl.name]})
            continue
        step = stats[("plain", impl.name)]
        again = stats.get(("refresh", impl.name))
        extra = None if again is None else max(again.median - step.median, 0.0) / impl.gap
        row |= {
            "step": _stats(step),
            "refresh_step": _stats(again),
            "refresh_amortised_s": extra,
            "mean_step_s": step.median + (extra or 0.0),
            "step_vs_adamw": step.median / ref,
            "mean_step_vs_adamw": (step.median + (extra or 0.0)) / ref,
            "state_bytes": state_bytes(plain[impl.name].optimizer),
        }
        if bandwidth is not None:
            floor = plain[impl.name].bytes_moved() / bandwidth
            row |= {"bytes_floor_s": floor, "step_vs_floor": step.median / floor}
        if not impl.ours and impl.method in ours:
            diff = update_difference(impl, ours[impl.method], shape, layers, dtype, device)
            row["max_rel_update_diff_vs_ours"] = diff["lowrank"]
            row["max_rel_update_diff_vs_ours_rest"] = diff["rest"]
            row["step_vs_ours"] = step.median / stats[("plain", impl.method)].median
        rows.append(row)
    return rows


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def run(
    shapes: list[Shape],
    *,
    layers: int = 2,
    device: str = "cpu",
    dtype: str = "fp32",
    external: bool = True,
    warmup: int = 1,
    max_repeats: int = 30,
    min_repeats: int = 5,
    min_refresh: int = 3,
    budget_s: float = 1.5,
) -> dict[str, Any]:
    """Every shape's rows, plus what was run where. The core of the script (and its test)."""
    dev = torch.device(device)
    bandwidth = copy_bandwidth(dev) if dev.type == "cuda" else None
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for shape in shapes:
        rows += bench_shape(
            shape,
            layers,
            dtype=DTYPES[dtype],
            device=dev,
            external=external,
            warmup=warmup,
            max_repeats=max_repeats,
            min_repeats=min_repeats,
            min_refresh=min_refresh,
            budget_s=budget_s,
            bandwidth=bandwidth,
        )
    return {
        "shapes": [asdict(s) for s in shapes],
        "layers": layers,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "copy_bandwidth_bytes_per_s": bandwidth,
        "timing": {
            "warmup": warmup,
            "max_repeats": max_repeats,
            "min_repeats": min_repeats,
            "min_repeats_refresh": min_refresh,
            "budget_s_per_implementation": budget_s,
        },
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }


# --------------------------------------------------------------------------- report


def _ms(x: float | None) -> str:
    return "N/A" if x is None else f"{x * 1e3:.1f}"


def _timing(s: dict[str, Any] | None) -> str:
    if s is None:
        return "N/A"
    return f"{_ms(s['median_s'])} ({_ms(s['p10_s'])}-{_ms(s['p90_s'])}, n={s['n']})"


def markdown(result: dict[str, Any], env: dict[str, Any]) -> str:
    lines = [
        "# One optimizer step at LLaMA layer sizes",
        "",
        f"`python benchmarks/optimizer_step.py --layers {result['layers']} --device "
        f"{result['device']} --dtype {result['dtype']}`: {result['layers']} of each model's "
        f"layers (a step's cost is linear in the layer count), fixed random gradients, "
        f"{result['dtype']} on {env['device_name']} ({result['device']}), "
        f"{result['threads']} threads, torch {env['torch']}, commit "
        f"{(env['git_commit'] or '?')[:12]}{' (dirty tree)' if env['git_dirty'] else ''}. "
        "Times in ms: median (p10-p90, n) of interleaved steps, warm-up excluded. "
        "'refresh': a step that recomputes the projector (measured with gap 1); 'amortised': "
        "(refresh - step) / gap; ratios against torch AdamW (foreach) at the same shapes.",
        "",
    ]
    for shape in result["shapes"]:
        rows = [r for r in result["rows"] if r["shape"] == shape["name"]]
        lines += [
            f"## {shape['name']}: hidden {shape['hidden']}, intermediate "
            f"{shape['intermediate']}, {result['layers']} of {shape['layers_full']} layers, "
            f"rank {shape['rank']}, {rows[0]['param_bytes'] / 2**20:.1f} MiB of weights",
            "",
            "| implementation | step | vs AdamW | refresh step | gap | amortised refresh | "
            "step + amortised vs AdamW | state | update diff vs ours: matrices / rest |"
            + (" bytes floor |" if result["copy_bandwidth_bytes_per_s"] else ""),
            "|---|---|---|---|---|---|---|---|---|"
            + ("---|" if result["copy_bandwidth_bytes_per_s"] else ""),
        ]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['implementation']} | failed: {r['error']} |")
                continue
            diff = r.get("max_rel_update_diff_vs_ours")
            vs_ours = "-"
            if diff is not None:
                rest = r["max_rel_update_diff_vs_ours_rest"]
                vs_ours = f"{diff:.1e} / {rest:.1e} (time {r['step_vs_ours']:.2f}x ours)"
            line = (
                f"| {r['implementation']} | {_timing(r['step'])} | {r['step_vs_adamw']:.2f}x | "
                f"{_timing(r['refresh_step'])} | {r['gap'] or 'N/A'} | "
                f"{_ms(r['refresh_amortised_s'])} | {r['mean_step_vs_adamw']:.2f}x | "
                f"{r['state_bytes'] / 2**20:.1f} MiB | "
                f"{vs_ours} |"
            )
            if "bytes_floor_s" in r:
                line += f" {_ms(r['bytes_floor_s'])} ({r['step_vs_floor']:.1f}x) |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", default="60m,130m", help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--max-repeats", type=int, default=30)
    parser.add_argument("--min-repeats", type=int, default=5)
    parser.add_argument("--min-refresh", type=int, default=3, help="min repeats, refresh steps")
    parser.add_argument("--budget-s", type=float, default=1.5, help="measured s per step kind")
    parser.add_argument("--no-external", action="store_true", help="skip the other packages")
    parser.add_argument("--out", default="results/optimizer-step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(
        [SHAPES[s.strip()] for s in args.shapes.split(",")],
        layers=args.layers,
        device=args.device,
        dtype=args.dtype,
        external=not args.no_external,
        max_repeats=args.max_repeats,
        min_repeats=args.min_repeats,
        min_refresh=args.min_refresh,
        budget_s=args.budget_s,
    )
    env = capture_environment(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), **result, "environment": env}, indent=2) + "\n"
    )
    text = markdown(result, env)
    (out / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
