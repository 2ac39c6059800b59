"""Post-training quantization and The Knowledge Within's data-free calibration."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.protocols import compressor
from plugins.compressors.quantize import (
    ARITHMETIC,
    PostTrainingQuantization,
    QuantizedLayer,
    _gaussian_kl,
    bn_statistics_inputs,
    fake_quantize,
    quantize_weight,
)

from .helpers import context


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_are_integers_within_half_a_step_of_the_original(bits: int) -> None:
    w = torch.randn(6, 5, 3, 3)
    q, scale = quantize_weight(w, bits)
    assert q.dtype == torch.int8 and q.element_size() == 1
    qmax = 2 ** (bits - 1) - 1
    assert int(q.abs().max()) <= qmax
    # Each output channel uses its full range, and rounding error is at most half a step.
    assert torch.equal(q.reshape(6, -1).abs().amax(1), torch.full((6,), qmax, dtype=torch.int8))
    err = (q.float() * scale.view(-1, 1, 1, 1) - w).abs()
    assert bool((err <= scale.view(-1, 1, 1, 1) / 2 + 1e-7).all())


def test_activation_grid_has_two_to_the_bits_levels_and_keeps_zero() -> None:
    x = torch.linspace(-1.0, 3.0, 10_001)
    y = fake_quantize(x, -1.0, 3.0, 4)
    assert y.unique().numel() == 16
    assert float(fake_quantize(torch.zeros(1), -1.0, 3.0, 4)) == 0.0
    assert float((y - x).abs().max()) <= 4.0 / 15 / 2 + 1e-6


def test_quantized_layer_stores_one_byte_per_weight_and_tracks_the_float_layer() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(32, 16)
    x = torch.randn(64, 32)
    qlayer = QuantizedLayer(layer, 8, (float(x.min()), float(x.max())))
    assert qlayer.weight.dtype == torch.int8
    with torch.no_grad():
        rel = (qlayer(x) - layer(x)).norm() / layer(x).norm()
    assert float(rel) < 0.02


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_bn_statistics_synthesis_matches_the_stored_statistics() -> None:
    """The defining property of the BN-statistics method: the synthetic batch's
    statistics at the BatchNorm input approach the stored running ones, far closer than
    the Gaussian noise it starts from."""
    torch.manual_seed(0)
    net = BNNet()
    # Stored statistics of a "training" distribution far from N(0, 1): reachable by
    # construction (a conv over one input channel cannot reach arbitrary per-channel ones).
    real = 1.5 + 0.4 * torch.randn(256, 1, 8, 8)
    with torch.no_grad():
        a = net.conv(real)
        net.bn.running_mean.copy_(a.mean((0, 2, 3)))
        net.bn.running_var.copy_(a.var((0, 2, 3)))
    net.eval()

    def kl(x: torch.Tensor) -> float:
        return float(_gaussian_kl(net.conv(x), net.bn))

    noise = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x = bn_statistics_inputs(
        net, (64, 1, 8, 8), steps=300, lr=0.1, seed=3, device=torch.device("cpu")
    )
    assert kl(x) < 0.05 * kl(noise)
    a = net.conv(x).detach()
    assert torch.allclose(a.mean((0, 2, 3)), net.bn.running_mean, atol=0.1)
    assert not net.training  # the model is left in the mode it came in


def test_bn_stats_needs_batchnorm() -> None:
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_statistics_inputs(
            nn.Linear(3, 2), (4, 3), steps=1, lr=0.1, seed=0, device=torch.device("cpu")
        )


def test_synthetic_calibration_refuses_token_inputs() -> None:
    method = PostTrainingQuantization(calibration="gaussian")
    ctx = type("Ctx", (), {"calibration_batches": [(torch.ones(2, 5, dtype=torch.long), None)]})
    with pytest.raises(ValueError, match="token ids"):
        method.calibration_inputs(nn.Linear(5, 2), ctx)


@pytest.mark.parametrize(
    ("method", "hparams"),
    [
        ("int8-ptq", {}),
        ("knowledge-within", {"synthesis_steps": 60, "samples": 64}),
        ("knowledge-within", {"calibration": "gaussian"}),
    ],
)
def test_through_the_protocol_on_digits_bytes_shrink_and_accuracy_holds(
    method: str, hparams: dict
) -> None:
    result = compressor.run(context("compressor", method, "digits-cnn", hparams=hparams))
    m = result.metrics
    # Weights go from 4 bytes to 1: the stored bytes fall by well over half.
    assert m["bytes_after"].value < 0.45 * m["bytes_before"].value
    assert m["params_after"].value == m["params_before"].value
    assert m["quality_after"].value > m["quality_before"].value - 0.1


def test_a_weight_tied_to_an_embedding_stays_float() -> None:
    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(11, 6)
            self.mid = nn.Linear(6, 6)
            self.head = nn.Linear(6, 11, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.mid(self.embed(ids)))

    model = TiedLM()
    ctx = type("Ctx", (), {"calibration_batches": [(torch.randint(0, 11, (4, 5)), None)]})
    PostTrainingQuantization().compress(model, ctx)
    assert isinstance(model.mid, QuantizedLayer)
    assert isinstance(model.head, nn.Linear) and model.head.weight is model.embed.weight


# ------------------------------------------------- activations and convolutions, by reference


def _reference_fake_quant(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Asymmetric uniform quantization written out from its definition (Jacob et al. eq. 1:
    r = S (q - Z)), not through the module's helper: the range is widened to hold 0, the
    scale spans it in 2**bits - 1 steps, the zero point is the integer that maps to 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / (2**bits - 1)
    z = round(-lo / s)
    q = (x / s).round() + z
    return s * (q.clamp(0, 2**bits - 1) - z)


def _reference_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    s = w.reshape(w.shape[0], -1).abs().amax(1) / qmax
    s = s.view(-1, *([1] * (w.dim() - 1)))
    return (w / s).round().clamp(-qmax, qmax) * s


@pytest.mark.parametrize("bits", [8, 4])
def test_the_quantized_model_quantizes_activations_with_the_calibrated_range(bits: int) -> None:
    """Through the compressor: each layer's input goes through the grid calibrated on the
    calibration batches (first layer: the raw input's range; second: the hidden ReLU's),
    and that is visible in the output: weights-only quantization gives another answer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    calib = torch.randn(64, 6) * 2
    ctx = type("Ctx", (), {"calibration_batches": [(calib, None)]})
    x = torch.randn(32, 6) * 2
    w1, w2 = _reference_weight(model[0].weight, bits), _reference_weight(model[2].weight, bits)
    with torch.no_grad():
        h_cal = torch.relu(calib @ model[0].weight.T + model[0].bias)
        lo1, hi1 = float(calib.min()), float(calib.max())
        lo2, hi2 = float(h_cal.min()), float(h_cal.max())
        h = torch.relu(F.linear(_reference_fake_quant(x, lo1, hi1, bits), w1, model[0].bias))
        want = F.linear(_reference_fake_quant(h, lo2, hi2, bits), w2, model[2].bias)
        weights_only = F.linear(torch.relu(F.linear(x, w1, model[0].bias)), w2, model[2].bias)
        got = PostTrainingQuantization(bits=bits).compress(copy.deepcopy(model), ctx)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((got - weights_only).abs().max()) > 1e-3


