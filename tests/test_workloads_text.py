"""The tiny-LLaMA workload's data path: split, tokenizer cache, streams and presets.

Most tests use a small generated corpus in a directory (the ``dataset`` option's path to
``datasets.load_dataset``) so that they also cover corpora other than the default and
each can start from an empty cache in milliseconds; the KJV tests share the session's
cache with the optimizer-protocol tests.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.kinds.optimizer import OptimizerWorkload
from plugins.workloads import text
from plugins.workloads.assets import asset_path
from plugins.workloads.text import HOLDOUT_EVERY, PRESETS, CorpusLM, load_texts

from .helpers import registry

CPU = torch.device("cpu")
WORDS = "the lord said unto moses and aaron go forth into land of milk honey light day"
SMALL = {"vocab_size": 300, "seq_len": 8, "batch_size": 2, "eval_batches": 4}
KJV_TINY = {"vocab_size": 512, "seq_len": 32, "batch_size": 4}


def write_corpus(root: Path, n: int = 400) -> Path:
    """A directory holding one JSONL file of ``n`` distinct records."""
    rng, words = random.Random(0), WORDS.split()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for i in range(n):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 14)))
            fh.write(json.dumps({"body": f"Record {i}: {sentence}."}) + "\n")
    return root


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh corpus and a fresh, empty methodbench cache for one test."""
    monkeypatch.setenv("METHODBENCH_CACHE", str(tmp_path / "cache"))
    return str(write_corpus(tmp_path / "corpus"))


def small(corpus: str, **options: object) -> CorpusLM:
    return CorpusLM(dataset=corpus, text_field="body", **{**SMALL, **options})  # type: ignore[arg-type]


def test_split_holds_out_every_20th_record_disjointly(corpus: str) -> None:
    train, held = load_texts(corpus, None, "body")
    records = [f"Record {i}:" for i in range(400)]
    assert [t.split(" ", 2)[:2] for t in held] == [r.split(" ") for r in records[::HOLDOUT_EVERY]]
    assert not set(train) & set(held)
    assert len(train) + len(held) == 400


def test_kjv_split_sizes() -> None:
    train, held = load_texts("kjv", None, "text")
    assert len(train) + len(held) == 31_103
    assert len(held) == math.ceil(31_103 / HOLDOUT_EVERY)


def test_eval_stream_is_exactly_the_held_out_records(corpus: str) -> None:
    w = small(corpus)
    _, held = load_texts(corpus, None, "body")
    eot = w.tokenizer.token_to_id("<|endoftext|>")
    docs = np.split(w.eval_ids, np.flatnonzero(w.eval_ids == eot) + 1)[:-1]
    assert [w.tokenizer.decode(d.tolist()) for d in docs] == held


