"""Shared test set-up: an isolated asset/model cache per session and a hub-free environment."""

from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach a model or data hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def methodbench_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Fetched assets, tokenizers and trained reference models for this test session.

    ``METHODBENCH_TEST_CACHE`` points the tests at a persistent cache to save the one-off
    training cost when iterating locally; CI always starts empty.
    """
    path = os.environ.get("METHODBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["METHODBENCH_CACHE"] = path
    return path
