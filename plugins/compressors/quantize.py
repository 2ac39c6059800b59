"""Post-training quantization, calibrated on real data or on data the model itself gives.

Baseline ``int8-ptq`` (Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR 2018, arXiv:1712.05877): every
Linear/Conv2d weight stored as signed integers of ``bits`` bits with one symmetric scale
per output channel, and every such layer's input quantized per tensor (asymmetric, scale
and zero point from the min and max seen on calibration data: static post-training
quantization). Calibration uses the workload's real labelled
samples (labels unused). Departures from the paper's scheme, each a common PTQ choice:
weights use one symmetric scale per output channel (the paper: one asymmetric scale and
zero point per array, sec. 2.1); biases stay float (the paper: int32 with scale S1·S2 and
zero point 0, sec. 2.4); BatchNorm is not folded into the preceding weights (sec. 3.2), so
BN layers run in float. As in the paper, real 0 is exactly representable (every
activation range is widened to hold it).

``knowledge-within`` (Haroush, Hubara, Hoffer & Soudry, "The Knowledge Within: Methods for
Data-Free Model Compression", CVPR 2020, arXiv:1912.01274): the same quantizer calibrated
with no real data, on inputs synthesised from the trained model:

- ``bn-stats`` (the paper's best method): a batch of inputs, initialised from N(0, 1), is
  optimised by Adam so that at every BatchNorm layer the batch's per-channel mean and
  variance match the layer's running statistics, minimising the Gaussian KL divergence
  Σ_l Σ_c log(σ_BN/σ) + (σ² + (μ − μ_BN)²)/(2σ_BN²) − ½;
- ``gaussian`` (the paper's baseline): inputs drawn from N(0, 1).

What is stored and computed, honestly: the integer weights are kept in int8 tensors (one
byte each, also at 4 bits: no nibble packing, so the bytes reported are the bytes held),
with float scales; the forward dequantizes them and fake-quantizes the activations, so the
accuracy is that of the integer model while the arithmetic is float: integer arithmetic is
simulated, no integer kernel runs, and no speed-up is claimed beyond what the protocol
measures (the simulated models run slower than the originals:
``results/compressors/README.md``). The compressor object carries this as
``info["arithmetic"]`` (:data:`ARITHMETIC`) so a report can print it beside the row.
Convolutions keep their ``padding_mode`` ('reflect', 'replicate', 'circular' pad the
quantized input the way the original layer pads its input). A layer whose weight is tied to
another module's (SmolLM2's LM head and embedding) stays in float. The paper's optional
fine-tuning of the quantized model on synthetic data is not implemented.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

import torch
from annotated_types import Interval
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn
from torch.nn import functional as F

from plugins.compressors.neurons import set_module

Calibration = Literal["real", "bn-stats", "gaussian"]
CALIBRATIONS: tuple[str, ...] = get_args(Calibration)
ARITHMETIC = (
    "simulated: integer weights stored as int8 bytes (real), dequantized to float with "
    "fake-quantized inputs at run time; no integer kernel, no speed-up claimed"
)


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel integers (int8 storage) and their float scales."""
    qmax = 2 ** (bits - 1) - 1
    flat = w.detach().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / qmax
    q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q.reshape(w.shape), scale


def fake_quantize(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Round ``x`` to the ``2**bits`` levels of an asymmetric grid over [lo, hi]."""
    levels = 2**bits - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero stays exactly representable
    scale = max(hi - lo, 1e-12) / levels
    zero = round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
    return (q - zero) * scale


class QuantizedLayer(nn.Module):
    """A Linear or Conv2d with integer weights and a calibrated input quantizer."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, bits: int, input_range: tuple[float, float]):
        super().__init__()
        q, scale = quantize_weight(layer.weight, bits)
        self.weight = nn.Parameter(q, requires_grad=False)  # int8: counts as a parameter
        self.register_buffer("scale", scale.to(layer.weight.dtype))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.bits, self.lo, self.hi = bits, input_range[0], input_range[1]
        self.conv: dict[str, Any] | None = None
        # Non-zero padding modes pad explicitly before a padding-free conv, as nn.Conv2d does;
        # F.conv2d alone knows only zero padding.
        self.pad: tuple[list[int], str] | None = None
        if isinstance(layer, nn.Conv2d):
            self.conv = {k: getattr(layer, k) for k in ("stride", "padding", "dilation", "groups")}
            if layer.padding_mode != "zeros":
                amounts = list(layer._reversed_padding_repeated_twice)
                self.pad = (amounts, layer.padding_mode)
                self.conv["padding"] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fake_quantize(x, self.lo, self.hi, self.bits)
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        w = self.weight.to(self.scale.dtype) * self.scale.reshape(shape)
        if self.conv is None:
            return F.linear(x, w, self.bias)
        if self.pad is not None:
            x = F.pad(x, self.pad[0], mode=self.pad[1])
        return F.conv2d(x, w, self.bias, **self.conv)


# --------------------------------------------------------------------------- calibration data


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_statistics_inputs(
    model: nn.Module,
    shape: tuple[int, ...],
    *,
    steps: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> torch.Tensor:
    """Inputs whose per-BatchNorm batch statistics match the stored running ones."""
    norms = _batchnorms(model)
    if not norms:
        raise ValueError(
            "bn-stats calibration needs BatchNorm layers with running statistics; this model "
            "has none (use calibration: real or gaussian)"
        )
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device).requires_grad_(True)
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0])

    handles = [m.register_forward_pre_hook(hook) for m in norms]
    was = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([x], lr=lr)
    try:
        for _ in range(steps):
            seen.clear()
            opt.zero_grad()
            model(x)
            loss = sum(_gaussian_kl(a, bn) for a, bn in zip(seen, norms, strict=True))
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            opt.step()
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return x.detach()


