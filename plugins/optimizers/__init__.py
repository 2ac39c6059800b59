"""Built-in optimizers.

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses.
"""

from benchmark import hookimpl
from benchmark.kinds import MethodSpec


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    # plugins.optimizers.adamw
    register(
        MethodSpec(
            kind="optimizer",
            name="adamw",
            factory="plugins.optimizers.adamw:build_adamw",
            paper="arXiv:1711.05101",
            description="AdamW (torch), the full-rank reference",
        )
    )
    # plugins.optimizers.flora
    register(
        MethodSpec(
            kind="optimizer",
            name="flora",
            factory="plugins.optimizers.flora:build_flora",
            paper="arXiv:2402.03293",
            description="Adafactor with momentum compressed by seeded random projections",
        )
    )
    # plugins.optimizers.adarankgrad
    register(
        MethodSpec(
            kind="optimizer",
            name="adarankgrad",
            factory="plugins.optimizers.adarankgrad:build_adarankgrad",
            paper="arXiv:2410.17881",
            description=(
                "adaptive-rank subspace by randomized range finder, refreshed when the projected "
                "gradient's windowed RMS falls to tol of its first window's, moments rotated"
            ),
        )
    )
    # plugins.optimizers.sumo
    register(
        MethodSpec(
            kind="optimizer",
            name="sumo",
            factory="plugins.optimizers.sumo:build_sumo",
            paper="arXiv:2505.24749",
            description="moment orthogonalised by exact SVD in the GaLore subspace",
        )
    )
    # plugins.optimizers.plumage
    register(
        MethodSpec(
            kind="optimizer",
            name="plumage",
            factory="plugins.optimizers.plumage:build_plumage",
            paper="arXiv:2505.18313",
            description=(
                "GaLore with sampled unbiased minimum-variance subspaces and moment realignment"
            ),
        )
    )
    # plugins.optimizers.muon
    register(
        MethodSpec(
            kind="optimizer",
            name="muon",
            factory="plugins.optimizers.muon:build_muon",
            paper="kellerjordan.github.io/posts/muon (2024)",
            description="momentum orthogonalised by 5 Newton-Schulz steps on hidden 2-D weights",
        )
    )
    # plugins.optimizers.galore
    register(
        MethodSpec(
            kind="optimizer",
            name="galore",
            factory="plugins.optimizers.galore:build_galore",
            paper="arXiv:2403.03507",
            description="Adam in the gradient's SVD subspace, refreshed every update_gap steps",
        )
    )
    # plugins.optimizers.adafactor
    register(
        MethodSpec(
            kind="optimizer",
            name="adafactor",
            factory="plugins.optimizers.adafactor:build_adafactor",
            paper="arXiv:1804.04235",
            description="Adafactor (transformers), factored second moment",
        )
    )
    # plugins.optimizers.lorenza
    register(
        MethodSpec(
            kind="optimizer",
            name="lorenza",
            factory="plugins.optimizers.lorenza:build_lorenza",
            paper="arXiv:2502.19571",
            description=(
                "low-rank Adam on a SAM gradient whose ascent direction is estimated by zeroth-"
                "order probes in the gradient's subspace"
            ),
        )
    )
