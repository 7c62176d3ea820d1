"""Speed benchmarks, run only with `pytest --benchmark`: MLX and pyannote on the same 10 s, same run.

Each MLX benchmark stores the pyannote time of the same work and the speed ratio in
`benchmark.extra_info` (shown with `--benchmark-columns` / saved with `--benchmark-json`).
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.audio import SAMPLE_RATE


def _best_of(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_reference_pipeline_10s(benchmark, reference_pipeline, sample_10s) -> None:
    from reference.runner import run_reference

    run = benchmark.pedantic(run_reference, args=(reference_pipeline, sample_10s),
                             kwargs={"record_layers": False}, rounds=2, warmup_rounds=1)
    assert run.meta["timings"]["total"] > 0


def test_mlx_pipeline_10s(benchmark, reference_pipeline, mlx_pipeline, sample_10s) -> None:
    from reference.runner import run_reference

    pyannote = _best_of(lambda: run_reference(reference_pipeline, sample_10s, record_layers=False), rounds=2)
    out = benchmark.pedantic(mlx_pipeline.apply, args=(sample_10s,), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(pyannote_s=pyannote, speed_ratio=pyannote / benchmark.stats.stats.min)
    assert out.speaker_diarization is not None


@pytest.mark.parametrize("model", ["segmentation", "embedding"])
def test_mlx_model_batch(benchmark, reference_pipeline, mlx_pipeline, sample, model: str) -> None:
    """One batch of 8 ten-second chunks through each model (mx.eval inside the timed function)."""
    import torch

    waveform, _ = sample
    chunks = np.stack([waveform[i * SAMPLE_RATE: (i + 10) * SAMPLE_RATE] for i in range(8)])
    if model == "segmentation":
        torch_model, mlx_model = reference_pipeline._segmentation.model, mlx_pipeline.models.segmentation
    else:
        torch_model, mlx_model = reference_pipeline._embedding.model_, mlx_pipeline.models.embedding
    x_torch, x_mlx = torch.from_numpy(chunks)[:, None], mx.array(chunks)
    with torch.inference_mode():
        torch_model(x_torch)
        pyannote = _best_of(lambda: torch_model(x_torch))
    benchmark.pedantic(lambda: mx.eval(mlx_model(x_mlx)), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(pyannote_s=pyannote, speed_ratio=pyannote / benchmark.stats.stats.min)