def _gaussian_kl(a: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(μ_BN, σ_BN²)) summed over channels, batch statistics of ``a``."""
    dims = [d for d in range(a.dim()) if d != 1]
    mu, var = a.mean(dims), a.var(dims, unbiased=False)
    assert bn.running_mean is not None and bn.running_var is not None
    rm, rv = bn.running_mean, bn.running_var + bn.eps
    return (0.5 * torch.log(rv / (var + bn.eps)) + (var + (mu - rm) ** 2) / (2 * rv) - 0.5).sum()


# --------------------------------------------------------------------------- the compressor


class PostTrainingQuantization:
    """Factory for both registered methods; ``calibration`` picks the data."""

    def __init__(
        self,
        bits: Annotated[int, Interval(ge=2, le=8)] = 8,
        calibration: Calibration = "real",
        samples: PositiveInt = 256,
        synthesis_steps: NonNegativeInt = 200,
        synthesis_lr: PositiveFloat = 0.1,
        seed: int = 0,
    ) -> None:
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
        if not 2 <= bits <= 8:
            raise ValueError(f"bits must be in [2, 8], got {bits}")
        self.bits, self.calibration, self.samples = bits, calibration, samples
        self.synthesis_steps, self.synthesis_lr, self.seed = synthesis_steps, synthesis_lr, seed
        self.info = {"arithmetic": ARITHMETIC}

    def calibration_inputs(self, model: nn.Module, ctx: Any) -> list[torch.Tensor]:
        real = [x for x, _ in ctx.calibration_batches]
        if self.calibration == "real":
            return real
        if not real or not real[0].is_floating_point():
            raise ValueError(
                f"{self.calibration} calibration synthesises continuous inputs; this "
                "workload's inputs are not (token ids)"
            )
        shape = (self.samples, *real[0].shape[1:])  # only the input shape is read
        if self.calibration == "gaussian":
            g = torch.Generator().manual_seed(self.seed)
            return [torch.randn(shape, generator=g).to(ctx.device)]
        return [
            bn_statistics_inputs(
                model,
                shape,
                steps=self.synthesis_steps,
                lr=self.synthesis_lr,
                seed=self.seed,
                device=ctx.device,
            )
        ]

    def compress(self, model: nn.Module, ctx: Any) -> nn.Module:
        model.eval()
        inputs = self.calibration_inputs(model, ctx)
        ranges = input_ranges(model, inputs)
        tied = tied_weights(model)
        for name, (lo, hi) in ranges.items():
            layer = model.get_submodule(name)
            if id(layer.weight) in tied:
                continue
            set_module(model, name, QuantizedLayer(layer, self.bits, (lo, hi)))
        return model


def tied_weights(model: nn.Module) -> set[int]:
    """ids of parameters that more than one module holds (a LM head tied to the embedding).

    Quantizing such a layer would store an int8 copy beside the float original that the
    other module still uses: more bytes, not fewer. They stay in float."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {pid for pid, count in seen.items() if count > 1}


@torch.no_grad()
def input_ranges(
    model: nn.Module, batches: Iterable[torch.Tensor]
) -> dict[str, tuple[float, float]]:
    """(min, max) of every Linear/Conv2d layer's input over ``batches``."""
    ranges: dict[str, tuple[float, float]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):

            def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], _name: str = name) -> None:
                lo, hi = float(args[0].min()), float(args[0].max())
                old = ranges.get(_name, (lo, hi))
                ranges[_name] = (min(old[0], lo), max(old[1], hi))

            handles.append(module.register_forward_pre_hook(hook))
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ranges
