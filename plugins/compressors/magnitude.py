"""Global magnitude pruning: the classic unstructured baseline.

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015, arXiv:1506.02626. The smallest-magnitude weights across all
Linear and Conv2d layers are set to zero (one global threshold). The tensors keep their
shape, so the model is masked-dense: the protocol reports it as such, with no speed-up.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from annotated_types import Interval
from torch import nn

PRUNABLE = (nn.Linear, nn.Conv2d)


class MagnitudePrune:
    def __init__(self, sparsity: Annotated[float, Interval(ge=0, lt=1)] = 0.5) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.sparsity = sparsity

    @torch.no_grad()
    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
        if not weights or self.sparsity == 0:
            return model
        magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in weights])
        k = int(self.sparsity * magnitudes.numel())
        if k == 0:
            return model
        threshold = torch.kthvalue(magnitudes.cpu().float(), k).values
        for w in weights:
            w.mul_((w.abs() > threshold.to(w.device)).to(w.dtype))
        return model
