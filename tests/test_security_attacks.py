"""The attacks and the verdict rules of the security protocol.

Each test pins a property a plausible bug would break: the traffic attack recovers every
split whose trusted maps cross in clear (compared with the original model, not with the
attack's own formula) and recovers nothing from a masked transcript; a failed attack
makes the verdict ``incomplete`` and ranks it last; the sanity gate fires on a crippled
attack; the worst case is a maximum over every attack, traffic included; the low-rank
attack is not capped by its optimiser; masks do not derive from the run seed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from benchmark.kinds import AttackSpec
from benchmark.kinds.security_split import AttackRecipe
from benchmark.kinds.workload import QualityMetric
from benchmark.measure.crossings import record_transcript
from benchmark.protocols import security_split
from benchmark.protocols.security_attacks import (
    SanityGateFailed,
    membership_auroc,
    ratio_metric,
)
from benchmark.records import Metric, RunRecord, RunSpec
from benchmark.report.leaderboard import build_leaderboard
from plugins.security.attacks import SubspaceAttack
from plugins.security.baselines import LayerSplit, ShieldUnits, units
from plugins.security.random_mask import RandomMask
from plugins.security.slip import SLIP
from plugins.security.traffic import apply_fits, fit_transcripts

from .helpers import context, registry

CPU = torch.device("cpu")
DIGITS = {"ood": "noise"}


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 5)).eval()


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 5),
    )
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model.eval()


def _steal_by_traffic(split, model_fn, inputs, seed: int = 1) -> nn.Module:  # type: ignore[no-untyped-def]
    """The attacker's model: a fresh copy (another seed) with the stolen state loaded and
    the traffic fits applied."""
    stolen = split.untrusted_state()
    attacker = model_fn(seed)
    attacker.load_state_dict(stolen, strict=False)
    fitted, r2 = fit_transcripts(attacker, (split.transcript(x) for x in inputs))
    apply_fits(attacker, fitted, stolen)
    attacker.fit_r2 = r2
    return attacker.eval()


@pytest.mark.parametrize(
    "make_split",
    [
        lambda: SLIP(rank=3, mask=False),
        lambda: LayerSplit(trusted_layers=1),
        lambda: RandomMask(trusted_fraction=0.3),
        lambda: ShieldUnits("deep", 1),
    ],
    ids=["slip-unmasked", "layer-split", "random-mask", "shield-deep"],
)
def test_traffic_attack_recovers_a_split_whose_maps_cross_in_clear(make_split) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(5)
    for model_fn, shape in ((_mlp, (16, 12)), (_cnn, (32, 3, 8, 8))):
        original = model_fn(0)
        split = make_split().split(copy.deepcopy(original))
        inputs = [torch.randn(*shape) for _ in range(8)]
        stolen_only = model_fn(1)
        stolen_only.load_state_dict(split.untrusted_state(), strict=False)
        attacker = _steal_by_traffic(split, model_fn, inputs)
        x = torch.randn(*shape)
        with torch.no_grad():
            want = original(x)
            gap_before = float((stolen_only.eval()(x) - want).abs().max())
            gap_after = float((attacker(x) - want).abs().max())
        assert gap_before > 1e-2, "the stolen state alone must not already be the model"
        assert gap_after < 1e-4, (make_split, model_fn.__name__, gap_after, attacker.fit_r2)


def test_masked_slip_transcript_hides_the_activations_and_yields_no_fit() -> None:
    model = _mlp()
    x = torch.randn(256, 12) * 3 + 1  # activations with a mean and a scale to leak
    split = SLIP(rank=3, mask=True).split(model)
    exchanges = split.transcript(x)
    assert len(exchanges) == 3  # input -> x~1, y~1 -> x~2, y~2 -> logits
    with torch.no_grad():
        clean_inputs = [x, torch.relu(model[0](x))]
    for ex, clean in zip(exchanges[:2], clean_inputs, strict=True):
        received = ex.received.double().flatten()
        corr = torch.corrcoef(torch.stack([received, clean.double().flatten()]))[0, 1]
        assert abs(float(corr)) < 0.05, f"masked payload correlates with the activation: {corr}"
    # The traffic attack finds no affine map it may load.
    fitted, r2 = fit_transcripts(_mlp(1), [split.transcript(torch.randn(64, 12)) for _ in range(6)])
    assert not [k for k in fitted if not k.startswith("__")], r2
    # Unmasked, the same model gives its layers away.
    clear = SLIP(rank=3, mask=False).split(model).transcript(x)
    assert torch.equal(clear[0].sent, x) and clear[0].sites == ["0"]


def test_masks_come_from_the_os_not_from_a_seed() -> None:
    model, x = _mlp(), torch.randn(8, 12)
    torch.manual_seed(0)
    a = SLIP(rank=2).split(model).transcript(x)[0].received
    torch.manual_seed(0)  # the run seed sets every torch RNG: the masks must not follow
    b = SLIP(rank=2).split(model).transcript(x)[0].received
    assert not torch.equal(a, b), "two splits of one model must draw different masks"
    assert float((a - x).std()) > 0.5e4, "the mask must have the declared scale (1e4)"
    c = SLIP(rank=2, mask_seed=7).split(model).transcript(x)[0].received
    d = SLIP(rank=2, mask_seed=7).split(model).transcript(x)[0].received
    assert torch.equal(c, d), "mask_seed makes them reproducible, for tests"


def test_offline_part_holds_the_residual_it_multiplies() -> None:
    model = _mlp()
    split = SLIP(rank=2, mask=True).split(model)
    residual_bytes = sum(
        m.weight.numel() * m.weight.element_size() for m in split.untrusted.children()
    )
    offline_bytes = sum(p.numel() * p.element_size() for p in split.offline.parameters())
    assert offline_bytes == residual_bytes > 0


def test_lowrank_attack_is_not_capped_by_its_optimiser() -> None:
    """With exact layer outputs as signal, the subspace map of a 384x384 layer missing its
    top 8 components is recovered within 200 steps (from a zero start, Adam at 1e-3 got
    12% there)."""
    torch.manual_seed(0)
    n, k = 384, 8
    u, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    s = torch.logspace(1, -1, n, dtype=torch.float64)
    w = (u * s) @ v.T
    secret = (u[:, :k] * s[:k]) @ v[:, :k].T
    stolen = {"weight": (w - secret).float()}
    x = torch.randn(4096, n)
    y = x @ w.float().T
    batches = [(x[i : i + 256], y[i : i + 256]) for i in range(0, 4096, 256)]

    def fresh(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Linear(n, n, bias=False)

    ctx = SimpleNamespace(
        fresh_model=fresh,
        labelled_batches=lambda count, bs: batches[: max(count // 256, 1)],
        validation_batches=lambda: batches[-2:],
        loss=lambda m, a, b: nn.functional.mse_loss(m(a), b),
        device=CPU,
        seed=0,
        recipe=AttackRecipe(lr=1e-3, schedule="constant"),
        pretrained_start=False,
    )
    model = SubspaceAttack(n_samples=4096, steps=200)(stolen, ctx)
    error = torch.linalg.norm(model.weight.detach().double() - w) / torch.linalg.norm(secret)
    assert float(error) < 0.1, (float(error), model.attack_choice)


def test_units_and_shielded_partitions() -> None:
    cnn = _cnn()
    assert units(cnn) == [["0", "1", "2"], ["3", "4"], ["5"]]
    for position, want in (
        ("shallow", {"0", "1", "2"}),
        ("deep", {"5"}),
        ("intermediate", {"3", "4"}),
    ):
        split = ShieldUnits(position, 1).split(cnn)
        assert {k.replace("__", ".") for k in split.trusted} == want
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(split.forward(x), cnn(x))

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)) for _ in range(3)
            )
            self.head = nn.Linear(8, 2)

    assert units(Tiny()) == [["embed"], ["blocks.0"], ["blocks.1"], ["blocks.2"], ["head"]]
    # A shielded block is one exchange: the untrusted device sees only its input and output.
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    split = ShieldUnits("shallow", 2).split(model)
    assert len(record_transcript(split, torch.randn(3, 4))) == 1


def test_magnitude_mask_trusts_the_largest_entries() -> None:
    model = _mlp()
    split = RandomMask(trusted_fraction=0.1, criterion="magnitude").split(model)
    w = model[0].weight.detach()
    trusted = split.trusted["0"].product.weight.detach()
    kept = trusted != 0
    assert int(kept.sum()) == round(0.1 * w.numel())
    assert float(w.abs()[kept].min()) >= float(w.abs()[~kept].max())


def test_membership_auroc_is_the_loss_threshold_auroc() -> None:
    torch.manual_seed(0)
    logits = torch.randn(40, 3)
    labels = torch.randint(0, 3, (40,))

    class Fixed(nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return logits[idx]

    members = [(torch.arange(0, 20), labels[:20])]
    non_members = [(torch.arange(20, 40), labels[20:])]
    loss = nn.functional.cross_entropy(logits, labels, reduction="none")
    truth = [1] * 20 + [0] * 20
    want = roc_auc_score(truth, (-loss).numpy())
    assert membership_auroc(Fixed(), members, non_members) == pytest.approx(want, abs=1e-9)


def _ratio_ctx(stderr: float | None) -> SimpleNamespace:
    wl = SimpleNamespace(
        quality=QualityMetric("accuracy", "fraction", True),
        quality_stderr=lambda v: stderr,
    )
    return SimpleNamespace(workload=wl)


def test_recovered_ratio_carries_an_interval_and_refuses_a_gap_within_noise() -> None:
    m = ratio_metric(_ratio_ctx(0.01), "a", original=0.9, scratch=0.5, attacked=0.7)
    assert m.value == pytest.approx(0.5)
    assert m.ci_low < 0.5 < m.ci_high
    # delta method: sqrt(0.01² + 0.25·0.01² + 0.25·0.01²) / 0.4
    assert m.std == pytest.approx(math.sqrt(1.5) * 0.01 / 0.4)
    noisy = ratio_metric(_ratio_ctx(0.01), "a", original=0.9, scratch=0.86, attacked=0.9)
    assert noisy.value is None and "gap within noise" in (noisy.reason or "")


def _with_attack(ctx, name: str, factory) -> object:  # type: ignore[no-untyped-def]
    reg = copy.copy(ctx.registry)
    reg.attacks = {**reg.attacks, name: AttackSpec(name=name, factory=factory)}
    return dataclasses.replace(ctx, registry=reg)


class _Broken:
    def __call__(self, state, ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom [/opt/x]")


class _Crippled:
    """Returns the starting model whatever it stole: cannot recover anything."""

    def __call__(self, state, ctx):  # type: ignore[no-untyped-def]
        return ctx.fresh_model(ctx.seed)


def _record(method: str, metrics: dict[str, Metric]) -> RunRecord:
    spec = RunSpec(
        suite="t", kind="security_split", method=method, workload="digits-cnn", seed=0, device="cpu"
    )
    return RunRecord(id=spec.id, spec=spec, status="ok", metrics=metrics)


def test_a_failed_attack_makes_the_verdict_incomplete_and_ranks_it_last() -> None:
    base = context(
        "security_split",
        "all-trusted",
        "digits-cnn",
        options=DIGITS,
        attacks=["untrusted-only", "broken"],
    )
    result = security_split.run(_with_attack(base, "broken", _Broken))
    worst = result.metrics["attack_recovered_ratio"]
    assert worst.value is None and worst.reason.startswith("incomplete")
    assert "boom [/opt/x]" in worst.reason
    assert result.metrics["attack_untrusted-only_recovered_ratio"].value is not None
    exposed = dict(result.metrics)
    exposed["attack_recovered_ratio"] = Metric(value=0.9, unit="fraction", meter="t")
    (table,) = build_leaderboard([_record("all-trusted", result.metrics), _record("x", exposed)])
    assert [(r.method, r.verdict) for r in table.rows] == [
        ("x", "exposed"),
        ("all-trusted", "incomplete"),
    ]


def test_sanity_gate_fires_when_an_attack_cannot_steal_an_unprotected_model() -> None:
    base = context("security_split", "no-split", "digits-cnn", options=DIGITS, attacks=["crippled"])
    with pytest.raises(SanityGateFailed, match="crippled"):
        security_split.run(_with_attack(base, "crippled", _Crippled))
    # The real attacks pass it.
    ok = security_split.run(
        context(
            "security_split",
            "no-split",
            "digits-cnn",
            options=DIGITS,
            attacks=["untrusted-only", "finetune", "traffic-64"],
        )
    )
    assert ok.metrics["attack_recovered_ratio"].value == pytest.approx(1.0)


def test_worst_case_includes_the_traffic_attack() -> None:
    result = security_split.run(
        context(
            "security_split",
            "layer-split",
            "digits-cnn",
            options=DIGITS,
            attacks=["untrusted-only", "traffic-64"],
        )
    )
    m = result.metrics
    assert m["attack_untrusted-only_recovered_ratio"].value < 0.5
    assert m["attack_traffic-64_recovered_ratio"].value >= 0.9
    assert m["attack_recovered_ratio"].value == m["attack_traffic-64_recovered_ratio"].value
    assert "traffic-64" in m["attack_recovered_ratio"].meter
    traffic = result.info["attacks"]["traffic-64"]
    assert traffic["choice"] in ("traffic fit", "trained")
    # What the attack's model reports (AttackChoice, TrafficFit) reaches the record.
    assert traffic["choice"] in traffic["validation_losses"]
    r2 = traffic["traffic_r2"]
    assert r2 and all(isinstance(v, float) for v in r2.values())
    assert result.info["attacks"]["untrusted-only"]["traffic_r2"] is None
    assert m["mia_auroc_original"].value is not None


def test_registered_attacks_and_splits() -> None:
    reg = registry()
    assert {"traffic-64", "traffic-1024"} <= set(reg.attacks)
    for name in ("shield-shallow", "shield-deep", "shield-intermediate", "magnitude-mask"):
        assert reg.method("security_split", name).paper == "arXiv:2310.07152"


def test_sanity_gate_checks_the_learned_models_not_only_the_choice() -> None:
    """A fine-tune that destroys the model (learning rate 50) would hide behind the stolen
    state as it is, which on no-split is the original; the gate must see it."""
    base = context("security_split", "no-split", "digits-cnn", options=DIGITS, attacks=["finetune"])
    broken = copy.copy(base.workload)
    broken.attack_recipe = AttackRecipe(lr=50.0)
    with pytest.raises(SanityGateFailed, match=r"finetune \(fine-tuned\)"):
        security_split.run(dataclasses.replace(base, workload=broken))


def test_traffic_attack_learns_shielded_nonlinear_units_and_black_box_is_the_baseline() -> None:
    """A shielded conv stage and MLP stage (inputs and outputs in clear, not one affine
    layer) are learned from the transcript; the all-trusted bound, whose traffic is the
    black box the scratch attacker also gets, leaks nothing."""

    def run(method: str, hparams: dict) -> dict[str, Metric]:  # type: ignore[type-arg]
        return security_split.run(
            context(
                "security_split",
                method,
                "digits-cnn",
                options=DIGITS,
                hparams=hparams,
                attacks=["finetune", "traffic-64"],
            )
        ).metrics

    shielded = run("shield-intermediate", {"trusted_units": 2})
    traffic = shielded["attack_traffic-64_recovered_ratio"].value
    assert traffic > shielded["attack_finetune_recovered_ratio"].value
    assert traffic >= 0.5
    bound = run("all-trusted", {})
    assert bound["attack_traffic-64_recovered_ratio"].value == 0.0
    assert bound["trusted_flops_vs_original"].value == pytest.approx(1.0)
    masked = run("slip", {"rank": 4})
    assert masked["trusted_flops_vs_original"].value > 1.0  # the pads W_D·r are trusted work


def test_attacker_slices_are_disjoint_and_members_are_training_data() -> None:
    from benchmark.protocols.security_attacks import data_slices

    ctx = context("security_split", "no-split", "digits-cnn", options=DIGITS)
    slices = data_slices(ctx, 64)
    own = ctx.workload.labelled_batches("train", 64, 32, 0, CPU)
    rows = lambda batches: {tuple(x.flatten().tolist()) for b, _ in batches for x in b}  # noqa: E731
    mine, val, mem = rows(own), rows(slices.validation), rows(slices.members)
    assert mine and val and mem
    assert not (mine & val) and not (mine & mem) and not (val & mem)
    test = {tuple(x.flatten().tolist()) for x in ctx.workload.x_test}
    assert not (mem & test) and not (val & test)


def test_membership_auroc_sees_an_overfit_model() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 2, (64,))
    model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # memorise the first 32 (random labels: nothing to generalise)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
        opt.step()
    auc = membership_auroc(model, [(x[:32], y[:32])], [(x[32:], y[32:])])
    assert auc > 0.75  # swapped members and non-members would give < 0.25


def test_lowrank_attack_completes_the_residual_from_a_public_checkpoint() -> None:
    """With a public checkpoint (here: exactly the original's weights, the limit of a
    light fine-tune), the missing map starts as the public weights' component in the
    missing subspace, which completes the residual to the original."""
    torch.manual_seed(0)
    layer = nn.Linear(16, 16, bias=False)
    w = layer.weight.detach().double()
    u, s, vh = torch.linalg.svd(w)
    secret = (u[:, :3] * s[:3]) @ vh[:3]
    stolen = {"weight": (w - secret).float()}
    x = torch.randn(64, 16)
    batches = [(x, layer(x).detach())]
    ctx = SimpleNamespace(
        fresh_model=lambda seed: copy.deepcopy(layer),  # the "public" start
        labelled_batches=lambda count, bs: batches,
        validation_batches=lambda: batches,
        loss=lambda m, a, b: nn.functional.mse_loss(m(a), b),
        device=CPU,
        seed=0,
        recipe=AttackRecipe(lr=1e-3),
        pretrained_start=True,
    )
    model = SubspaceAttack(n_samples=64, steps=1)(stolen, ctx)
    filled = model.attack_candidates["subspace filled"].weight.detach().double()
    torch.testing.assert_close(filled, w, atol=1e-5, rtol=1e-5)
    # Without a public start the map starts at a random isometry of the right scale.
    ctx.pretrained_start = False
    model = SubspaceAttack(n_samples=64, steps=1)(stolen, ctx)
    guess = model.attack_candidates["subspace filled"].weight.detach().double() - (w - secret)
    assert torch.linalg.matrix_rank(guess, atol=1e-4) == 3
    assert float(torch.linalg.svdvals(guess)[0]) == pytest.approx(float(s[3]), rel=1e-4)


def test_float32_masks_are_measured_not_assumed_exact() -> None:
    def run(dtype: str) -> object:
        return security_split.run(
            context(
                "security_split",
                "slip",
                "digits-cnn",
                options=DIGITS,
                hparams={"rank": 4, "mask_dtype": dtype},
                attacks=["untrusted-only"],
            )
        )

    exact, rough = run("float64"), run("float32")
    assert exact.info["untrusted_dtype"] == "float64" and rough.info["untrusted_dtype"] == "float32"
    err64 = exact.metrics["max_abs_output_diff"].value
    err32 = rough.metrics["max_abs_output_diff"].value
    assert err64 < 1e-4 < err32  # 1e4-scale masks in float32 lose the activations' digits
    assert "float32" in rough.metrics["max_abs_output_diff"].meter


def test_a_weight_moved_wholly_to_the_trusted_side_is_not_loaded_as_zeros() -> None:
    """SLIP's residual of a matrix of rank <= k is all zeros; the attacker keeps its start
    (a public checkpoint's head, a random one) rather than a dead layer."""
    from plugins.security.attack_training import load_stolen

    start = _mlp(1)
    before = start[2].weight.detach().clone()
    split = SLIP(rank=100, mask=True, layers=["2"]).split(_mlp(0))
    stolen = split.untrusted_state()
    assert float(stolen["2.weight"].norm()) < 1e-5  # the whole head is trusted
    load_stolen(start, stolen, CPU)
    assert torch.equal(start[2].weight, before)
    assert torch.equal(start[0].weight, stolen["0.weight"])
