"""Provenance recorded beside every artefact (converted models, reference bundles, reports)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("mlx", "mlx-diar", "numpy", "scipy", "torch", "pyannote.audio")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's version and the installed version of each of `packages` ("not installed" when absent)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
