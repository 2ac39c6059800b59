"""Built-in security splits and the attacks on them.

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses.
"""

from benchmark import hookimpl
from benchmark.kinds import AttackSpec, MethodSpec


@hookimpl
def methodbench_register_attacks(register):  # type: ignore[no-untyped-def]
    # plugins.security.attacks
    register(
        AttackSpec(
            name="finetune",
            paper="arXiv:2407.10886",
            factory="plugins.security.attacks:FineTuneAttack",
            description="fine-tune the stolen untrusted part with 64 labelled samples",
        )
    )
    register(
        AttackSpec(
            name="finetune-1024",
            paper="arXiv:2407.10886",
            factory="plugins.security.attacks:FineTuneAttack",
            defaults={"n_samples": 1024, "steps": 300},
            description="fine-tune the stolen untrusted part with 1024 labelled samples",
        )
    )
    register(
        AttackSpec(
            name="lowrank",
            paper="arXiv:2407.10886",
            factory="plugins.security.attacks:SubspaceAttack",
            description=(
                "read the removed subspace off the residual's spectrum, fit its map on 64 samples"
            ),
        )
    )
    register(
        AttackSpec(
            name="lowrank-1024",
            paper="arXiv:2407.10886",
            factory="plugins.security.attacks:SubspaceAttack",
            defaults={"n_samples": 1024, "steps": 300},
            description=(
                "read the removed subspace off the residual's spectrum, fit its map on 1024 samples"
            ),
        )
    )
    register(
        AttackSpec(
            name="traffic-64",
            paper="arXiv:2407.10886",
            factory="plugins.security.traffic:TrafficAttack",
            description=(
                "least squares on the clear-text traffic of 64 served inputs, then fine-tune on 64"
            ),
        )
    )
    register(
        AttackSpec(
            name="traffic-1024",
            paper="arXiv:2407.10886",
            factory="plugins.security.traffic:TrafficAttack",
            defaults={"n_served": 1024},
            description=(
                "least squares on the clear-text traffic of 1024 served inputs, then fine-tune on"
                " 64"
            ),
        )
    )
    register(
        AttackSpec(
            name="untrusted-only",
            factory="plugins.security.attacks:_untrusted_only",
            description="the untrusted part alone, missing parts at random init",
        )
    )
    register(
        AttackSpec(
            name="untrusted-random",
            factory="plugins.security.attacks:RandomFillAttack",
            description="the untrusted part alone, what is missing filled at random",
        )
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    # plugins.security.slip
    register(
        MethodSpec(
            kind="security_split",
            name="slip",
            factory="plugins.security.slip:SLIP",
            paper="arXiv:2407.10886",
            description="top-k SVD components trusted, residual untrusted, masked activations",
        )
    )
    # plugins.security.random_mask
    register(
        MethodSpec(
            kind="security_split",
            name="random-mask",
            factory="plugins.security.random_mask:RandomMask",
            description="a random fraction of each weight's entries trusted, the rest untrusted",
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="magnitude-mask",
            factory="plugins.security.random_mask:RandomMask",
            defaults={"trusted_fraction": 0.01, "criterion": "magnitude"},
            paper="arXiv:2310.07152",
            description=(
                "the largest-magnitude 1% of each weight's entries trusted (the 'Magnitude' TEE "
                "partition benchmarked by Zhang et al., S&P 2024)"
            ),
        )
    )
    # plugins.security.baselines
    register(
        MethodSpec(
            kind="security_split",
            name="no-split",
            factory="plugins.security.baselines:NoSplit",
            description="everything untrusted: the exposed bound",
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="all-trusted",
            factory="plugins.security.baselines:AllTrusted",
            description="everything trusted: the secure, expensive bound",
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="shield-shallow",
            factory="plugins.security.baselines:ShieldUnits",
            defaults={"position": "shallow"},
            paper="arXiv:2310.07152",
            description=(
                "the shallow unit(s) of the model trusted (Serdab-style TEE partition, as "
                "benchmarked by Zhang et al., S&P 2024)"
            ),
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="shield-deep",
            factory="plugins.security.baselines:ShieldUnits",
            paper="arXiv:2310.07152",
            description=(
                "the deep unit(s) of the model trusted (DarkneTZ-style TEE partition, as "
                "benchmarked by Zhang et al., S&P 2024)"
            ),
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="shield-intermediate",
            factory="plugins.security.baselines:ShieldUnits",
            defaults={"position": "intermediate"},
            paper="arXiv:2310.07152",
            description=(
                "the intermediate unit(s) of the model trusted (SOTER's shielded middle-style TEE"
                " partition, as benchmarked by Zhang et al., S&P 2024)"
            ),
        )
    )
    register(
        MethodSpec(
            kind="security_split",
            name="layer-split",
            factory="plugins.security.baselines:LayerSplit",
            description="first and last parameterised layers trusted",
        )
    )
