"""mlx_diar.cpu.lanes: the CPU segmentation forward split over this process and helper processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mlx_diar  # noqa: F401  (loads OpenBLAS before MLX)
from harness import targets
from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.runtime.inference import chunk_batches
from mlx_diar.cpu.lanes import SegmentationLanes


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.fixture(scope="module")
def forward(mlx_model_dir: Path):
    from mlx_diar.conversion.model_io import load_model

    forward = load_model(mlx_model_dir).segmentation.numpy_forward()
    assert forward is not None  # float32 on the CPU
    return forward


@pytest.fixture(scope="module")
def chunks(sample) -> np.ndarray:
    """Five 10 s chunks of the sample, 5 s apart."""
    waveform, _ = sample
    return next(chunk_batches(waveform, 10 * SAMPLE_RATE, 5 * SAMPLE_RATE, 5))


def test_lanes_give_the_scores_of_one_process(forward, chunks: np.ndarray) -> None:
    """Five chunks over three lanes (2 + 2 + 1, two helpers): the scores of the whole batch in
    this process, in order."""
    expected = forward(chunks)
    lanes = SegmentationLanes(forward, 3)
    try:
        assert lanes.lanes == 3
        got = lanes(chunks)
        assert got.shape == expected.shape
        assert rel_l2(got, expected) <= targets.LAYER_REL_L2_F32
        assert rel_l2(got[4:], expected[4:]) <= targets.LAYER_REL_L2_F32  # the last helper's share
        peaks = lanes.helper_peaks_mb()
        assert len(peaks) == 2 and all(peak > 0 for peak in peaks)
    finally:
        lanes.close()
    assert all(helper.process.poll() is not None for helper in lanes.helpers) and not lanes.helpers


def test_a_lost_helper_is_recomputed_here(forward, chunks: np.ndarray, caplog) -> None:
    lanes = SegmentationLanes(forward, 2)
    try:
        helper = lanes.helpers[0]
        helper.process.kill()
        helper.process.wait()
        with caplog.at_level(logging.WARNING, logger="mlx_diar.cpu.lanes"):
            got = lanes(chunks)
        assert rel_l2(got, forward(chunks)) <= targets.LAYER_REL_L2_F32
        assert lanes.lanes == 1
        assert f"helper process {helper.process.pid} failed" in caplog.text
    finally:
        lanes.close()


def test_a_script_without_main_guard_runs_once(mlx_model_dir: Path, tmp_path: Path) -> None:
    """Helpers are fresh interpreters, not multiprocessing children: a user's script without
    ``if __name__ == "__main__"`` is not run again by them."""
    script = tmp_path / "diarize.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np
        import mlx_diar
        from mlx_diar.cpu.lanes import SegmentationLanes
        from mlx_diar.conversion.model_io import load_model

        print("script body ran", flush=True)
        lanes = SegmentationLanes(load_model({str(mlx_model_dir)!r}).segmentation.numpy_forward(), 2)
        scores = lanes(np.zeros((2, 160000), np.float32))
        print("lanes", lanes.lanes, "scores", scores.shape, flush=True)
    """))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("script body ran") == 1
    assert "lanes 2 scores (2, 589, 7)" in proc.stdout


def test_pipeline_runs_segmentation_on_the_cpu_lanes(mlx_pipeline) -> None:
    from mlx_diar.runtime.pipeline import cpu_lanes

    lanes = mlx_pipeline.segmentation_lanes
    assert lanes is not None and lanes.lanes == cpu_lanes()


def test_an_interrupted_call_leaves_no_stale_answer(forward, chunks: np.ndarray, monkeypatch) -> None:
    """Ctrl-C while the helper works on its share: the next call gets its own scores, not the
    interrupted call's."""
    lanes = SegmentationLanes(forward, 2)
    try:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(type(forward), "__call__", interrupted)  # this process's share only
        with pytest.raises(KeyboardInterrupt):
            lanes(chunks[:4])  # the helper was sent chunks 2-3
        monkeypatch.undo()
        got = lanes(chunks[1:5])
        assert rel_l2(got, forward(chunks[1:5])) <= targets.LAYER_REL_L2_F32
        assert lanes.lanes == 2
    finally:
        lanes.close()
