"""The pretrained-model workloads: MiniLM text classification and the causal-LM one with
perplexity through lm-eval (on a tiny LLaMA saved as a transformers directory, so the
test needs no large asset; the SmolLM2 default goes through the same code)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.workloads.lmeval import evaluate_task
from plugins.workloads.smollm import PretrainedLM, kjv_chapters, kjv_task
from plugins.workloads.textcls import (
    OT_BOOKS,
    TextClassification,
    balanced_split,
    fortunes,
    load_labelled_texts,
    load_ood_texts,
)

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- text data


def test_testament_labels_follow_the_book() -> None:
    texts, labels, names = load_labelled_texts("kjv-testament", None, "text", "label")
    assert names == ["old testament", "new testament"]
    assert texts[0].startswith("In the beginning God created")  # Genesis 1:1
    assert labels[0] == 0 and labels[-1] == 1  # Revelation closes the New Testament
    # The Old Testament's 23,145 verses, then the New opens with Matthew 1:1.
    assert int((labels == 0).sum()) == 23145
    assert texts[23145].startswith("The book of the generation of Jesus Christ")
    assert OT_BOOKS == 39


def test_fortunes_split_on_percent_lines_and_ood_texts_differ_from_kjv() -> None:
    by_cat = fortunes(["science", "love"])
    assert set(by_cat) == {"science", "love"}
    assert all(len(e) > 10 and "\n%\n" not in e for v in by_cat.values() for e in v)
    ood = load_ood_texts("fortune")
    assert len(ood) > 1000
    with pytest.raises(ValueError, match="unknown OOD text set"):
        load_ood_texts("nope")


def test_balanced_split_is_disjoint_balanced_and_fixed() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30).numpy()
    train, test = balanced_split(labels, train_per_class=10, test_per_class=5)
    assert not set(train) & set(test)
    assert sorted(labels[test].tolist()) == [0] * 5 + [1] * 5
    assert sorted(labels[train].tolist()) == [0] * 10 + [1] * 10
    again = balanced_split(labels, train_per_class=10, test_per_class=5)
    assert (again[0] == train).all() and (again[1] == test).all()


@pytest.mark.slow
def test_minilm_workload_fine_tunes_and_serves_every_kind() -> None:
    wl = TextClassification(train_per_class=48, test_per_class=16, epochs=1, fit_samples=32)
    model = wl.model(CPU)
    x = wl.example_inputs(8, CPU)
    assert x.dtype == torch.long and x.shape[0] == 8
    mask = x != wl.pad_id
    assert bool(mask[:, 0].all())  # [CLS] first, padding only at the end
    logits = model(x)
    assert logits.shape == (8, 2)
    assert model.penultimate(x).shape == (8, 384) and model.last_layer is model.head
    # Padding does not change a verse's prediction: pooling masks it out.
    one = x[:1, : int(mask[0].sum())]
    padded = torch.cat([one, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(one), model(padded), atol=1e-5)
    assert 0.0 <= wl.evaluate(model, CPU) <= 1.0
    (inputs, labels), *_ = wl.labelled_batches("train", 16, 8, seed=0, device=CPU)
    assert inputs.shape[0] == 8 and labels.shape == (8,)
    assert wl.loss(model, inputs, labels).ndim == 0
    out = next(wl.test_batches("out", CPU))
    assert out.dtype == torch.long
    assert torch.equal(next(wl.test_batches("out", CPU)), out)  # the same OOD texts each read
    fresh = wl.fresh_model(0, CPU)
    assert not torch.equal(fresh.head.weight, model.head.weight)


# --------------------------------------------------------------------------- lm-eval adapter


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer LLaMA and a word-level tokenizer over KJV words, saved as transformers
    saves a pretrained model: what a user would pass as the workload's ``model``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for t in kjv_chapters()[:50] for w in re.findall(r"\w+|[^\w\s]", t)})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Uniform(nn.Module):
    """Equal logits for every token: log p = −log V at every position."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*input_ids.shape, self.vocab)


