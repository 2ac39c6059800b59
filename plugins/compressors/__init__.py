"""Built-in compressors.

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses.
"""

from benchmark import hookimpl
from benchmark.kinds import MethodSpec


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    # plugins.compressors.wgsef
    register(
        MethodSpec(
            kind="compressor",
            name="wgsef",
            factory="plugins.compressors.wgsef:WGSEF",
            paper="arXiv:2212.12921",
            description=(
                "proximal gradient with the weighted group sparse envelope (k groups kept per "
                "layer); prox: false is the no-envelope ablation"
            ),
        )
    )
    # plugins.compressors.quantize
    register(
        MethodSpec(
            kind="compressor",
            name="int8-ptq",
            factory="plugins.compressors.quantize:PostTrainingQuantization",
            paper="arXiv:1712.05877",
            description=(
                "static post-training quantization (per-channel weights, per-tensor inputs) "
                "calibrated on real data; integer storage, integer arithmetic simulated in float "
                "(bytes real, speed not claimed)"
            ),
        )
    )
    register(
        MethodSpec(
            kind="compressor",
            name="knowledge-within",
            factory="plugins.compressors.quantize:PostTrainingQuantization",
            defaults={"calibration": "bn-stats"},
            paper="arXiv:1912.01274",
            description=(
                "data-free quantization calibrated on inputs synthesised from BatchNorm "
                "statistics (or Gaussian noise); integer storage, integer arithmetic simulated in"
                " float (bytes real, speed not claimed)"
            ),
        )
    )
    # plugins.compressors.finegates
    register(
        MethodSpec(
            kind="compressor",
            name="finegates",
            factory="plugins.compressors.finegates:FineGates",
            paper="arXiv:2412.12951",
            description="stochastic gates on rows/columns of frozen linears; closed ones removed",
        )
    )
    # plugins.compressors.magnitude
    register(
        MethodSpec(
            kind="compressor",
            name="magnitude-prune",
            factory="plugins.compressors.magnitude:MagnitudePrune",
            paper="arXiv:1506.02626",
            description="global unstructured magnitude pruning (masked-dense)",
        )
    )
    # plugins.compressors.structured
    register(
        MethodSpec(
            kind="compressor",
            name="structured-prune",
            factory="plugins.compressors.structured:StructuredPrune",
            paper="arXiv:1608.08710",
            description=(
                "structured pruning of hidden neurons (L1, weight x activation or random), "
                "physically removed"
            ),
        )
    )
