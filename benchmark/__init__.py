"""methodbench: a plugin-based benchmark suite for methods that make networks cheaper or safer.

Plugins import ``hookimpl`` from here and the spec classes from ``benchmark.kinds``.
"""

import pluggy

PROJECT_NAME = "methodbench"
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