def _docs(tmp_path: Path, docs: list[str]) -> Path:
    import json

    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def test_rolling_windows_score_every_token_exactly_once(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    docs = [" ".join(kjv_chapters()[i].split()[:120]) for i in (0, 3)]  # longer than a window
    task = kjv_task(_docs(tmp_path, docs))
    vocab = len(tok)
    res = evaluate_task(Uniform(vocab), tok, task, CPU, max_length=16, batch_size=3).figures
    tokens = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs)
    words = sum(len(re.split(r"\s+", d)) for d in docs)
    assert res["word_perplexity"] == pytest.approx(math.exp(tokens * math.log(vocab) / words))


def test_perplexity_equals_a_direct_forward_when_a_document_fits(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    docs = ["In the beginning God created the heaven and the earth .", "And God said"]
    task = kjv_task(_docs(tmp_path, docs))
    from plugins.workloads.smollm import LogitsLM

    model = LogitsLM(lm)
    res = evaluate_task(model, tok, task, CPU, max_length=64, batch_size=2).figures
    total = 0.0
    for d in docs:
        ids = [tok.bos_token_id, *tok(d, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])), -1)[0]
        total += float(logp[:-1].gather(1, torch.tensor(ids[1:])[:, None]).sum())
    words = sum(len(re.split(r"\s+", d)) for d in docs)
    assert res["word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-4)


@pytest.mark.slow
def test_pretrained_lm_workload_on_a_local_model_directory(tiny_lm_dir: Path) -> None:
    wl = PretrainedLM(model=str(tiny_lm_dir), eval_docs=2, max_length=64, seq_len=16)
    model = wl.model(CPU)
    assert all(name.startswith("lm.") for name, _ in model.named_parameters())
    x = wl.example_inputs(64, CPU)
    assert x.shape == (4, 16)  # capped at example_batch rows
    assert model(x).shape == (4, 16, len(wl.tokenizer))
    ppl = wl.evaluate(model, CPU)
    assert ppl > 1.0 and math.isfinite(ppl)
    (inputs, labels), *_ = wl.labelled_batches("train", 8, 4, seed=0, device=CPU)
    assert torch.equal(inputs, labels)  # next tokens are the labels, shifted in loss()
    # The loss is the mean next-token cross-entropy.
    with torch.no_grad():
        logits = model(inputs)
        expected = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        )
        assert float(wl.loss(model, inputs, labels)) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="evaluation only"):
        wl.labelled_batches("test", 8, 4, seed=0, device=CPU)
    # The attackers' "from scratch" model: same architecture, new random weights.
    fresh = wl.fresh_model(1, CPU)
    assert not torch.equal(fresh.lm.model.embed_tokens.weight, model.lm.model.embed_tokens.weight)


@pytest.mark.slow
def test_pretrained_lm_validation_chapters_and_interval(tiny_lm_dir: Path) -> None:
    """Validation is the next held-out chapters after the test ones, apart from the
    training chapters; its perplexity interval is over chapters (independent check)."""
    import json

    from scipy import stats

    from plugins.workloads.text import HOLDOUT_EVERY

    wl = PretrainedLM(model=str(tiny_lm_dir), eval_docs=3, val_docs=2, max_length=64, seq_len=16)

    def docs(split: str) -> list[str]:
        path = wl._tasks[split].config.dataset_kwargs["data_files"]["test"]
        return [json.loads(line)["text"] for line in Path(path).read_text().splitlines()]

    chapters = kjv_chapters()
    held = [t for i, t in enumerate(chapters) if not i % HOLDOUT_EVERY]
    train = {t for i, t in enumerate(chapters) if i % HOLDOUT_EVERY}
    assert docs("test") == held[:3] and docs("val") == held[3:5]
    assert not set(docs("val")) & set(docs("test")) and not set(docs("val")) & train
    model = wl.model(CPU)
    test_ppl, val_ppl = wl.evaluate(model, CPU), wl.evaluate(model, CPU, split="val")
    assert test_ppl != val_ppl
    # The per-chapter figures lm-eval logs reproduce the validation perplexity ...
    score = evaluate_task(model, wl.tokenizer, wl._tasks["val"], CPU, max_length=64)
    assert score.figures["word_perplexity"] == pytest.approx(val_ppl)
    assert score.stderr["word_perplexity"] is None  # lm-eval has none for a weighted ppl
    per_doc = score.per_doc["word_perplexity"]
    ll = [a for a, _ in per_doc]
    words = [len(re.split(r"\s+", d)) for d in docs("val")]
    assert [w for _, w in per_doc] == words
    assert math.exp(-sum(ll) / sum(words)) == pytest.approx(val_ppl)
    # ... and the interval is the delta-method one over chapters, t with n - 1 df.
    loss = -sum(ll) / sum(words)
    resid = [-a - loss * w for a, w in zip(ll, words, strict=True)]
    se = math.sqrt(sum(r * r for r in resid) / (len(ll) - 1) / len(ll)) / (sum(words) / len(ll))
    half = stats.t.ppf(0.975, len(ll) - 1) * se
    ci = wl.quality_interval(val_ppl, "val")
    assert ci is not None and ci.n == 2
    assert (ci.low, ci.high) == pytest.approx((math.exp(loss - half), math.exp(loss + half)))
    assert wl.quality_interval(test_ppl, "test").n == 3
    assert wl.quality_interval(val_ppl + 1.0, "val") is None  # not a figure it computed
    assert wl.quality_stderr(test_ppl) is None  # the security protocol's gates: unchanged
    with pytest.raises(ValueError, match="evaluation only"):
        wl.labelled_batches("val", 8, 4, seed=0, device=CPU)


