"""Shared test set-up: an isolated asset/model cache per session and a hub-free environment."""

from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach a model or data hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A run that emits a metric its kind does not declare fails in the project's own tests
# (outside them it stays ok, the figure set aside): set for the session, so the workers
# the executors start inherit it.
os.environ.setdefault("METHODBENCH_STRICT_METRICS", "1")


@pytest.fixture(scope="session", autouse=True)
def methodbench_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Fetched assets, tokenizers and trained reference models for this test session.

    ``METHODBENCH_TEST_CACHE`` points the tests at a persistent cache to save the one-off
    training cost when iterating locally; CI always starts empty.
    """
    path = os.environ.get("METHODBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["METHODBENCH_CACHE"] = path
    return path


EXAMPLE_SOURCE = os.path.join(os.path.dirname(__file__), "thirdparty", "methodbench-example")


@pytest.fixture
def example_dist(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """The example third-party plugin as an installed distribution on sys.path.

    A dist-info with METADATA and entry_points.txt is what ``pip install`` leaves behind;
    importlib.metadata (and so the host) finds it exactly as it finds an installed package.
    Workers started as subprocesses see it through PYTHONPATH.
    """
    import importlib
    import shutil
    import sys

    site = tmp_path_factory.mktemp("site")
    shutil.copytree(
        os.path.join(EXAMPLE_SOURCE, "methodbench_example"), site / "methodbench_example"
    )
    info = site / "methodbench_example-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: methodbench-example\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text("[methodbench]\nexample = methodbench_example\n")
    (info / "top_level.txt").write_text("methodbench_example\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    )
    importlib.invalidate_caches()
    yield str(site)
    sys.modules.pop("methodbench_example", None)


BUILTIN_PROTOCOLS = ("optimizer", "compressor", "security_split", "detector")


@pytest.fixture(autouse=True)
def protocols_emit_only_declared_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """A protocol a test calls directly (``detector.run(ctx)``) is held to its kind's
    metric declarations as the runner holds every run in strict mode: a protocol that
    starts emitting an undeclared figure fails the tests of its own kind, not only the
    ones that go through an executor."""
    import importlib
    import sys

    for kind in BUILTIN_PROTOCOLS:
        name = f"benchmark.protocols.{kind}"
        if name not in sys.modules:
            continue  # a test that never imported it cannot call it
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "run", _declared_only(module.run))


def _declared_only(run):  # type: ignore[no-untyped-def]
    def checked(ctx):  # type: ignore[no-untyped-def]
        result = run(ctx)
        kind = ctx.registry.kind(ctx.spec.kind)
        attacks = tuple(ctx.spec.attacks) or tuple(ctx.registry.attacks)
        undeclared = kind.undeclared(result.metrics, ctx.workload, placeholders={"attack": attacks})
        assert not undeclared, (
            f"the {ctx.spec.kind} protocol emitted metrics its kind does not declare: {undeclared}"
        )
        return result

    return checked
