"""Which layers of a model a method acts on, chosen the same way by every plugin.

Security splits decompose, compressors gate or prune, and all of them take the same
``layers`` hyperparameter: a preset or ``fnmatch`` patterns over module names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from torch import nn

PRESETS = ("all-linear", "attention+mlp")


def decomposable(module: nn.Module) -> bool:
    """A layer whose weight product is linear in its input and matrix-shaped."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros"
    return False


def in_numbered_block(name: str) -> bool:
    """``model.layers.3.mlp.up_proj`` or ``encoder.layer.0.attention.self.query``: inside a
    transformer block (an integer segment before the last one), not an embedding or head."""
    return any(part.isdigit() for part in name.split(".")[:-1])


def select_layers(
    model: nn.Module,
    layers: str | Sequence[str],
    accept: Callable[[nn.Module], bool] = decomposable,
) -> list[str]:
    """Names of the layers ``accept`` admits that ``layers`` picks.

    ``"all-linear"``: every admitted layer. ``"attention+mlp"``: those inside a numbered
    block (the transformer blocks without embeddings, poolers and heads). Otherwise a
    list of ``fnmatch`` patterns on module names.
    """
    named = [(n, m) for n, m in model.named_modules() if n and accept(m)]
    if layers == "all-linear":
        picked = [n for n, _ in named]
    elif layers == "attention+mlp":
        picked = [n for n, _ in named if in_numbered_block(n)]
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        picked = [n for n, _ in named if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not picked:
        raise ValueError(
            f"layers={layers!r} matches no layer; use one of {PRESETS} or "
            f"patterns over: {[n for n, _ in named][:12]}"
        )
    return picked
