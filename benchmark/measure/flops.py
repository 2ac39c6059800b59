"""FLOPs through torch's own counter, whole-call or attributed to named modules.

Attribution uses forward hooks on the *leaf* modules of each named module, so it works
when a parent calls the submodules one by one (as a security split's hybrid forward does
with the layers it keeps on the trusted device).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from benchmark.measure.tensors import leaf_modules
from benchmark.records import Metric

_CPU_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _CPU_SDPA is not None:
    # torch's counter has formulas for the CUDA attention kernels but not for the CPU one
    # that F.scaled_dot_product_attention dispatches to, so attention products counted 0 on
    # CPU. Same count as the CUDA kernels: 4·b·h·s_q·s_k·d (QKᵀ and the weighted sum).
    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flop(
        query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
    ) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_metric(flops: int) -> Metric:
    return Metric(value=float(flops), unit="FLOP", meter="torch.utils.flop_counter")


def count_flops_by_module(fn: Callable[[], Any], modules: dict[str, nn.Module]) -> dict[str, int]:
    """FLOPs executed inside each named module during ``fn()``, plus ``"total"``."""
    totals = {name: 0 for name in modules}
    handles = []
    with FlopCounterMode(display=False) as counter:
        for name, module in modules.items():
            for leaf in leaf_modules(module) or [module]:

                def pre(_m: nn.Module, _args: Any, _name: str = name) -> None:
                    _m._mb_flops_start = counter.get_total_flops()  # type: ignore[attr-defined]

                def post(_m: nn.Module, _args: Any, _out: Any, _name: str = name) -> None:
                    start = getattr(_m, "_mb_flops_start", counter.get_total_flops())
                    totals[_name] += counter.get_total_flops() - start

                handles.append(leaf.register_forward_pre_hook(pre))
                handles.append(leaf.register_forward_hook(post))
        try:
            fn()
        finally:
            for h in handles:
                h.remove()
    totals["total"] = int(counter.get_total_flops())
    return {k: int(v) for k, v in totals.items()}
