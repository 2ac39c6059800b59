"""Built-in detectors.

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses.
"""

from benchmark import hookimpl
from benchmark.kinds import MethodSpec


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    # plugins.detectors.mahalanobis
    register(
        MethodSpec(
            kind="detector",
            name="mahalanobis",
            factory="plugins.detectors.mahalanobis:Mahalanobis",
            defaults={},
            paper="arXiv:1807.03888",
            description="min class-conditional Mahalanobis distance, tied covariance",
        )
    )
    # plugins.detectors.flame
    register(
        MethodSpec(
            kind="detector",
            name="flame",
            factory="plugins.detectors.flame:Flame",
            defaults={
                "budget": 30,
                "selection": "flame",
                "pca_dims": 4,
                "band": 0.9,
                "classifier": "svm",
                "smote": True,
                "uncertainty_seed": 4,
                "uncertainty_step": 2,
            },
            paper="arXiv:2510.17670",
            description=(
                "few-shot refinement: marginal band (PCA+GMM), k-means diverse queries, RBF-SVM; "
                "selection flame|random|uncertainty"
            ),
        )
    )
    # plugins.detectors.odin
    register(
        MethodSpec(
            kind="detector",
            name="odin",
            factory="plugins.detectors.odin:ODIN",
            defaults={"temperature": 1000.0, "epsilon": 0.0014},
            paper="arXiv:1706.02690",
            description="temperature-scaled softmax after a confidence-raising input step",
        )
    )
    # plugins.detectors.knn
    register(
        MethodSpec(
            kind="detector",
            name="knn",
            factory="plugins.detectors.knn:KNN",
            defaults={"k": 50, "scale_k_to": 50000},
            paper="arXiv:2204.06507",
            description="k-th nearest-neighbour distance of L2-normalised penultimate features",
        )
    )
    # plugins.detectors.baselines
    register(
        MethodSpec(
            kind="detector",
            name="msp",
            factory="plugins.detectors.baselines:MaxSoftmax",
            defaults={},
            paper="arXiv:1610.02136",
            description="maximum softmax probability",
        )
    )
    register(
        MethodSpec(
            kind="detector",
            name="energy",
            factory="plugins.detectors.baselines:Energy",
            defaults={"temperature": 1.0},
            paper="arXiv:2010.03759",
            description="free energy of the logits",
        )
    )
    # plugins.detectors.audit
    register(
        MethodSpec(
            kind="detector",
            name="audit-test",
            factory="plugins.detectors.audit:AuditTest",
            defaults={"alpha": 0.05, "randomized": True},
            paper="arXiv:2209.05550",
            description=(
                "exact one-sided binomial audit of a filtering policy's deflection beyond the "
                "allowed threshold (gives p-values)"
            ),
        )
    )
    # plugins.detectors.statistical
    register(
        MethodSpec(
            kind="detector",
            name="statistical-ood",
            factory="plugins.detectors.statistical:StatisticalOOD",
            defaults={
                "reduction": "mean_max",
                "layer_combine": "simes",
                "alpha": 0.05,
                "calibration_fraction": 0.5,
                "class_conditional": True,
                "min_class_samples": 20,
                "layer_null_fraction": 0.5,
            },
            paper="arXiv:2102.12967",
            description=(
                "per-channel empirical p-values, Simes within / Fisher across layers, calibrated "
                "on held-out ID data (Type-I error control)"
            ),
        )
    )
    # plugins.detectors.react
    register(
        MethodSpec(
            kind="detector",
            name="react",
            factory="plugins.detectors.react:ReAct",
            defaults={"percentile": 90.0},
            paper="arXiv:2111.12797",
            description="energy after clipping penultimate activations at the ID 90th percentile",
        )
    )
