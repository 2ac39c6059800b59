"""Few-shot refinement of a high-recall generic detector: the ``fewshot-pair`` workload.

FLAME (arXiv:2510.17670) starts from a frozen generic model that proposes candidates with
high recall and many look-alike false positives, and refines it with a handful of user
labels. This workload builds that situation from real data, offline:

- The generic model is the MNIST-5k BatchNorm CNN of ``images.py`` trained with the two
  digits ``target`` and ``lookalike`` MERGED into one label (default 4 and 9, the pair a
  small MNIST CNN confuses most often among digits that share a stroke layout). It cannot
  tell them apart by construction, like an open-vocabulary detector asked for "ship" that
  returns fishing boats and yachts alike. (``dataset: digits`` uses scikit-learn's 8x8
  digits and the digits-cnn configuration instead: smaller and faster, for tests.)
- The proposals are the digits that model predicts as the merged class "4-or-9": high
  recall for 4s, with the 9s (and the rare other digit) as false positives.
- Embeddings are that model's penultimate features (``model.penultimate``), which is
  what feature-space detectors read.
- Other pairs (``target``, ``lookalike``) build the same situation with a CNN of their
  own; ``benchmarks/tune_flame_band.py`` tunes FLAME's band on pairs that share no digit
  with the ranked one (3/5 and 2/7), so no hyperparameter is chosen on the ranked data.

Detector view (OOD = false positive = positive class; a high score means "likely a false
positive"): ``fit_batches`` are the unlabelled training-split proposals as
``ProposalBatch`` objects whose labels are reachable only through a ``LabelOracle`` that
counts every distinct label it reveals and refuses past its budget; ``test_batches("in")``
are the held-out proposals that are targets and ``("out")`` the held-out false positives.

Validation: the proposals among the generic model's validation digits (``images.py``: the
last quarter of the held-out digits, 250 of MNIST-5k's 1,000; the test proposals come from
the other 750). They are neither in the unlabelled pool (the detector's fit data, drawn
from the training digits) nor in the test set, and the oracle never labels them. A run's
seed draws the queries; the validation AUROC scores the detector those queries built, so
a grid (budget, band, selection) is chosen on proposals it never saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval
from pydantic import NonNegativeInt
from torch import nn

from benchmark.hashing import config_key
from benchmark.kinds.workload import check_split
from plugins.workloads import DIGITS_CNN
from plugins.workloads.images import BNConvNet, ImageClassification, ImageSet

# The generic model's training configuration per data set, over ImageClassification's
# defaults: that of images.py's workloads (mnist-cnn: the defaults; digits-cnn: its variant).
CONFIGS: dict[str, dict[str, Any]] = {"mnist-5k": {}, "digits": DIGITS_CNN}
Digit = Annotated[int, Interval(ge=0, le=9)]


class BudgetExceeded(RuntimeError):
    """A detector asked the oracle for more labels than its budget allows."""


class LabelOracle:
    """The user who labels proposals: 1 = false positive (not a target), 0 = target.

    Every distinct pool index revealed counts once against ``budget``; asking again for an
    index already revealed is free. A query that would exceed the budget raises
    ``BudgetExceeded`` and reveals nothing. ``restrict`` lowers the budget (a detector
    declaring its own smaller budget) and can never raise it.
    """

    def __init__(self, labels: np.ndarray, budget: int) -> None:
        if budget < 0:
            raise ValueError("budget must be non-negative")
        self._labels = np.asarray(labels, dtype=np.int64).copy()
        self._budget = int(budget)
        self._revealed: set[int] = set()

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def used(self) -> int:
        return len(self._revealed)

    def restrict(self, budget: int) -> None:
        self._budget = min(self._budget, int(budget))

    def query(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        if any(i < 0 or i >= len(self._labels) for i in idx):
            raise IndexError("oracle query outside the proposal pool")
        new = set(idx) - self._revealed
        if len(self._revealed) + len(new) > self._budget:
            raise BudgetExceeded(
                f"{len(new)} new labels asked with {self._budget - len(self._revealed)} "
                f"of the budget of {self._budget} left"
            )
        self._revealed |= new
        return self._labels[idx].copy()


@dataclass(frozen=True)
class ProposalBatch:
    """Unlabelled proposals: inputs, their indices in the pool, and the pool's oracle."""

    inputs: torch.Tensor
    indices: torch.Tensor
    oracle: LabelOracle


