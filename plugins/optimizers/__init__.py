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
            defaults={"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-08, "weight_decay": 0.0},
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
            defaults={
                "lr": 0.001,
                "rank": 8,
                "kappa": 1000,
                "beta1": 0.9,
                "weight_decay": 0.0,
                "scale_parameter": True,
                "seed": 0,
            },
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
            defaults={
                "lr": 0.01,
                "max_rank": 128,
                "eta": 0.9,
                "tol": 0.5,
                "min_gap": 10,
                "max_gap": 200,
                "scale": 0.25,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-08,
                "weight_decay": 0.0,
                "seed": 0,
            },
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
            defaults={
                "lr": 0.001,
                "rank": 8,
                "update_gap": 200,
                "alpha": 4.0,
                "gamma": 1.1,
                "momentum": 0.95,
                "nesterov": True,
                "weight_decay": 0.01,
                "perp_scale": 1.0,
                "orthogonalizer": "svd",
            },
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
            defaults={
                "lr": 0.01,
                "rank": 128,
                "update_gap": 200,
                "scale": 0.25,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-06,
                "weight_decay": 0.0,
                "seed": 0,
            },
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
            defaults={
                "lr": 0.02,
                "momentum": 0.95,
                "nesterov": True,
                "weight_decay": 0.0,
                "ns_steps": 5,
                "ns_dtype": "auto",
                "adam_lr": 0.0003,
            },
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
            defaults={
                "lr": 0.01,
                "rank": 128,
                "update_gap": 200,
                "scale": 0.25,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-06,
                "weight_decay": 0.0,
            },
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
            defaults={"lr": 0.001, "beta1": None, "weight_decay": 0.0, "clip_threshold": 1.0},
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
            defaults={
                "lr": 0.01,
                "rank": 128,
                "update_gap": 200,
                "rho": 0.05,
                "mu": 0.001,
                "probes": 1,
                "plus": False,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-08,
                "weight_decay": 0.0,
                "seed": 0,
            },
            paper="arXiv:2502.19571",
            description=(
                "low-rank Adam on a SAM gradient whose ascent direction is estimated by zeroth-"
                "order probes in the gradient's subspace"
            ),
        )
    )
