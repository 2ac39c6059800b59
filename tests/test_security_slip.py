"""SLIP (arXiv:2407.10886), the random-mask baseline, the attacks and the security ranking.

Defining properties checked: hybrid outputs equal the original's; the trusted FLOP share
is the analytic 2·k·(m+n) against 2·m·n; what crosses to the untrusted device is
uncorrelated with the activation it hides; a residual's spectrum reveals the removed
subspace; attacks recover less as k grows; a leaking split is labelled exposed and ranked
below SLIP.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.measure.hybrid import count_flops_by_side, trace_hybrid
from benchmark.protocols import security_split
from benchmark.protocols.security_split import AttackContext
from benchmark.records import Budget, Metric, RunRecord, RunSpec
from benchmark.report.leaderboard import build_leaderboard
from plugins.security.attacks import FineTuneAttack, fill_missing, missing_subspace
from plugins.security.random_mask import RandomMask
from plugins.security.slip import SLIP

from .helpers import context, workload

CPU = torch.device("cpu")
DIGITS = {"ood": "noise"}


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 10)).eval()


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 5),
    ).eval()


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("rank", [0, 1, 4, 100])
def test_hybrid_equals_original(mask: bool, rank: int) -> None:
    x_mlp, x_cnn = torch.randn(7, 32), torch.randn(4, 3, 8, 8)
    for model, x in ((_mlp(), x_mlp), (_cnn(), x_cnn)):
        split = SLIP(rank=rank, mask=mask).split(model)
        with torch.no_grad():
            want, got = model(x), split.forward(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert got.dtype == want.dtype
    rm = RandomMask(trusted_fraction=0.3).split(_cnn())
    with torch.no_grad():
        torch.testing.assert_close(rm.forward(x_cnn), _cnn()(x_cnn), rtol=1e-5, atol=1e-5)


def test_energy_picks_rank_and_state_holds_residuals() -> None:
    model = _mlp()
    split = SLIP(energy=0.6).split(model)
    for name, k in split.ranks.items():
        w = model.get_submodule(name).weight.detach().double()
        s = torch.linalg.svdvals(w)
        share = (s[:k] ** 2).sum() / (s**2).sum()
        assert share >= 0.6 and (k == 1 or (s[: k - 1] ** 2).sum() / (s**2).sum() < 0.6)
        stolen = split.untrusted_state()[f"{name}.weight"].double()
        # The stolen residual lacks exactly the top-k components: its spectrum is the tail.
        torch.testing.assert_close(
            torch.linalg.svdvals(stolen)[: len(s) - k], s[k:], rtol=1e-4, atol=1e-5
        )
    assert set(split.untrusted_state()) == set(model.state_dict())


def test_trusted_flop_share_matches_analytic_count() -> None:
    model, b, k = _mlp(), 9, 3
    x = torch.randn(b, 32)
    dims = [(48, 32), (10, 48)]  # (m, n) per layer
    trusted = sum(b * 2 * k * (m + n) for m, n in dims)
    untrusted = sum(b * 2 * m * n for m, n in dims)
    for mask in (True, False):
        split = SLIP(rank=k, mask=mask).split(model)
        flops = count_flops_by_side(split, lambda s=split: s.forward(x))
        assert flops["trusted"] == trusted and flops["untrusted"] == untrusted
        # The masks' products W_D r are precomputation, reported apart from online FLOPs.
        assert flops.get("offline", 0) == (untrusted if mask else 0)
        online = flops["total"] - flops.get("offline", 0)
        assert flops["trusted"] / online == pytest.approx(trusted / (trusted + untrusted))


def test_attribution_charges_functional_work_to_its_owner() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 8, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.proj(x)
            # Attention products: functional calls that no leaf module runs.
            return nn.functional.scaled_dot_product_attention(h, h, h) @ h.transpose(-1, -2)

    class Split:
        def __init__(self) -> None:
            self.trusted, self.untrusted = Block(), nn.ModuleDict()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.trusted(x)

    x = torch.randn(2, 5, 8)
    split = Split()
    flops = count_flops_by_side(split, lambda: split.forward(x))
    proj, sdpa, scores = 2 * (2 * 5 * 8 * 8), 4 * (2 * 5 * 5 * 8), 2 * (2 * 5 * 8 * 5)
    assert flops["trusted"] == flops["total"] == proj + sdpa + scores


def _crossing_payloads(split, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # type: ignore[no-untyped-def]
    """What each residual (untrusted) layer received, and the plaintext it stands for."""
    sent: list[torch.Tensor] = []
    plain: list[torch.Tensor] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, a: sent.append(a[0].detach().clone()))
        for m in split.untrusted.children()
    ]
    for name in split.ranks:
        layer = split._host.get_submodule(name)
        handles.append(layer.register_forward_pre_hook(lambda _m, a: plain.append(a[0].clone())))
    with torch.no_grad():
        split.forward(x)
    for h in handles:
        h.remove()
    return sent, plain


def test_masking_hides_activations_and_keeps_outputs_exact() -> None:
    model = _mlp()
    x = torch.randn(256, 32) * 3 + 1  # activations with a mean and a scale to leak
    masked = SLIP(rank=4, mask=True).split(model)
    sent, plain = _crossing_payloads(masked, x)
    assert len(sent) == len(plain) == 2
    for s, p in zip(sent, plain, strict=True):
        corr = torch.corrcoef(torch.stack([s.flatten().double(), p.flatten().double()]))[0, 1]
        assert abs(float(corr)) < 0.05, f"masked payload correlates with the plaintext: {corr}"
    again, _ = _crossing_payloads(masked, x)
    assert not torch.equal(again[0], sent[0]), "masks must be fresh for every forward"
    with torch.no_grad():
        torch.testing.assert_close(masked.forward(x), model(x), rtol=1e-5, atol=1e-5)
    # Without the mask the untrusted device sees the activations themselves.
    clear, plain = _crossing_payloads(SLIP(rank=4, mask=False).split(model), x)
    assert torch.equal(clear[0].float(), plain[0])
    # The crossing trace sees x~ leave and y~ come back for each layer, plus input/output.
    trace = trace_hybrid(masked, x, CPU)
    assert trace.crossings == 2 * 2 + 2
    assert trace.offline_s > 0


def test_residual_spectrum_reveals_the_removed_subspace() -> None:
    torch.manual_seed(0)
    for shape in ((20, 20), (30, 12), (12, 30)):
        w = torch.randn(*shape, dtype=torch.float64)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        k = 3
        secret = (u[:, :k] * s[:k]) @ vh[:k]
        miss = missing_subspace((w - secret).float())
        assert miss is not None and miss.deficit == k
        assert miss.sigma_top == pytest.approx(float(s[k]), rel=1e-5)
        # The secret is left @ M @ right.T for the M the attacker must find, of small size.
        left = torch.eye(shape[0], dtype=w.dtype) if miss.left is None else miss.left.double()
        right = torch.eye(shape[1], dtype=w.dtype) if miss.right is None else miss.right.double()
        core = left.T @ secret @ right
        torch.testing.assert_close(miss.expand(core), secret, atol=1e-5, rtol=1e-5)
        assert core.numel() <= k * max(shape) < w.numel()
    assert missing_subspace(torch.randn(20, 30)) is None  # full rank: nothing removed
    filled = fill_missing({"w": (w - secret).float()}, seed=0)["w"].double()
    assert torch.linalg.matrix_rank(filled) == min(w.shape)  # the hole is filled


def _attacked_quality(rank: int, seed: int) -> float:
    wl = workload("security_split", "digits-cnn", **DIGITS)
    split = SLIP(rank=rank).split(wl.model(CPU))
    ctx = AttackContext(
        fresh_model=lambda s: wl.fresh_model(s, CPU),
        labelled_batches=lambda n, bs: wl.labelled_batches("train", n, bs, seed, CPU),
        validation_batches=lambda: wl.labelled_batches("train", 512, 64, seed, CPU)[4:],
        transcripts=lambda n: iter(()),
        loss=wl.loss,
        device=CPU,
        seed=seed,
        budget=Budget(),
        recipe=wl.attack_recipe,
    )
    attack = FineTuneAttack(n_samples=64, steps=50)
    return wl.evaluate(attack(split.untrusted_state(), ctx), CPU)


def test_attacks_recover_less_as_k_grows() -> None:
    seeds = (0, 1, 2)
    small = sum(_attacked_quality(1, s) for s in seeds) / len(seeds)
    large = sum(_attacked_quality(8, s) for s in seeds) / len(seeds)
    assert small > large + 0.1, (small, large)


def _record(method: str, hparams: dict, metrics: dict[str, Metric]) -> RunRecord:
    spec = RunSpec(
        suite="t",
        kind="security_split",
        method=method,
        hparams=hparams,
        workload="digits-cnn",
        seed=0,
        device="cpu",
    )
    return RunRecord(id=spec.id, spec=spec, status="ok", metrics=metrics)


def test_no_split_is_exposed_and_ranked_below_slip() -> None:
    attacks = ["untrusted-random", "lowrank"]
    runs = {
        ("no-split", ()): security_split.run(
            context("security_split", "no-split", "digits-cnn", options=DIGITS, attacks=attacks)
        ),
        ("slip", (("rank", 8),)): security_split.run(
            context(
                "security_split",
                "slip",
                "digits-cnn",
                options=DIGITS,
                hparams={"rank": 8},
                attacks=attacks,
            )
        ),
    }
    slip = runs[("slip", (("rank", 8),))].metrics
    assert slip["max_abs_output_diff"].value < 1e-4
    assert slip["quality"].value == slip["quality_original"].value
    assert 0 < slip["trusted_flops_share"].value < 1 and slip["offline_flops"].value > 0
    records = [_record(m, dict(h), r.metrics) for (m, h), r in runs.items()]
    # An equally cheap but less secure SLIP must rank below, and an exposed one last.
    leaky = dict(slip)
    worst = slip["attack_recovered_ratio"]
    assert worst.value < 0.9
    leaky["attack_recovered_ratio"] = worst.model_copy(
        update={
            "value": worst.value + 0.06,
            "ci_low": worst.ci_low + 0.06,
            "ci_high": worst.ci_high + 0.06,
        }
    )
    records.append(_record("slip", {"rank": 1}, leaky))
    (table,) = build_leaderboard(records)
    order = [(row.method, row.hparams, row.verdict) for row in table.rows]
    want = (
        "exposed" if worst.value >= 0.5 else "protected" if worst.ci_high < 0.5 else "inconclusive"
    )
    assert order[0][:2] == ("slip", "rank=8") and order[0][2] == want
    assert order[1][:2] == ("slip", "rank=1")
    assert order[-1] == ("no-split", "defaults", "exposed")
    assert "exposed when attack_recovered_ratio >= 0.5" in table.ranking_note
