"""Where the harness keeps and finds its inputs: cache root, fixture recipe versions, the bundled sample.

A leaf module: it imports nothing else of the harness, so every harness module can use it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mlx_diar.errors import MlxDiarError

FIXTURE_VERSION = 1  # layout of the offline fixture pipeline; part of its directory name
PLDA_RECIPE_VERSION = 1  # harness.plda's estimation recipe; a fixture made by another one is rebuilt


class FixtureError(MlxDiarError, RuntimeError):
    """The fixture pipeline or the bundled sample cannot be built, found or verified."""


def cache_root() -> Path:
    """`$MLX_DIAR_CACHE`, else `$XDG_CACHE_HOME/mlx-diar`, else `~/.cache/mlx-diar`; FixtureError when
    it exists and is not a directory."""
    if os.environ.get("MLX_DIAR_CACHE"):
        root, source = Path(os.environ["MLX_DIAR_CACHE"]), "MLX_DIAR_CACHE="
    else:
        root, source = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlx-diar", ""
    if root.exists() and not root.is_dir():
        raise FixtureError(f"{source}{root}: the cache is not a directory; set MLX_DIAR_CACHE to a directory")
    return root


def fixture_location() -> Path:
    """Where the offline fixture pipeline lives (`harness.fixtures.fixture_dir` builds and verifies it)."""
    return cache_root() / f"fixture-pipeline-v{FIXTURE_VERSION}"


def sample_audio() -> tuple[Path, Path]:
    """pyannote.audio's bundled 30 s two-speaker recording and its reference RTTM."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise FixtureError("pyannote.audio is not installed: pip install \"mlx-diar[reference]\"")
    sample = Path(list(spec.submodule_search_locations)[0]) / "sample"
    return sample / "sample.wav", sample / "sample.rttm"
