"""Where a result came from: code revision, package versions, host."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("snnbench", "torch", "torchvision", "timm", "ray", "mlflow", "pycocotools", "numpy")


@functools.lru_cache(maxsize=1)
def git_revision() -> dict[str, str | bool | None]:
    """``{"sha": ..., "dirty": ...}`` of the checkout holding this package (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=5).stdout.strip()) if sha else None
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"sha": sha, "dirty": dirty}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def host_info() -> dict[str, str]:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
    return info
