"""Cost of the WGSEF value and prox against the number of groups (should grow linearly).

Run: python -m pytest benchmarks/bench_wgsef_prox.py --benchmark-only
Compare the mean times across group counts: a linear routine's time per group stays flat.
"""

from __future__ import annotations

import pytest
import torch

from plugins.compressors.wgsef_prox import envelope_prox_scales, envelope_value

SIZES = [1_000, 10_000, 100_000, 1_000_000]


def _norms(m: int) -> torch.Tensor:
    return torch.rand(m, generator=torch.Generator().manual_seed(m), dtype=torch.float64)


@pytest.mark.parametrize("m", SIZES)
def test_prox(benchmark, m: int) -> None:  # type: ignore[no-untyped-def]
    norms = _norms(m)
    benchmark.group = "wgsef prox"
    scales = benchmark(envelope_prox_scales, norms, m // 10, 0.5)
    assert int((scales > 0).sum()) >= m // 10


@pytest.mark.parametrize("m", SIZES)
def test_value(benchmark, m: int) -> None:  # type: ignore[no-untyped-def]
    norms = _norms(m)
    benchmark.group = "wgsef value"
    assert float(benchmark(envelope_value, norms, m // 10)) > 0