def test_a_range_that_excludes_zero_is_widened_so_zero_stays_exact() -> None:
    """Jacob et al. (sec. 2.1) require real 0 to be representable exactly (zero padding and
    ReLU outputs must not drift): a layer calibrated on inputs in [0.5, 1.5] quantizes on a
    grid over [0, 1.5], and 0 maps to 0."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    calib = torch.rand(64, 4) + 0.5  # strictly positive
    lo, hi = float(calib.min()), float(calib.max())
    q = QuantizedLayer(layer, 8, (lo, hi))
    x = torch.cat([torch.zeros(1, 4), torch.rand(8, 4) + 0.5])
    want = F.linear(_reference_fake_quant(x, lo, hi, 8), _reference_weight(layer.weight, 8))
    with torch.no_grad():
        torch.testing.assert_close(q(x), want + layer.bias, rtol=1e-5, atol=1e-5)
    assert float(fake_quantize(torch.zeros(1), lo, hi, 8)) == 0.0


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate", "zeros"])
def test_a_quantized_conv_keeps_its_padding_mode(mode: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode=mode)
    x = torch.randn(3, 2, 7, 7) + 1.0  # non-zero borders: zero padding would show
    lo, hi = float(x.min()), float(x.max())
    qconv = QuantizedLayer(conv, 8, (lo, hi))
    reference = copy.deepcopy(conv)
    with torch.no_grad():
        reference.weight.copy_(_reference_weight(conv.weight, 8))
        want = reference(_reference_fake_quant(x, lo, hi, 8))
        got = qconv(x)
        assert got.shape == conv(x).shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_compressor_says_its_integer_arithmetic_is_simulated() -> None:
    method = PostTrainingQuantization()
    assert method.info == {"arithmetic": ARITHMETIC}
    assert "simulated" in ARITHMETIC and "no speed-up claimed" in ARITHMETIC
