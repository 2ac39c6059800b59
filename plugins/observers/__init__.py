"""Observers shipped with methodbench: plugins that log runs elsewhere (MLflow).

Unlike the method packages beside it, this package implements no hook itself, so discovery
registers nothing here and no run is logged anywhere unless the user asks: an observer is
a module ``plugins.observers.<name>_observer``, loaded with ``bench run --observe <name>``
(the same as ``--plugin plugins.observers.<name>_observer``) or, from Python,
``run_suite(..., plugins=["plugins.observers.<name>_observer"])``. Its optional
dependencies stay optional: the module refuses to load, with the pip command, when they are
missing.
"""
