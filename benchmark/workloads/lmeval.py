"""lm-eval tasks, found by name through lm-eval's ``TaskManager``, scored for any module that
maps token ids to logits.

lm-eval's ``HFLM`` wants a ``PreTrainedModel``; the models this suite evaluates are often
not one any more (a hybrid security split, a model whose layers were physically pruned
or wrapped by gates). So the host ships a small ``LM`` adapter over a plain callable
``model(input_ids) -> logits`` that implements ``loglikelihood_rolling`` (perplexity
tasks, with lm-eval's own rolling-window helpers: disjoint windows, as ``HFLM`` does) and
``loglikelihood`` (multiple-choice and other scored-continuation tasks); generation tasks
are refused when the task is loaded. Tasks come from ``TaskManager(include_path=...)``:
a workload names one (a task of its own in its include path, or any of lm-eval's that is
available offline) and lm-eval does the rest: documents, requests, metrics, their
aggregation and their standard errors (``TaskScore``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Draws for the metrics lm-eval bootstraps (perplexity, F1, ...): enough for a standard
# error to two digits; lm-eval's default (100,000, in a process pool) costs minutes.
BOOTSTRAP_ITERS = 1000
SUPPORTED_OUTPUT_TYPES = ("loglikelihood_rolling", "loglikelihood", "multiple_choice")


class TaskUnavailable(RuntimeError):
    """An lm-eval task cannot be used here: unknown, a group, a generation task, or its
    data not available offline. Raised when the task is loaded, before a model is."""


def _paths(include_path: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if include_path is None:
        return []
    if isinstance(include_path, str | Path):
        return [Path(include_path)]
    return [Path(p) for p in include_path]


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, nested mappings key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def find_task(name: str, include_path: str | Path | Sequence[str | Path] | None = None) -> Any:
    """The ``TaskManager`` that indexes ``name``: the include path alone first (indexing
    lm-eval's own 15,000 task files takes seconds), then lm-eval's tasks as well (an
    include path's task still takes precedence there)."""
    from lm_eval.tasks import TaskManager

    paths = _paths(include_path)
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise TaskUnavailable(
            f"lm-eval task {name!r}: include path {', '.join(missing)} is not a directory"
        )
    if paths:
        manager = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
        if name in manager.task_index:
            return manager
    manager = TaskManager(include_path=[str(p) for p in paths] or None)
    if name not in manager.task_index:
        import difflib

        close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
        where = ", ".join(str(p) for p in paths) or "no include path"
        raise TaskUnavailable(
            f"lm-eval task {name!r} is not one of lm-eval's tasks nor in {where}"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
        )
    return manager


def load_task(
    name: str,
    include_path: str | Path | Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """The lm-eval task ``name`` (from ``include_path`` or lm-eval's own tasks), with its
    config's ``overrides`` merged in (e.g. a data file set at run time), and its data
    loaded: a task this adapter cannot score or whose data is not available offline
    raises ``TaskUnavailable`` naming the task and the reason."""
    manager = find_task(name, include_path)
    entry = manager.task_index[name]
    if entry.kind.name not in ("TASK", "PY_TASK"):  # a group or a tag
        raise TaskUnavailable(
            f"lm-eval task {name!r} is a {entry.kind.name.lower()}, not a single task: name "
            "one of its tasks (a workload reports one quality figure)"
        )
    spec: str | dict[str, Any] = name
    if overrides and entry.yaml_path is None:
        raise TaskUnavailable(f"lm-eval task {name!r} has no YAML config to override")
    if entry.yaml_path is not None:
        # The loader TaskManager itself uses (``include:`` and ``!function`` resolved).
        from lm_eval.tasks._yaml_loader import load_yaml

        try:  # functions are imported only where the config itself is passed on
            written = load_yaml(entry.yaml_path, resolve_func=bool(overrides))
        except Exception as err:  # YAML, an include or a !function that does not load
            raise TaskUnavailable(
                f"lm-eval task {name!r}: its config {entry.yaml_path} could not be read "
                f"({type(err).__name__}: {str(err).strip()[:400]})"
            ) from err
        config = _merge(written, overrides or {})
        # Before the data: a generation task whose data is not here is refused for what
        # it asks, not for its data (lm-eval's default output type is generate_until; a
        # ``class:`` task declares its own, checked once loaded).
        if "class" not in config:
            _check_output_type(name, config.get("output_type", "generate_until"))
        if overrides:
            spec = config
    try:
        loaded = manager.load([spec])
    except Exception as err:  # datasets, the hub, a missing file: the reason is in err
        raise TaskUnavailable(
            f"lm-eval task {name!r}: its data could not be loaded offline "
            f"({type(err).__name__}: {str(err).strip()[:400]})"
        ) from err
    (task,) = loaded["tasks"].values()
    _check_output_type(name, task.OUTPUT_TYPE)  # a Python task declares it in its class
    return task


def _check_output_type(name: str, output_type: Any) -> None:
    if output_type not in SUPPORTED_OUTPUT_TYPES:
        raise TaskUnavailable(
            f"lm-eval task {name!r} asks for {output_type!r}; the logits adapter scores "
            f"only {', '.join(SUPPORTED_OUTPUT_TYPES)}"
        )


def primary_metric(task: Any) -> tuple[str, bool]:
    """The task's first metric (its ``metric_list`` order) and whether higher is better."""
    name, higher = next(iter(task.higher_is_better().items()))
    return name, bool(higher)


@dataclass(frozen=True)
class TaskScore:
    """One evaluation of one task: each metric's figure, its standard error as lm-eval
    reports it (``<metric>_stderr,none``; None where lm-eval gives none, as for weighted
    perplexities), the documents scored, and per document the (log-likelihood, units)
    pairs of each weighted-perplexity metric (an interval over documents needs them)."""

    figures: dict[str, float]
    stderr: dict[str, float | None]
    n: int
    per_doc: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


def _adapter_class() -> type:
    """Defined lazily: importing lm_eval costs seconds, paid only by the LM workloads."""
    from lm_eval.api.model import LM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    class CallableLM(LM):
        """``loglikelihood_rolling`` and ``loglikelihood`` for ``model(input_ids) -> logits``
        [B, T, V]."""

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

        def _encode(self, text: str) -> list[int]:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            """log p(continuation | context) and whether it is the greedy continuation.
            The context's trailing spaces move to the continuation, as lm-eval's models
            do; the prefix token (BOS, else EOS) comes first, as in the rolling windows;
            a long input keeps its last ``max_length`` tokens."""
            windows: list[tuple[int, list[int], list[int]]] = []
            for i, request in enumerate(requests):
                context, continuation = request.args
                if context:
                    n_spaces = len(context) - len(context.rstrip())
                    if n_spaces:
                        context, continuation = (
                            context[:-n_spaces],
                            context[-n_spaces:] + continuation,
                        )
                    whole, ctx = self._encode(context + continuation), self._encode(context)
                    ctx, tgt = whole[: len(ctx)], whole[len(ctx) :]
                else:
                    ctx, tgt = [], self._encode(continuation)
                tgt = tgt[-self.max_length :]
                ctx = [self.prefix, *ctx][-(self.max_length + 1 - len(tgt)) :]
                windows.append((i, ctx, tgt))
            return list(self._batched(windows))

        def generate_until(self, requests: list[Any]) -> list[str]:
            raise NotImplementedError("this adapter scores log-likelihoods; it does not generate")

        def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
            windows: list[tuple[int, list[int], list[int]]] = []
            for i, request in enumerate(requests):
                (text,) = request.args
                tokens = self._encode(text)
                for pair in get_rolling_token_windows(tokens, self.prefix, self.max_length, 1):
                    context, target = make_disjoint_window(pair)
                    windows.append((i, context, target))
            totals = [0.0] * len(requests)
            for (i, _, _), (value, _) in zip(windows, self._batched(windows), strict=True):
                totals[i] += value
            return totals

        def _batched(
            self, windows: list[tuple[int, list[int], list[int]]]
        ) -> Iterator[tuple[float, bool]]:
            for start in range(0, len(windows), self.batch_size):
                yield from self._score(windows[start : start + self.batch_size])

        @torch.inference_mode()
        def _score(self, chunk: list[tuple[int, list[int], list[int]]]) -> list[tuple[float, bool]]:
            """Per window: sum of log p(target | context) and whether every target token
            is the most likely one; padded on the right."""
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
                target = torch.tensor(tgt)
                total = float(rows.gather(1, target[:, None]).sum())
                out.append((total, bool((rows.argmax(-1) == target).all())))
            return out

    return CallableLM


@contextlib.contextmanager
def _in_process_bootstrap() -> Iterator[None]:
    """lm-eval bootstraps in a process pool unless ``DISABLE_MULTIPROC`` is set; a run's
    process (pinned to its CPUs, maybe forked from the fork server) keeps it in process."""
    was = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        if was is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = was


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):  # lm-eval writes "N/A" where it has no stderr
        return None
    return number if number == number else None  # NaN: none either


def evaluate_task(
    model: nn.Module,
    tokenizer: Any,
    task: Any,
    device: torch.device,
    *,
    max_length: int,
    batch_size: int = 8,
    limit: int | None = None,
) -> TaskScore:
    """lm-eval's results for ``task`` (from ``load_task``) on ``model``, in eval mode;
    ``limit``: only the task's first ``limit`` documents (lm-eval's ``limit``)."""
    from lm_eval.evaluator import evaluate

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = _adapter_class()(model, tokenizer, device, max_length, batch_size)
    name = task.task_name
    was = model.training
    model.eval()
    try:
        with _in_process_bootstrap():
            results = evaluate(
                lm=lm,
                task_dict={"tasks": {name: task}, "groups": {}, "group_map": {}},
                limit=limit,
                bootstrap_iters=BOOTSTRAP_ITERS,
                log_samples=True,
            )
    finally:
        model.train(was)
    if results is None:  # lm-eval returns None on non-zero ranks only
        raise RuntimeError(f"lm-eval returned no results for {name!r}")
    row = results["results"][name]
    figures: dict[str, float] = {}
    stderr: dict[str, float | None] = {}
    for key, value in row.items():
        metric, _, rest = key.partition(",")
        if rest != "none" or metric.endswith("_stderr"):
            continue
        number = _number(value)
        if number is not None:
            figures[metric] = number
            stderr[metric] = _number(row.get(f"{metric}_stderr,none"))
    docs = sorted(results["samples"][name], key=lambda sample: sample["doc_id"])
    per_doc = {
        metric: [(float(d[metric][0]), int(d[metric][1])) for d in docs]
        for metric in ("word_perplexity", "byte_perplexity")
        if metric in figures and docs and isinstance(docs[0].get(metric), list | tuple)
    }
    return TaskScore(figures=figures, stderr=stderr, n=len(docs), per_doc=per_doc)
