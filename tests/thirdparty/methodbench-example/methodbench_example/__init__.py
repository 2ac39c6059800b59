"""An example third-party methodbench plugin, installed as its own distribution.

It offers one optimizer (signSGD, Bernstein et al. 2018, arXiv:1802.04434) and one
optimizer workload (noisy linear least squares), registered through the same hooks the
built-ins use. The test suite installs it and runs it in a suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from benchmark import hookimpl
from benchmark.kinds import MethodSpec, WorkloadSpec


class SignSGD(torch.optim.Optimizer):
    """w <- w - lr * sign(momentum); with momentum 0 it is plain signSGD."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if group["momentum"]:
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    direction = buf
                p.add_(torch.sign(direction), alpha=-group["lr"])
        return loss


def build_signsgd(model: nn.Module, *, lr: float, momentum: float) -> SignSGD:
    return SignSGD(model.parameters(), lr=lr, momentum=momentum)


class LeastSquares:
    """y = A x + noise with a linear model; eval loss is the held-out mean squared error."""

    target_loss = 0.05
    items_unit = "samples"

    def __init__(self, dim: int = 16, batch_size: int = 32, noise: float = 0.1) -> None:
        g = torch.Generator().manual_seed(1234)
        self.dim, self.batch_size, self.noise = dim, batch_size, noise
        self.true_w = torch.randn(dim, 1, generator=g)
        self.eval_x = torch.randn(256, dim, generator=g)
        self.eval_y = self.eval_x @ self.true_w + noise * torch.randn(256, 1, generator=g)

    def build_model(self, seed: int, device: torch.device) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Linear(self.dim, 1).to(device)

    def train_batches(
        self, seed: int, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            x = torch.randn(self.batch_size, self.dim, generator=g)
            y = x @ self.true_w + self.noise * torch.randn(self.batch_size, 1, generator=g)
            yield x.to(device), y.to(device)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    def items_in(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int(batch[0].shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        pred = model(self.eval_x.to(device))
        return {"eval_loss": float(nn.functional.mse_loss(pred, self.eval_y.to(device)))}


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="optimizer",
            name="signsgd",
            factory=build_signsgd,
            defaults={"lr": 1e-2, "momentum": 0.0},
            paper="arXiv:1802.04434",
            description="sign of the (momentum) gradient",
        )
    )


@hookimpl
def methodbench_register_workloads(register):  # type: ignore[no-untyped-def]
    register(
        WorkloadSpec(
            kind="optimizer",
            name="least-squares",
            factory=LeastSquares,
            defaults={"dim": 16, "batch_size": 32, "noise": 0.1},
            description="noisy linear least squares (seconds)",
        )
    )
