"""FineGates: gate equations, exact physical export, sparsity reaching its target."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.protocols import compressor
from benchmark.records import Budget
from plugins.compressors.finegates import FineGates, GatedLinear, GateVector, IndexedLinear
from plugins.compressors.neurons import neuron_groups

from .helpers import context


class Block(nn.Module):
    """A BERT-shaped block: attention-like projections and a feed-forward pair."""

    def __init__(self, d: int = 12, ff: int = 20) -> None:
        super().__init__()
        self.attention = nn.ModuleDict({"query": nn.Linear(d, d), "value": nn.Linear(d, d)})
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, ff)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.attention["query"](x)
        v = self.attention["value"](x)
        h = x + torch.tanh(q) * v
        return h + self.output.dense(F.gelu(self.intermediate.dense(h)))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return self.head(x)

    @property
    def last_layer(self) -> nn.Linear:
        return self.head


def test_gate_is_hard_sigmoid_of_tanh_and_open_probability_is_the_official_one() -> None:
    gate = GateVector(5)
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([-3.0, -0.6, 0.0, 0.4, 2.0]))
    gate.eval()
    mu = torch.tanh(gate.logits)
    assert torch.allclose(gate(), torch.clamp(mu + 0.5, 0, 1))
    expected = 0.5 - 0.5 * torch.erf((-0.5 - mu) / (0.5 * math.sqrt(2)))
    assert torch.allclose(gate.open_probability(), expected)
    assert gate()[0] == 0 and gate()[-1] == 1  # closed and open at the extremes
    gate.train()
    with torch.no_grad():
        draws = torch.stack([gate() for _ in range(2000)])
    assert float(draws.std(0)[2]) == pytest.approx(0.1, rel=0.1)  # N(0, 0.1²) noise in training


def test_fresh_gates_are_open_and_the_gated_model_is_the_original() -> None:
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(4, 7, 12)
    before = model(x)
    FineGates(layers="attention+mlp").attach(model)
    model.eval()
    assert torch.allclose(model(x), before, atol=1e-6)
    assert all(
        not p.requires_grad
        for n, p in model.named_parameters()
        if n.endswith("weight") and "head" not in n
    )
    assert model.head.weight.requires_grad


def _close_some(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, GatedLinear):
            for gate in (m.rows, m.cols):
                with torch.no_grad():
                    gate.logits.copy_(torch.randn(gate.logits.shape, generator=g) * 1.5)


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_export_equals_the_gated_model_and_is_physically_smaller(lora_rank: int) -> None:
    torch.manual_seed(1)
    model = Tiny()
    method = FineGates(layers="attention+mlp", lora_rank=lora_rank)
    method.attach(model)
    _close_some(model, 3)
    if lora_rank:
        for m in model.modules():
            if isinstance(m, GatedLinear) and m.lora_b is not None:
                with torch.no_grad():
                    m.lora_b.normal_(0, 0.1)
    model.eval()
    x = torch.randn(5, 6, 12)
    gated_out = model(x)
    closed = {
        n: (int((m.rows.eval()() == 0).sum()), int((m.cols.eval()() == 0).sum()))
        for n, m in model.named_modules()
        if isinstance(m, GatedLinear)
    }
    assert sum(r + c for r, c in closed.values()) > 10  # the test really closes gates
    n_before = sum(m.weight.numel() for m in model.modules() if isinstance(m, GatedLinear))
    from plugins.compressors.finegates import export

    export(model)
    assert not any(isinstance(m, GatedLinear) for m in model.modules())
    assert torch.allclose(model(x), gated_out, atol=1e-5)
    n_after = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | IndexedLinear) and name != "head"
    )
    assert n_after < n_before
    # The feed-forward pair lost whole neurons: both matrices shrank on the shared side.
    block = model.layers[0]
    assert block.intermediate.dense.weight.shape[0] == block.output.dense.weight.shape[1] < 20


def test_neuron_groups_find_bert_and_llama_mlps() -> None:
    names = [g.consumer for g in neuron_groups(Tiny())]
    assert names == ["layers.0.output.dense", "layers.1.output.dense"]
    llama = nn.Module()
    llama.mlp = nn.Module()
    for n, shape in (("gate_proj", (4, 8)), ("up_proj", (4, 8)), ("down_proj", (8, 4))):
        setattr(llama.mlp, n, nn.Linear(*shape))
    (group,) = neuron_groups(llama)
    assert group.producers == ("mlp.gate_proj", "mlp.up_proj") and group.consumer == "mlp.down_proj"


def test_training_drives_the_closed_share_to_the_target() -> None:
    torch.manual_seed(0)
    model = Tiny()
    teacher = Tiny()
    x = torch.randn(512, 4, 12)
    with torch.no_grad():
        y = teacher(x).argmax(-1)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]
    ctx = SimpleNamespace(
        finetune_batches=batches,
        loss=lambda m, a, b: F.cross_entropy(m(a).reshape(-1, 3), b.reshape(-1)),
        budget=Budget(),
    )
    target = 0.4
    method = FineGates(target_sparsity=target, steps=1000, layers="attention+mlp")
    gates = method.attach(model)
    method.train(model, gates, ctx)
    closed = torch.cat(
        [(g.rows.eval()() == 0).float() for g in gates]
        + [(g.cols.eval()() == 0).float() for g in gates]
    )
    assert abs(closed.mean().item() - target) < 0.05, closed.mean().item()


def test_recovery_finetune_trains_the_exported_model_and_keeps_its_size() -> None:
    torch.manual_seed(0)
    teacher = Tiny()
    x = torch.randn(256, 4, 12)
    with torch.no_grad():
        y = teacher(x).argmax(-1)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]

    def loss(m: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(a).reshape(-1, 3), b.reshape(-1))

    ctx = SimpleNamespace(finetune_batches=batches, loss=loss, budget=Budget())

    def compress(finetune_steps: int) -> nn.Module:
        torch.manual_seed(1)  # the gate noise: both runs close the same gates
        method = FineGates(
            target_sparsity=0.4, steps=200, finetune_steps=finetune_steps, finetune_lr=1e-2
        )
        return method.compress(copy.deepcopy(teacher), ctx)

    plain, recovered = compress(0), compress(100)
    size = [p.shape for p in plain.parameters()]
    assert [p.shape for p in recovered.parameters()] == size
    assert not any(p.requires_grad for p in recovered.parameters())
    with torch.no_grad():
        assert loss(recovered, x, y) < 0.8 * loss(plain, x, y)


def test_through_the_compressor_protocol_on_digits() -> None:
    ctx = context(
        "compressor",
        "finegates",
        "digits-cnn",
        hparams={"layers": "all-linear", "target_sparsity": 0.4, "steps": 150, "lr": 1e-2},
    )
    result = compressor.run(ctx)
    m = result.metrics
    assert m["params_after"].value < m["params_before"].value
    assert m["quality_after"].value > 0.5


def test_calibrated_target_is_the_saturated_fixed_point() -> None:
    from plugins.compressors.finegates import open_probability, probability_target

    s = 0.4
    p_open, p_closed = (float(open_probability(torch.tensor(v))) for v in (1.0, -1.0))
    assert probability_target(s) == pytest.approx((1 - s) * p_open + s * p_closed)
    # The official rule's fixed point (mean P = 1 - s) closes more than s at saturation.
    official_share = (p_open - (1 - s)) / (p_open - p_closed)
    assert 0.46 < official_share < 0.49


def test_the_task_head_is_trained_but_never_gated() -> None:
    model = Tiny()
    gates = FineGates(layers="all-linear").attach(model)
    assert isinstance(model.head, nn.Linear) and model.head.weight.requires_grad
    assert len(gates) == 8  # every Linear of the two blocks, not the head


def test_removing_llama_mlp_neurons_equals_zeroing_them() -> None:
    """On transformers' own LLaMA: deleting neurons from gate/up/down is exactly the model
    with those neurons' down_proj columns zeroed (what structured pruning claims)."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    from plugins.compressors.neurons import remove_neurons

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    model = LlamaForCausalLM(config).eval()
    groups = neuron_groups(model)
    assert [g.consumer for g in groups] == [f"model.layers.{i}.mlp.down_proj" for i in (0, 1)]
    keep = torch.tensor([0, 3, 5, 6, 11, 17, 20, 23])
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    drop = torch.ones(24, dtype=torch.bool)
    drop[keep] = False
    with torch.no_grad():
        for g in groups:
            masked.get_submodule(g.consumer).weight[:, drop] = 0
    for g in groups:
        remove_neurons(pruned, g, keep)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        assert torch.allclose(pruned(ids).logits, masked(ids).logits, atol=1e-5)
    assert pruned.model.layers[0].mlp.up_proj.weight.shape == (8, 16)


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.GELU, nn.ReLU], ids=lambda a: a.__name__)
def test_export_of_a_chain_with_closed_producer_rows_equals_the_gated_model(
    act: type[nn.Module],
) -> None:
    """A closed producer-row gate makes that neuron's pre-activation 0, so it still hands
    the consumer act(0) (0.5 for Sigmoid): the export must keep that constant (in the
    consumer's bias) when it deletes the neuron."""
    from plugins.compressors.finegates import export

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), act(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    model[0] = GatedLinear(model[0], 0, g)
    model[2] = GatedLinear(model[2], 0, g)
    with torch.no_grad():
        model[0].rows.logits[[1, 4]] = -5.0  # two producer rows closed
    model.eval()
    x = torch.randn(16, 5)
    with torch.no_grad():
        gated = model(x)
        export(model)
        exported = model(x)
    assert model[0].out_features == 6 and model[2].in_features == 6
    torch.testing.assert_close(exported, gated, rtol=0, atol=1e-6)
