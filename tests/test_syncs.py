"""Host synchronisations of the MLX route: bounded per batch of chunks, never per chunk, speaker or step.

`harness.syncs` counts evaluations and conversions between NumPy and MLX; the pipeline's neural
stages on the "mlx" kernel route (what a GPU runs) must synchronise a fixed number of times per
batch, so that a synchronisation added to a hot loop fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from harness.profile import stage_syncs, sync_report
from harness.syncs import counting
from mlx_diar.runtime.audio import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
# the modules an MLX forward runs through (the sanitizers, run at conversion, may convert freely)
MODEL_CODE = [*sorted((ROOT / "mlx_diar" / "models").glob("*.py")), ROOT / "mlx_diar" / "conversion" / "quantize.py"]


def test_counting_counts_every_crossing() -> None:
    host = np.ones((4, 8), np.float32)
    with counting() as syncs:
        device = mx.array(host) * 2
        mx.eval(device)
        back = np.array(device)
        np.asarray(device)
        np.array(host)  # NumPy to NumPy: no crossing
        assert isinstance(device, mx.array)
    assert (syncs.evaluations, syncs.to_device, syncs.to_host) == (1, 1, 2)
    assert syncs.to_device_bytes == host.nbytes and syncs.to_host_bytes == 2 * back.nbytes
    assert np.array is not None and mx.array(host).shape == (4, 8)  # everything restored
    with counting() as again:
        pass
    assert again.total == 0


@pytest.fixture(scope="module")
def mlx_route(mlx_pipeline):
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    # 2 chunks per segmentation batch, 2 chunks per trunk batch (6 pairs of 3 speakers)
    return SpeakerDiarizationPipeline(models=mlx_pipeline.models, kernels="mlx",
                                      params={"segmentation_batch_size": 2, "embedding_batch_size": 6})


def test_mlx_route_synchronises_a_fixed_number_of_times_per_batch(mlx_route, sample) -> None:
    waveform = sample[0][: 14 * SAMPLE_RATE]  # 5 chunks: 3 segmentation batches
    stages = stage_syncs(mlx_route, waveform)
    segmentation, batches = stages["segmentation"]
    assert batches == 3
    # per batch: its audio to the device, its scores back; nothing per chunk, layer or LSTM step
    assert (segmentation.evaluations, segmentation.to_device, segmentation.to_host) == (0, batches, batches)
    embeddings, batches = stages["embeddings"]
    assert batches >= 2
    # per batch: audio and masks to the device, one evaluation, the embeddings back
    assert (embeddings.evaluations, embeddings.to_device, embeddings.to_host) == (batches, 2 * batches, batches)


def test_sync_report_names_each_stage() -> None:
    report = sync_report("mlx", seconds=12)
    assert "| segmentation | 1 | 2.00 |" in report
    assert "| embeddings |" in report


@pytest.mark.parametrize("path", MODEL_CODE, ids=lambda p: p.name)
def test_model_code_has_no_hidden_synchronisation(path: Path) -> None:
    """`.item()`, `.tolist()` on an MLX array wait for the device and cannot be counted: the models'
    code uses none."""
    calls = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in ("item", "tolist")]
    assert not calls, f"{path.name}: .item()/.tolist() at lines {calls}"