# --------------------------------------------------------------------------- named lm-eval tasks

CHOICE_TASK = "mb_test_choice"
QUESTIONS = [
    ("In the beginning God created the", ["heaven", "waters"], 0),
    ("And God said , Let there be", ["light", "darkness"], 1),
    ("And the evening and the morning were the first", ["day", "night"], 0),
    ("And God called the dry land", ["Earth", "Seas"], 0),
    ("And God saw that it was", ["good", "evil"], 1),
    # Two equal choices score alike and lm-eval's argmax picks the first: one right and
    # one wrong answer whatever the model, so the accuracy is neither 0 nor 1.
    ("And God blessed the", ["seventh", "seventh"], 0),
    ("And God blessed the", ["seventh", "seventh"], 1),
]


def _task_dir(
    tmp_path: Path, name: str, output_type: str, dataset: str, validation: bool = False
) -> Path:
    """A folder with one lm-eval task YAML: multiple choice over a local JSONL (or a hub
    data set named by ``dataset``), scored by accuracy; ``validation``: a validation split
    too, the questions in reverse order."""
    import json

    folder = tmp_path / f"tasks-{name}"
    folder.mkdir()
    files = {"test": folder / "questions.jsonl", "validation": folder / "reversed.jsonl"}
    for split, rows in (("test", QUESTIONS), ("validation", QUESTIONS[::-1])):
        files[split].write_text(
            "".join(
                json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in rows
            )
        )
    splits = ("test", "validation") if validation else ("test",)
    source = (
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n"
        + "".join(f"    {split}: {files[split]}\n" for split in splits)
        if dataset == "local"
        else f"dataset_path: {dataset}\n"
    )
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n{source}output_type: {output_type}\ntest_split: test\n"
        + ("validation_split: validation\n" if validation else "")
        + "doc_to_text: '{{question}}'\ndoc_to_choice: choices\ndoc_to_target: answer\n"
        "generation_kwargs:\n  until: ['.']\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    return folder


def _choice_logliks(model: nn.Module, tok: object) -> list[list[float]]:
    """log p(" choice" | BOS question), summed over the choice's tokens, by direct forward."""
    out = []
    for question, choices, _ in QUESTIONS:
        ctx = [tok.bos_token_id, *tok(question, add_special_tokens=False)["input_ids"]]  # type: ignore[attr-defined]
        row = []
        for choice in choices:
            whole = tok(f"{question} {choice}", add_special_tokens=False)["input_ids"]  # type: ignore[attr-defined]
            ids = ctx + whole[len(ctx) - 1 :]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])), -1)[0]
            target = torch.tensor(ids[len(ctx) :])
            row.append(float(logp[len(ctx) - 1 : -1].gather(1, target[:, None]).sum()))
        out.append(row)
    return out


