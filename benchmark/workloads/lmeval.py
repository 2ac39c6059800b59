"""Held-out perplexity through lm-eval, for any module that maps token ids to logits.

lm-eval's ``HFLM`` wants a ``PreTrainedModel``; the models this suite evaluates are often
not one any more (a hybrid security split, a model whose layers were physically pruned
or wrapped by gates). So the project ships its own small ``LM`` adapter that implements
``loglikelihood_rolling`` over a plain callable ``model(input_ids) -> logits``, with
lm-eval's own rolling-window helpers (disjoint windows, as ``HFLM`` does), and its own
task YAML (``tasks/kjv_heldout.yaml``) read from a local JSONL. lm-eval then does the
rest: documents, requests, the word/byte perplexity and bits-per-byte aggregations.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn import functional as F

TASK_FILE = "kjv_heldout.yaml"
QUALITY_KEY = "word_perplexity,none"


def heldout_task(data_file: Path) -> Any:
    """The shipped task config pointed at ``data_file`` (a JSONL with a ``text`` field)."""
    from lm_eval.api.task import ConfigurableTask

    config = yaml.safe_load(files("benchmark.workloads").joinpath("tasks", TASK_FILE).read_text())
    config["dataset_kwargs"]["data_files"]["test"] = str(data_file)
    return ConfigurableTask(config=config)


def _adapter_class() -> type:
    """Defined lazily: importing lm_eval costs seconds, paid only by the LM workloads."""
    from lm_eval.api.model import LM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    class CallableLM(LM):
        """``loglikelihood_rolling`` for ``model(input_ids) -> logits`` [B, T, V]."""

        def __init__(
            self,
            model: nn.Module,
            tokenizer: Any,
            device: torch.device,
            max_length: int,
            batch_size: int,
        ) -> None:
            super().__init__()
            self.model, self.tokenizer, self.target = model, tokenizer, device
            self.max_length, self.batch_size = max_length, batch_size
            prefix = tokenizer.bos_token_id
            self.prefix = tokenizer.eos_token_id if prefix is None else prefix

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            raise NotImplementedError("this adapter only scores rolling log-likelihoods")

        def generate_until(self, requests: list[Any]) -> list[str]:
            raise NotImplementedError("this adapter only scores rolling log-likelihoods")

        def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
            windows: list[tuple[int, list[int], list[int]]] = []
            for i, request in enumerate(requests):
                (text,) = request.args
                tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                for pair in get_rolling_token_windows(tokens, self.prefix, self.max_length, 1):
                    context, target = make_disjoint_window(pair)
                    windows.append((i, context, target))
            totals = [0.0] * len(requests)
            for start in range(0, len(windows), self.batch_size):
                chunk = windows[start : start + self.batch_size]
                for (i, _, _), value in zip(chunk, self._score(chunk), strict=True):
                    totals[i] += value
            return totals

        @torch.inference_mode()
        def _score(self, chunk: list[tuple[int, list[int], list[int]]]) -> list[float]:
            """Sum of log p(target | context) per window, padded on the right."""
            inputs = [(ctx + tgt)[:-1] for _, ctx, tgt in chunk]
            width = max(len(x) for x in inputs)
            ids = torch.full((len(inputs), width), self.prefix, dtype=torch.long)
            for row, x in enumerate(inputs):
                ids[row, : len(x)] = torch.tensor(x)
            logp = F.log_softmax(self.model(ids.to(self.target)).float(), dim=-1).cpu()
            out = []
            for row, (_, ctx, tgt) in enumerate(chunk):
                first = len(ctx) - 1  # logits at position t predict token t + 1
                rows = logp[row, first : first + len(tgt)]
                out.append(float(rows.gather(1, torch.tensor(tgt)[:, None]).sum()))
            return out

    return CallableLM


def rolling_perplexity(
    model: nn.Module,
    tokenizer: Any,
    task: Any,
    device: torch.device,
    *,
    max_length: int,
    batch_size: int = 8,
) -> dict[str, float]:
    """lm-eval's results for ``task``: word_perplexity, byte_perplexity, bits_per_byte."""
    figures, _ = rolling_evaluation(
        model, tokenizer, task, device, max_length=max_length, batch_size=batch_size
    )
    return figures


def rolling_evaluation(
    model: nn.Module,
    tokenizer: Any,
    task: Any,
    device: torch.device,
    *,
    max_length: int,
    batch_size: int = 8,
) -> tuple[dict[str, float], list[tuple[float, int]]]:
    """``rolling_perplexity``'s figures and, per document in lm-eval's order, its total
    log-likelihood and word count: lm-eval's own per-sample ``word_perplexity`` pairs, whose
    weighted aggregation is the word perplexity (for an interval over documents)."""
    from lm_eval.evaluator import evaluate

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = _adapter_class()(model, tokenizer, device, max_length, batch_size)
    was = model.training
    model.eval()
    try:
        results = evaluate(lm=lm, task_dict={"heldout": task}, log_samples=True)
    finally:
        model.train(was)
    row = results["results"]["heldout"]
    figures = {
        k.split(",")[0]: float(v)
        for k, v in row.items()
        if k.endswith(",none") and "_stderr" not in k
    }
    docs = sorted(results["samples"]["heldout"], key=lambda sample: sample["doc_id"])
    per_doc = [(float(d["word_perplexity"][0]), int(d["word_perplexity"][1])) for d in docs]
    return figures, per_doc
