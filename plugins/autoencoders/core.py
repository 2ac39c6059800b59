"""The autoencoder, its data model and the reference figures, shared by the workloads and
the ``ae-recon`` detector of the multiple-descent study (Rahimi, Refael, Tirer &
Lindenbaum, "Unveiling Multiple Descents in Unsupervised Autoencoders", TMLR 2025,
arXiv:2406.11703).

Only the paper's abstract and the start of its introduction could be read here, so the
data model below is this project's reading of what they describe (a low-dimensional
signal, partial sample noise, partial feature noise, a shifted test domain, anomalies):

- clean data lie on a ``latent_dim``-dimensional linear subspace of R^``input_dim``:
  x = sqrt(D/d) · U z, z ~ N(0, I_d), U an orthonormal D x d basis, so that every feature
  has unit variance on average and ``noise_std`` is read against a unit signal
  (SNR = 1 / noise_std² on a corrupted entry);
- sample noise: a fraction of the *training samples* (``sample_noise``) gets N(0, σ²) on
  every feature;
- feature noise: a fraction of the *features* (``feature_noise``) gets N(0, σ²) in every
  training sample;
- the held-out sets are clean; domain shift turns the test subspace away from the
  training one by the angle ``domain_shift`` · 90° (every principal angle equal);
- anomalies are samples of another subspace at ``anomaly_angle`` · 90° from the normal
  one (so 1.0 is an orthogonal subspace, and small angles are hard).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from annotated_types import Interval
from torch import nn

Activation = Literal["linear", "relu", "tanh", "gelu", "leaky_relu", "sigmoid", "silu"]
# A share of samples or features (``chosen``), or of a right angle (``turned_basis``).
Fraction = Annotated[float, Interval(ge=0, le=1)]
ACTIVATIONS: dict[str, type[nn.Module] | None] = {
    "linear": None,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}


# --------------------------------------------------------------------------- the model


class Autoencoder(nn.Module):
    """A fully connected autoencoder: ``depth`` hidden layers of ``hidden_width`` on each
    side of a ``bottleneck``-wide code, the activation after every hidden layer (none on
    the code or the output). ``activation="linear"`` makes the whole map linear, of rank at
    most ``bottleneck``; ``depth=0`` is the shallow AE (input -> code -> output)."""

    def __init__(
        self, input_dim: int, hidden_width: int, bottleneck: int, depth: int, activation: str
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        for name, value in (
            ("input_dim", input_dim),
            ("hidden_width", hidden_width),
            ("bottleneck", bottleneck),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a whole number >= 0, not {depth!r}")
        act = ACTIVATIONS[activation]

        def stack(widths: list[int]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(itertools.pairwise(widths)):
                layers.append(nn.Linear(a, b))
                if act is not None and i < len(widths) - 2:
                    layers.append(act())
            return nn.Sequential(*layers)

        hidden = [hidden_width] * depth
        self.encoder = stack([input_dim, *hidden, bottleneck])
        self.decoder = stack([bottleneck, *hidden, input_dim])
        self.input_dim = input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = self.decoder(self.encoder(x.reshape(shape[0], -1)))
        return out.reshape(shape)


def per_sample_mse(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Mean squared reconstruction error of each row of ``x`` (any trailing shape)."""
    out = []
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk]
        err = (model(part) - part).float().pow(2)
        out.append(err.reshape(len(part), -1).mean(dim=1))
    return torch.cat(out) if out else torch.zeros(0)


