"""FLOPs through torch's own counter, with the CPU attention kernel's formula it lacks.

Attribution of FLOPs to a split's sides is ``benchmark.measure.hybrid.count_flops_by_side``
(the innermost running module's side, through the same counter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

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