def test_tokenizer_and_streams_are_trained_once_then_read_from_the_cache(
    corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = text.train_bpe
    monkeypatch.setattr(text, "train_bpe", lambda t, v: calls.append(v) or real(t, v))
    first = small(corpus)
    assert calls == [300]

    def refuse(*_: object) -> None:
        raise AssertionError("the cached tokenizer was retrained")

    monkeypatch.setattr(text, "train_bpe", refuse)
    monkeypatch.setattr(text, "encode_stream", refuse)
    again = small(corpus)
    assert again.tokenizer.to_str() == first.tokenizer.to_str()
    assert np.array_equal(again.train_ids, first.train_ids)
    assert np.array_equal(again.eval_ids, first.eval_ids)
    assert first.train_ids.dtype == np.uint16  # a vocabulary under 65,536 fits in two bytes


def test_a_different_vocabulary_is_a_different_cache_entry(
    corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small(corpus)
    calls: list[int] = []
    real = text.train_bpe
    monkeypatch.setattr(text, "train_bpe", lambda t, v: calls.append(v) or real(t, v))
    assert small(corpus, vocab_size=320).tokenizer.get_vocab_size() <= 320
    assert calls == [320]


CONCURRENT = textwrap.dedent(
    """
    import hashlib, sys, time
    from pathlib import Path
    from plugins.workloads import text

    real = text.train_bpe

    def announce(texts, vocab):
        print("TRAINED", flush=True)
        time.sleep(0.5)  # hold the lock a while so the other process surely waits on it
        return real(texts, vocab)

    text.train_bpe = announce
    ready = Path(sys.argv[2])
    (ready / sys.argv[3]).touch()
    while len(list(ready.iterdir())) < 2:
        time.sleep(0.01)
    w = text.CorpusLM(dataset=sys.argv[1], text_field="body", vocab_size=300, seq_len=8,
                      batch_size=2)
    print("DIGEST", hashlib.sha256(w.tokenizer.to_str().encode()).hexdigest(), len(w.train_ids))
    """
)


def test_concurrent_processes_train_the_tokenizer_once(corpus: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "METHODBENCH_CACHE": str(tmp_path / "shared-cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, corpus, str(ready), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    assert lines.count("TRAINED") == 1
    digests = {line for line in lines if line.startswith("DIGEST")}
    assert len(digests) == 1


def test_bpe_round_trips_real_verses_and_any_unicode() -> None:
    w = CorpusLM(**KJV_TINY)
    with open(asset_path("kjv")) as fh:
        verses = [json.loads(next(fh))["text"] for _ in range(200)]
    for verse in [*verses, "naïve café — 東京 🙂\ttabs  and  spaces\n"]:
        assert w.tokenizer.decode(w.tokenizer.encode(verse).ids) == verse
    # Merges were learnt: bytes alone would be over one token per byte (0.42 at vocab 512).
    train_bytes = sum(len(v.encode()) for v in load_texts("kjv", None, "text")[0])
    assert len(w.train_ids) < 0.6 * train_bytes


def test_train_batches_are_seeded_windows_of_the_train_stream(corpus: str) -> None:
    w = small(corpus)
    first = [next(w.train_batches(s, CPU)) for s in (0, 0, 1)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
    stream = w.train_batches(3, CPU)
    batches = [next(stream) for _ in range(5)]
    assert all(b.shape == (2, 9) and b.dtype == torch.long for b in batches)
    assert len({tuple(b.flatten().tolist()) for b in batches}) == 5  # an endless fresh stream
    windows = np.lib.stride_tricks.sliding_window_view(w.train_ids.astype(np.int64), 9)
    for row in torch.cat(batches).numpy():
        assert (windows == row).all(axis=1).any(), "every row is a window of the train stream"


def test_eval_windows_are_fixed_non_overlapping_and_spread_over_the_stream(corpus: str) -> None:
    w = small(corpus)
    a, b = w.eval_windows(CPU), w.eval_windows(CPU)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    span = 9
    w.eval_ids = np.arange(len(w.eval_ids))  # every token unique: a window names its place
    starts = [
        (int(row[0]) // span, split, int(row[0]) % span)
        for split in ("test", "val")
        for row in torch.cat(w.eval_windows(CPU, split))
    ]
    assert all(offset == 0 for _, _, offset in starts)  # aligned, non-overlapping windows
    indices = sorted(starts)
    assert len({i for i, _, _ in indices}) == len(indices)  # test and validation disjoint
    assert [s for _, s, _ in indices][:4] == ["test", "val", "test", "val"]  # interleaved
    assert indices[0][0] == 0 and indices[-1][0] == len(w.eval_ids) // span - 1  # both ends


def test_eval_batches_shrink_to_what_the_held_out_stream_holds(corpus: str) -> None:
    w = small(corpus, eval_batches=10_000)
    assert 1 <= w.eval_batches <= len(w.eval_ids) // (2 * 9)


def test_evaluate_reports_nats_and_perplexity(corpus: str) -> None:
    w = small(corpus, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2)
    model = w.build_model(0, CPU)
    model.train()
    figures = w.evaluate(model, CPU)
    # A random init predicts near-uniformly: about ln(vocab) nats per token.
    assert abs(figures["eval_loss"] - math.log(w.tokenizer.get_vocab_size())) < 1.0
    assert figures["perplexity"] == pytest.approx(math.exp(figures["eval_loss"]))
    assert model.training, "evaluate restores the training mode"
    batch = next(w.train_batches(0, CPU))
    assert w.items_in(batch) == 2 * 8
    with torch.no_grad():
        reference = model(input_ids=batch, labels=batch).loss  # transformers' shifted loss
        assert float(w.loss(model, batch)) == pytest.approx(float(reference), rel=1e-5)


def test_models_are_seeded() -> None:
    w = CorpusLM(**KJV_TINY, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2)
    a, b, c = (w.build_model(s, CPU) for s in (0, 0, 1))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_presets_give_defaults_and_explicit_options_win() -> None:
    w = CorpusLM(preset="llama60m", vocab_size=512)  # the tokenizer cached by the KJV tests
    cfg = w.model_config()
    got = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
        cfg.num_hidden_layers,
        w.seq_len,
    )
    assert got == (512, 1376, 8, 8, 256)  # GaLore's LLaMA-60M (arXiv:2403.03507)
    assert cfg.vocab_size == w.tokenizer.get_vocab_size() <= 512
    assert cfg.max_position_embeddings >= 256
    tiny = CorpusLM(**KJV_TINY, hidden_size=48)
    assert tiny.model_config().hidden_size == 48
    assert tiny.model_config().num_hidden_layers == PRESETS["tiny"]["num_layers"]
    with pytest.raises(ValueError, match="unknown preset"):
        CorpusLM(preset="llama7b")


def test_tiny_llama_is_registered_as_an_optimizer_workload() -> None:
    spec = registry().workload("optimizer", "tiny-llama")
    w = spec.load()(**{**dict(spec.defaults), **KJV_TINY})
    assert isinstance(w, OptimizerWorkload)
    assert w.items_unit == "tokens" and w.target_loss == spec.defaults["target_loss"]


def test_validation_and_test_windows_are_disjoint_and_the_loss_has_a_stderr() -> None:
    wl = CorpusLM(seq_len=32, batch_size=4, eval_batches=3)
    cpu = torch.device("cpu")
    test = {tuple(row.tolist()) for b in wl.eval_windows(cpu, "test") for row in b}
    val = {tuple(row.tolist()) for b in wl.eval_windows(cpu, "val") for row in b}
    assert len(test) == len(val) == 12 and not test & val
    with pytest.raises(ValueError, match="split"):
        wl.eval_windows(cpu, "train")
    model = wl.build_model(0, cpu)
    figures = wl.evaluate(model, cpu, split="val")
    # An independent computation: the mean over windows of each window's mean token loss.
    losses = []
    with torch.no_grad():
        for b in wl.eval_windows(cpu, "val"):
            for row in b:
                logits = model(input_ids=row[None, :-1]).logits[0]
                losses.append(float(torch.nn.functional.cross_entropy(logits, row[1:])))
    assert figures["eval_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert figures["eval_loss_stderr"] == pytest.approx(
        np.std(losses, ddof=1) / math.sqrt(len(losses)), rel=1e-4
    )
    assert figures["eval_items"] == 12