def fit_autoencoder(
    model: nn.Module,
    x: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Adam on the mean squared reconstruction error, full-batch when ``batch_size`` is None
    or covers ``x``; returns the training loss of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    n = len(x)
    full = batch_size is None or batch_size >= n
    order = torch.arange(n)
    pos = n
    for _ in range(steps):
        if full:
            batch = x
        else:
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=g), 0
            batch = x[order[pos : pos + batch_size].to(x.device)]
            pos += batch_size
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(batch), batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def pca_reconstruction_mse(train: np.ndarray, test: np.ndarray, rank: int) -> float:
    """The best a linear autoencoder of bottleneck ``rank`` (with biases) can do when it
    minimises its training error: reconstruction through the top-``rank`` principal
    subspace of the centred training data (Baldi & Hornik 1989; Eckart-Young), scored as
    the mean squared error per entry on ``test``."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    v = vt[:rank].T
    centred = test - mean
    recon = centred @ v @ v.T
    return float(np.mean((centred - recon) ** 2))


# --------------------------------------------------------------------------- the data


def orthonormal(rows: int, cols: int, g: np.random.Generator) -> np.ndarray:
    """A ``rows`` x ``cols`` matrix with orthonormal columns, uniformly drawn (QR of a
    Gaussian matrix with the signs fixed)."""
    q, r = np.linalg.qr(g.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def turned_basis(basis: np.ndarray, fraction: float, g: np.random.Generator) -> np.ndarray:
    """An orthonormal basis whose every principal angle with ``basis`` is
    ``fraction`` · 90°: cos θ · U + sin θ · W, with W orthonormal and orthogonal to U
    (needs D >= 2d). ``fraction`` 0 is ``basis`` itself."""
    d_in, d = basis.shape
    if fraction == 0:
        return basis
    if d_in < 2 * d:
        raise ValueError(f"turning a {d}-dimensional subspace needs input_dim >= {2 * d}")
    w = g.standard_normal((d_in, d))
    w -= basis @ (basis.T @ w)
    w = np.linalg.qr(w)[0]
    theta = fraction * math.pi / 2
    return math.cos(theta) * basis + math.sin(theta) * w


def subspace_samples(n: int, basis: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """``n`` clean samples sqrt(D/d) · U z, z ~ N(0, I_d): unit variance per feature on
    average."""
    d_in, d = basis.shape
    z = g.standard_normal((n, d))
    return (math.sqrt(d_in / d) * z @ basis.T).astype(np.float32)


def chosen(count: int, fraction: float, g: np.random.Generator) -> np.ndarray:
    """The sorted indices of round(fraction · count) of ``count`` items, drawn without
    replacement."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"a fraction must lie in [0, 1], not {fraction!r}")
    k = round(fraction * count)
    return np.sort(g.permutation(count)[:k])


def corrupt(
    x: np.ndarray,
    *,
    sample_noise: float,
    feature_noise: float,
    noise_std: float,
    g: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` with N(0, noise_std²) added to every feature of a ``sample_noise`` fraction of
    the rows, and to a ``feature_noise`` fraction of the columns in every row (entries in
    both get both draws). Returns the corrupted copy, the noisy rows and the noisy
    columns."""
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, not {noise_std!r}")
    out = x.astype(np.float32, copy=True)
    n, d = x.shape
    rows = chosen(n, sample_noise, g)
    cols = chosen(d, feature_noise, g)
    if len(rows):
        out[rows] += (noise_std * g.standard_normal((len(rows), d))).astype(np.float32)
    if len(cols):
        out[:, cols] += (noise_std * g.standard_normal((n, len(cols)))).astype(np.float32)
    return out, rows, cols


def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Images (N, 1, H, W) turned by ``degrees`` about their centre (bilinear, zeros
    outside), in plain torch (torchvision does not import beside the CPU torch wheel)."""
    if degrees == 0:
        return x
    t = math.radians(degrees)
    theta = torch.tensor(
        [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]], dtype=x.dtype
    )
    grid = nn.functional.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def as_rows(batches: Iterable[Any]) -> torch.Tensor:
    """Concatenate a stream of batches (tensors, or ``(inputs, labels)`` tuples) into one
    float32 matrix of flattened rows."""
    rows = []
    for batch in batches:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        rows.append(torch.as_tensor(x).float().reshape(len(x), -1))
    if not rows:
        raise ValueError("no in-distribution batches to fit on")
    return torch.cat(rows)
