"""The software a result was produced with: the installed versions of the packages that decide
training and scoring, and the digest of the lock file they were installed from.

Recorded in every MLflow run and stated in the report, so that two results can be compared
knowing whether they came from the same environment (a blind and a seeing student once came
from the same code and two installs a day apart)."""
from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

KEY_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "numpy", "pillow", "safetensors",
                "mlflow", "dvc", "prefect", "great_expectations", "pydantic")
LOCK_FILE = "requirements.lock"


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lock_digest(root: str | Path = ".") -> str:
    """The first 12 hex digits of requirements.lock's sha256, or "none" without one."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return "none"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def environment(root: str | Path = ".") -> dict[str, str]:
    """Python, the key packages and the lock file's digest, as flat string values."""
    return {"python": platform.python_version(), "lock": lock_digest(root), **package_versions()}
