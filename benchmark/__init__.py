"""methodbench: a plugin-based benchmark suite for methods that make networks cheaper or safer.

Plugins import ``hookimpl`` from here and the spec classes from ``benchmark.kinds``.
"""

import pluggy

PROJECT_NAME = "methodbench"
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "load_results", "run_suite"]


def __getattr__(name: str) -> object:
    """``benchmark.run_suite`` and ``benchmark.load_results`` (``benchmark.api``), imported
    on first use so that importing the package stays light."""
    if name in ("run_suite", "load_results"):
        from benchmark import api

        return getattr(api, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
