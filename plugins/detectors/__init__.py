"""Built-in detectors.

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses.
"""

from benchmark import hookimpl
from benchmark.kinds import MethodSpec, WorkloadSpec


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    # plugins.detectors.mahalanobis
    register(
        MethodSpec(
            kind="detector",
            name="mahalanobis",
            factory="plugins.detectors.mahalanobis:Mahalanobis",
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
            paper="arXiv:1610.02136",
            description="maximum softmax probability",
        )
    )
    register(
        MethodSpec(
            kind="detector",
            name="energy",
            factory="plugins.detectors.baselines:Energy",
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
            paper="arXiv:2111.12797",
            description="energy after clipping penultimate activations at the ID 90th percentile",
        )
    )


@hookimpl
def methodbench_register_workloads(register):  # type: ignore[no-untyped-def]
    # The workloads only one detector uses: FLAME's few-shot pair, the audit test's simulation.
    register(
        WorkloadSpec(
            kind="detector",
            name="fewshot-pair",
            factory="plugins.detectors.fewshot_pair:FewShotPair",
            description=(
                "MNIST-5k proposals of a CNN trained with 4 and 9 merged; targets 4, false "
                "positives 9 (+ other), labels through a counting oracle"
            ),
        )
    )
    register(
        WorkloadSpec(
            kind="detector",
            name="audit-sim",
            factory="plugins.detectors.audit_sim:AuditWorkload",
            description=(
                "simulated users under a fair vs a belief-shifting filtering policy; one input = "
                "one audit dataset of n_samples decisions"
            ),
        )
    )
