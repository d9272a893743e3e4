"""The environment a stage runs in and the software a result was produced with.

`quiet_environment`: the process environment every stage (and the warm interpreter) sets first.
`environment`: the installed versions of the packages that decide training and scoring, and the
digest of the lock file they were installed from. Recorded in every MLflow run and stated in the
report, so that two results can be compared knowing whether they came from the same environment
(a blind and a seeing student once came from the same code and two installs a day apart)."""
from __future__ import annotations

import hashlib
import os
import platform
import warnings
from importlib import metadata
from pathlib import Path


def quiet_environment() -> None:
    """No hub access, no analytics; the defaults the README promises."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` each time it wraps a
    # model (PeftModel.__init__), so every tune and evaluate warned about code that is not ours;
    # filtered by its exact text so that any other deprecation still shows
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


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
