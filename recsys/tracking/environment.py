"""Run tags that say where a result came from: versions, git commit, seed, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["environment_tags"]

_PACKAGES = ("recsys", "torch", "lightning", "numpy", "scipy", "polars", "mlflow", "optuna")


def environment_tags() -> dict[str, str]:
    """``version.<package>``, ``version.python``, ``mlflow.source.git.commit`` and ``git.dirty``."""
    tags = {"version.python": platform.python_version()}
    for package in _PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    source = Path(__file__).resolve().parents[2]
    commit = _git(source, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.dirty"] = str(bool(_git(source, "status", "--porcelain", "--untracked-files=no")))
    return tags


def _git(folder: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
