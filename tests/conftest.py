"""Shared fixtures: the offline fixture pipeline, the bundled sample, one loaded pyannote pipeline.

A fixture pipeline that cannot be built fails every test that needs it, with the build's own
message (`harness.paths.FixtureError`); nothing is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mlx_diar.models.kernels import ROUTES  # the float32 parity tests run on each kernel route
from mlx_diar.runtime.audio import SAMPLE_RATE

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach Hugging Face

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def fixture_root() -> Path:
    from harness.fixtures import fixture_dir

    return fixture_dir()


@pytest.fixture(scope="session")
def sample() -> tuple[np.ndarray, Path]:
    """pyannote's bundled 30 s recording (16 kHz mono float32) and its RTTM path."""
    from harness.paths import sample_audio
    from mlx_diar.runtime.audio import load_audio

    wav, rttm = sample_audio()
    return load_audio(wav), rttm


@pytest.fixture(scope="session")
def reference_pipeline(fixture_root: Path):
    """pyannote's SpeakerDiarization on the fixture pipeline, loaded once per session (import takes seconds)."""
    from reference.runner import load_pipeline

    return load_pipeline(fixture_root)


@pytest.fixture(scope="session")
def sample_10s(sample) -> np.ndarray:
    """The first 10 s of the bundled sample: short enough to run the embedding model in tests."""
    waveform, _ = sample
    return waveform[: 10 * SAMPLE_RATE]


@pytest.fixture(scope="session")
def reference_run_10s(reference_pipeline, sample_10s):
    """pyannote's full pipeline on `sample_10s`, every stage recorded (computed once per session)."""
    from reference.runner import run_reference

    return run_reference(reference_pipeline, sample_10s, uri="sample10", layer_items=2)


@pytest.fixture(scope="session")
def mlx_model_dir(fixture_root: Path, tmp_path_factory) -> Path:
    """The fixture pipeline converted to a float32 MLX 'full' model (once per session)."""
    from mlx_diar.conversion.convert import convert_pyannote_model

    return convert_pyannote_model(fixture_root, tmp_path_factory.mktemp("mlx") / "full-f32", "full", "float32")


@pytest.fixture(scope="session")
def mlx_pipeline(mlx_model_dir: Path):
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    return SpeakerDiarizationPipeline(model_path=mlx_model_dir, device="cpu")


@pytest.fixture(scope="session")
def mlx_pipelines(mlx_pipeline) -> dict:
    """The float32 pipeline on each kernel route (same loaded models)."""
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    return {route: SpeakerDiarizationPipeline(models=mlx_pipeline.models, device="cpu", kernels=route)
            for route in ROUTES}


@pytest.fixture(params=ROUTES)
def route(request) -> str:
    """Runs the test on each kernel route (`mlx_diar.models.kernels.route`)."""
    from mlx_diar.models import kernels

    with kernels.route(request.param):
        yield request.param
