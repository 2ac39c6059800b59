"""Physical removal of convolution filters (output channels) with their BatchNorm channel.

A filter of ``Conv2d -> BatchNorm2d -> (element-wise / pooling)* -> consumer`` is removable
when its conv row, conv bias and BN scale and shift are all zero: the BN output is then exactly
0 whatever the running statistics, every element-wise op used here maps 0 to 0 (ReLU, pooling,
dropout), so the consumer receives a constant-zero channel and its inputs for that channel can
be deleted. The consumer is the next ``Conv2d`` (its input channel is dropped) or a
``Flatten -> Linear`` (the channel's block of ``H*W`` columns is dropped).

The chains are found from the modules' registration order, which must be the forward order
(true for ``nn.Sequential`` models and ``BNConvNet`` of ``plugins/workloads/images.py``);
a model with another layout simply yields no chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plugins.compressors.neurons import set_module, sliced_linear

PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class FilterGroup:
    conv: str
    bn: str
    consumer: str  # a Conv2d, or a Linear after a Flatten
    flattened: bool


def filter_groups(model: nn.Module) -> list[FilterGroup]:
    """Conv -> BN -> ... -> consumer chains whose filters can be removed."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    out = []
    for i, (name, conv) in enumerate(leaves):
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or i + 1 >= len(leaves):
            continue
        bn_name, bn = leaves[i + 1]
        if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != conv.out_channels:
            continue
        flattened = False
        for cname, consumer in leaves[i + 2 :]:
            if isinstance(consumer, nn.Flatten):
                flattened = True
            elif isinstance(consumer, nn.Conv2d) and not flattened:
                if consumer.in_channels == conv.out_channels and consumer.groups == 1:
                    out.append(FilterGroup(name, bn_name, cname, False))
                break
            elif isinstance(consumer, nn.Linear) and flattened:
                if consumer.in_features % conv.out_channels == 0:
                    out.append(FilterGroup(name, bn_name, cname, True))
                break
            elif not isinstance(consumer, PASS_THROUGH):
                break
    return out


def filter_rows(model: nn.Module, group: FilterGroup) -> list[torch.Tensor]:
    """The parameters that make up each filter's group: conv rows, conv bias, BN scale/shift.

    Each returned tensor has the filters on dimension 0.
    """
    conv = model.get_submodule(group.conv)
    bn = model.get_submodule(group.bn)
    parts = [conv.weight]
    if conv.bias is not None:
        parts.append(conv.bias)
    if bn.affine:
        parts += [bn.weight, bn.bias]
    return parts


@torch.no_grad()
def _sliced_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None):  # type: ignore[no-untyped-def]
    w = conv.weight
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(
        w.shape[1],
        w.shape[0],
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=w.device, dtype=w.dtype)
    new.weight.copy_(w)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if out_idx is None else conv.bias[out_idx])
    return new


@torch.no_grad()
def _sliced_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(
        keep.numel(),
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    ).to(device=keep.device)
    if bn.affine:
        new.weight.copy_(bn.weight[keep])
        new.bias.copy_(bn.bias[keep])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)  # a fresh module is in training mode; keep the original's mode
    return new.to(dtype=bn.running_mean.dtype if bn.running_mean is not None else None)


def remove_filters(model: nn.Module, group: FilterGroup, keep: torch.Tensor) -> None:
    """Replace the chain's conv, BN and consumer by copies holding only the filters ``keep``."""
    conv = model.get_submodule(group.conv)
    keep = torch.sort(keep.to(torch.long)).values.to(conv.weight.device)
    channels = conv.out_channels
    set_module(model, group.conv, _sliced_conv(conv, keep, None))
    set_module(model, group.bn, _sliced_bn(model.get_submodule(group.bn), keep))
    consumer = model.get_submodule(group.consumer)
    if group.flattened:
        block = consumer.in_features // channels
        cols = (keep.view(-1, 1) * block + torch.arange(block, device=keep.device)).view(-1)
        set_module(model, group.consumer, sliced_linear(consumer, cols=cols))
    else:
        set_module(model, group.consumer, _sliced_conv(consumer, None, keep))