class MergedPairCNN(ImageClassification):
    """The generic model: the images.py CNN trained with ``lookalike`` relabelled as
    ``target`` (9 classes; digits above ``lookalike`` shift down by one)."""

    def __init__(self, *, target: int, lookalike: int, **options: Any) -> None:
        if target == lookalike or not (0 <= target <= 9 and 0 <= lookalike <= 9):
            raise ValueError("target and lookalike must be two different digits 0-9")
        self.target, self.lookalike = target, lookalike
        # digit -> merged label; built before the parent trains (it calls _train).
        self.label_map = torch.tensor([self._merge(d) for d in range(10)], dtype=torch.int64)
        super().__init__(**options)

    def _merge(self, digit: int) -> int:
        d = self.target if digit == self.lookalike else digit
        return d - 1 if d > self.lookalike else d

    @property
    def merged_class(self) -> int:
        return self._merge(self.target)

    def _arch(self) -> BNConvNet:
        return BNConvNet(self.size, self.width, self.hidden, classes=9)

    def _key(self) -> str:
        return config_key(super()._key(), "merged", self.target, self.lookalike)

    def _train(self) -> dict[str, torch.Tensor]:
        original = self.y_train
        self.y_train = self.label_map[original]
        try:
            return super()._train()
        finally:
            self.y_train = original


class FewShotPair:
    """Implements ``DetectorWorkload`` for few-shot refinement; see the module docstring."""

    def __init__(
        self,
        *,
        dataset: ImageSet = "mnist-5k",
        target: Digit = 4,  # the digit the detector keeps
        lookalike: Digit = 9,  # the digit merged with it: the false positives
        max_labels: NonNegativeInt = 30,  # labels the oracle gives a run in all
        train_seed: NonNegativeInt = 0,
    ) -> None:
        if dataset not in CONFIGS:
            raise ValueError(f"dataset must be one of {sorted(CONFIGS)}, not {dataset!r}")
        config = {**CONFIGS[dataset], "dataset": dataset, "train_seed": train_seed}
        config.pop("fit_samples", None)  # the generic model is fitted on no detector data
        self.generic = MergedPairCNN(target=target, lookalike=lookalike, **config)
        self.max_labels = max_labels
        self.in_name = f"proposals-target-{target}"
        self.out_name = f"proposals-false-positive-{lookalike}+other"
        self.oracle: LabelOracle | None = None
        model = self.generic.model(torch.device("cpu"))
        self.pool_x, self.pool_fp = self._proposals(
            model, self.generic.x_train, self.generic.y_train
        )
        self.test_x, self.test_fp = self._proposals(model, self.generic.x_test, self.generic.y_test)
        self.val_x, self.val_fp = self._proposals(model, self.generic.x_val, self.generic.y_val)
        self.validation = (
            f"{len(self.val_x)} proposals ({int((self.val_fp == 0).sum())} targets) among the "
            f"{len(self.generic.x_val)} held-out validation digits, disjoint from the "
            f"{len(self.test_x)} test proposals and from the pool"
        )

    @torch.no_grad()
    def _proposals(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, np.ndarray]:
        pred = torch.cat([model(x[i : i + 512]).argmax(-1) for i in range(0, len(x), 512)])
        keep = pred == self.generic.merged_class
        return x[keep], (y[keep] != self.generic.target).numpy().astype(np.int64)

    def model(self, device: torch.device) -> nn.Module:
        return self.generic.model(device)

    def fit_batches(self, device: torch.device) -> list[ProposalBatch]:
        """The unlabelled pool; a fresh oracle per call so that every run starts at 0."""
        self.oracle = LabelOracle(self.pool_fp, self.max_labels)
        idx = torch.arange(len(self.pool_x))
        return [
            ProposalBatch(self.pool_x[i : i + 256].to(device), idx[i : i + 256], self.oracle)
            for i in range(0, len(idx), 256)
        ]

    def test_batches(
        self, which: str, device: torch.device, split: str = "test"
    ) -> Iterator[torch.Tensor]:
        if which not in ("in", "out"):
            raise ValueError(f"which must be 'in' or 'out', not {which!r}")
        check_split(split)
        xs, fp = (self.test_x, self.test_fp) if split == "test" else (self.val_x, self.val_fp)
        x = xs[torch.from_numpy(fp == (1 if which == "out" else 0))]
        for i in range(0, len(x), 256):
            yield x[i : i + 256].to(device)
