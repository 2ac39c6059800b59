"""The multiple-descent autoencoder study: Rahimi, Refael, Tirer & Lindenbaum, "Unveiling
Multiple Descents in Unsupervised Autoencoders", TMLR 2025, arXiv:2406.11703.

Every registration names its factory as ``module:attribute``, so listing and validating a
suite imports none of the implementations. What is built where:

- ``plugins.autoencoders.core``: the autoencoder, the data model, the PCA reference;
- ``plugins.autoencoders.workload``: ``ae-synthetic`` and ``ae-mnist`` (optimizer kind:
  the method trains the autoencoder; eval_loss = test reconstruction MSE);
- ``plugins.autoencoders.detector``: the ``ae-recon`` detector and the
  ``ae-anomaly-synthetic`` detector workload.

docs/methods/descent-ae.md has the data model, the defaults and the departures.
"""

from benchmark import hookimpl
from benchmark.kinds import MethodSpec, WorkloadSpec

PAPER = "arXiv:2406.11703"


@hookimpl
def methodbench_register_workloads(register):  # type: ignore[no-untyped-def]
    register(
        WorkloadSpec(
            kind="optimizer",
            name="ae-synthetic",
            factory="plugins.autoencoders.workload:SyntheticAE",
            description=(
                "autoencoder on a latent_dim subspace of R^input_dim (unit-variance features), "
                "partial sample/feature noise on the training set, clean (optionally turned) "
                "test subspace; eval_loss = test reconstruction MSE"
            ),
        )
    )
    register(
        WorkloadSpec(
            kind="optimizer",
            name="ae-mnist",
            factory="plugins.autoencoders.workload:MnistAE",
            description=(
                "autoencoder on MNIST-5k (784 pixels in [0, 1]; up to 4,000 training digits, "
                "750 test, 250 validation), partial sample/feature noise, test digits turned "
                "by domain_shift x 90 degrees; eval_loss = test reconstruction MSE"
            ),
        )
    )
    register(
        WorkloadSpec(
            kind="detector",
            name="ae-anomaly-synthetic",
            factory="plugins.autoencoders.detector:AnomalySynthetic",
            description=(
                "normal samples on a subspace, anomalies on a subspace turned by "
                "anomaly_angle x 90 degrees; contamination: share of anomalies in the fit data; "
                "sample_noise: share of fit samples with extra noise"
            ),
        )
    )


@hookimpl
def methodbench_register_methods(register):  # type: ignore[no-untyped-def]
    register(
        MethodSpec(
            kind="detector",
            name="ae-recon",
            factory="plugins.autoencoders.detector:ReconstructionDetector",
            paper=PAPER,
            description=(
                "autoencoder fitted on the in-distribution data; score = reconstruction MSE "
                "(ignores the workload's classifier)"
            ),
        )
    )