def test_the_adapter_scores_continuations_like_a_direct_forward(tiny_lm_dir: Path) -> None:
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmark.workloads.lmeval import _adapter_class
    from plugins.workloads.smollm import LogitsLM

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = LogitsLM(AutoModelForCausalLM.from_pretrained(tiny_lm_dir)).eval()
    lm = _adapter_class()(model, tok, CPU, 64, 3)
    # The context's trailing space moves to the continuation, as lm-eval's models do.
    requests = [
        SimpleNamespace(args=(f"{q} ", c) if i % 2 else (q, f" {c}"))
        for i, (q, cs, _) in enumerate(QUESTIONS)
        for c in cs
    ]
    got = lm.loglikelihood(requests)
    expected = [ll for row in _choice_logliks(model, tok) for ll in row]
    assert [ll for ll, _ in got] == pytest.approx(expected, rel=1e-5)
    # Greedy: true for the model's own argmax word, false for any other.
    ids = [tok.bos_token_id, *tok("In the", add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        ranked = model(torch.tensor([ids]))[0, -1].argsort(descending=True).tolist()
    words = [t for t in ranked if t not in tok.all_special_ids and t != tok.unk_token_id]
    assert words[0] == ranked[0]  # the argmax is an ordinary word (fixed seed)
    best, other = (tok.convert_ids_to_tokens(t) for t in words[:2])
    flags = [
        g
        for _, g in lm.loglikelihood(
            [SimpleNamespace(args=("In the", f" {w}")) for w in (best, other)]
        )
    ]
    assert flags == [True, False]


def test_a_task_in_an_include_path_is_found_by_name_and_its_stderr_is_the_interval(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    from scipy import stats

    from benchmark.protocols.compressor import quality_metric

    folder = _task_dir(tmp_path, CHOICE_TASK, "multiple_choice", "local")
    wl = PretrainedLM(
        model=str(tiny_lm_dir),
        eval_docs=len(QUESTIONS),  # every document: the figure is the task's own
        max_length=64,
        seq_len=16,
        lm_eval_task=CHOICE_TASK,
        lm_eval_include_path=str(folder),
    )
    assert (wl.quality.name, wl.quality.unit, wl.quality.higher_is_better) == (
        "acc",
        "fraction",
        True,
    )
    assert wl.quality.scope is None and wl.quality.meter == "workload acc"
    assert wl.validation is None  # the task has no validation split
    model = wl.model(CPU)
    acc = wl.evaluate(model, CPU)
    right = [
        float(max(range(len(row)), key=row.__getitem__) == answer)
        for row, (_, _, answer) in zip(_choice_logliks(model, wl.tokenizer), QUESTIONS, strict=True)
    ]
    assert acc == pytest.approx(sum(right) / len(right))
    assert 0.0 < acc < 1.0
    # lm-eval's stderr of a mean (sample standard deviation / sqrt(n)) becomes the interval:
    # Student's t on n - 1 degrees of freedom, clipped to an accuracy's [0, 1].
    n = len(right)
    se = math.sqrt(sum((r - acc) ** 2 for r in right) / (n - 1) / n)
    assert wl.quality_stderr(acc) == pytest.approx(se)
    half = stats.t.ppf(0.975, n - 1) * se
    ci = wl.quality_interval(acc)
    assert ci is not None and ci.n == n and "acc_stderr" in ci.method
    assert (ci.low, ci.high) == pytest.approx((max(0.0, acc - half), min(1.0, acc + half)))
    metric = quality_metric(wl, acc)  # what a compressor run records
    assert (metric.ci_low, metric.ci_high, metric.n) == pytest.approx((ci.low, ci.high, n))
    with pytest.raises(ValueError, match="no validation split"):
        wl.evaluate(model, CPU, split="val")


def test_a_named_task_scores_eval_docs_and_val_docs_and_says_so(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """eval_docs and val_docs cut a named task through lm-eval's limit (the first
    documents of its test and validation splits), and the metric's meter says so."""
    from benchmark.protocols.compressor import quality_metric

    folder = _task_dir(tmp_path, CHOICE_TASK, "multiple_choice", "local", validation=True)
    wl = PretrainedLM(
        model=str(tiny_lm_dir),
        eval_docs=2,
        val_docs=3,
        max_length=64,
        seq_len=16,
        lm_eval_task=CHOICE_TASK,
        lm_eval_include_path=str(folder),
    )
    n = len(QUESTIONS)
    assert wl.quality.scope == (
        f"lm-eval limit: the first 2 of its {n} documents; validation: the first 3 of {n}"
    )
    assert wl.validation is not None and "validation split" in wl.validation
    model = wl.model(CPU)
    right = [
        float(max(range(len(row)), key=row.__getitem__) == answer)
        for row, (_, _, answer) in zip(_choice_logliks(model, wl.tokenizer), QUESTIONS, strict=True)
    ]
    acc = wl.evaluate(model, CPU)
    assert wl._scores[("test", acc)].n == 2
    assert acc == pytest.approx(sum(right[:2]) / 2)
    val = wl.evaluate(model, CPU, split="val")  # the validation split: questions reversed
    assert wl._scores[("val", val)].n == 3
    assert val == pytest.approx(sum(right[::-1][:3]) / 3)
    metric = quality_metric(wl, acc)
    assert metric.meter == f"workload acc ({wl.quality.scope})"
    assert quality_metric(wl, val, "val").meter.endswith(", validation split")


def test_a_task_that_cannot_run_offline_fails_before_the_model_loads(tmp_path: Path) -> None:
    from benchmark.workloads.lmeval import TaskUnavailable, load_task

    hub = _task_dir(tmp_path, "mb_test_hub", "multiple_choice", "methodbench-test/no-such-set")
    with pytest.raises(TaskUnavailable, match=r"'mb_test_hub'.*not be loaded offline"):
        load_task("mb_test_hub", hub)
    # The workload loads its task first: a missing model directory is never reached.
    with pytest.raises(TaskUnavailable, match="mb_test_hub"):
        PretrainedLM(
            model=str(tmp_path / "no-model"),
            lm_eval_task="mb_test_hub",
            lm_eval_include_path=str(hub),
        )
    gen = _task_dir(tmp_path, "mb_test_gen", "generate_until", "local")
    with pytest.raises(TaskUnavailable, match=r"'mb_test_gen' asks for 'generate_until'"):
        load_task("mb_test_gen", gen)
    # A generation task is refused for what it asks before its data is looked for.
    gen_hub = _task_dir(tmp_path, "mb_test_gen_hub", "generate_until", "methodbench-test/nope")
    with pytest.raises(TaskUnavailable, match=r"'mb_test_gen_hub' asks for 'generate_until'"):
        load_task("mb_test_gen_hub", gen_hub)
    with pytest.raises(TaskUnavailable, match="not a directory"):
        load_task("mb_test_gen", tmp_path / "nowhere")
    # Not in the include path: lm-eval's own tasks are searched too, then a suggestion.
    with pytest.raises(TaskUnavailable, match=r"'mb_test_ge' is not one of.*'mb_test_gen'"):
        load_task("mb_test_ge", gen)


@pytest.mark.parametrize(
    ("metric", "value", "se", "n", "floor"),
    [("word_perplexity", 1.3, 0.5, 20, 1.0), ("brier_score", 0.2, 0.1, 5, 0.0)],
)
def test_a_task_intervals_floor_is_its_metrics_own(
    metric: str, value: float, se: float, n: int, floor: float
) -> None:
    """A perplexity is at least 1 and a Brier score at least 0, whatever the stderr says
    (reference: scipy's t quantile, by hand on the log scale for the perplexity)."""
    import math

    from scipy import stats

    from benchmark.kinds.workload import stderr_interval
    from plugins.workloads.smollm import metric_range, quality_of

    q = quality_of(metric, higher_is_better=False)
    got = stderr_interval(value, se, n, log_scale=q.log_scale, bounds=metric_range(q))
    t = stats.t.ppf(0.975, n - 1)
    if q.log_scale:
        low, high = value * math.exp(-t * se / value), value * math.exp(t * se / value)
    else:
        low, high = value - t * se, value + t * se
    assert low < floor  # the unclipped interval crosses the floor
    assert got.low == floor and got.high == pytest.approx(high, rel=1e-9)
