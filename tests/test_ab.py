"""A/B on one machine: a throwaway git repository holds a tiny optimizer plugin; a commit
that makes its step 20 ms slower is reported as a timing regression against the commit
before, and the same code against itself is not."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmark.cli import main

PLUGIN = """\
import time

import torch

from benchmark import hookimpl
from benchmark.kinds import MethodSpec


class Stepper(torch.optim.SGD):
    def step(self, closure=None):
        time.sleep({delay})
        return super().step(closure)


def build(model, *, lr):
    return Stepper(model.parameters(), lr=lr)


@hookimpl
def methodbench_register_methods(register):
    register(MethodSpec(kind="optimizer", name="ab-sgd", factory=build, defaults={{"lr": 0.01}}))
"""

SUITE = """\
name: ab
seeds: [0, 1, 2]
experiments:
  - kind: optimizer
    workloads: [least-squares]
    methods: [ab-sgd]
    budget: {steps: 30}
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.mark.slow
def test_a_slower_commit_is_a_timing_regression_and_the_same_code_is_not(
    tmp_path: Path,
    example_dist: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "suite.yaml").write_text(SUITE)
    (repo / "abplug.py").write_text(PLUGIN.format(delay=0.0))
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "fast")
    (repo / "abplug.py").write_text(PLUGIN.format(delay=0.02))
    _git(repo, "commit", "-q", "-am", "slow")
    monkeypatch.chdir(repo)
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([example_dist, str(repo)]))
    common = ["--plugin", "abplug", "--fail-on", "step_time:+20%", "--json"]

    code = main(["compare", "--against", "HEAD~1", "suite.yaml", *common])
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("{") :])["rows"]
    step = next(r for r in rows if r["metric"] == "step_time")
    assert code == 1 and step["verdict"] == "regressed", step
    assert step["new"] > step["old"] + 0.015  # the 20 ms sleep, measured on both sides now

    code = main(["compare", "--against", "HEAD", "suite.yaml", *common])
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("{") :])["rows"]
    step = next(r for r in rows if r["metric"] == "step_time")
    assert code == 0 and step["verdict"] in ("unchanged", "inconclusive"), step
