"""Chunking one batch at a time, skipped silent chunks, and the opt-in fast embedding modes."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import SlidingWindowFeature

from harness import targets
from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.runtime.inference import chunk_batches, num_chunks


def _chunks_by_index(waveform: np.ndarray, window: int, step: int) -> np.ndarray:
    """Inference.slide's chunks, cut the obvious way: full windows, then a zero-padded remainder."""
    starts = list(range(0, waveform.shape[0] - window + 1, step))
    rest = starts[-1] + step if starts else 0
    chunks = [waveform[s:s + window] for s in starts]
    if not starts or starts[-1] + window < waveform.shape[0]:
        chunks.append(np.pad(waveform[rest:], (0, window - waveform[rest:].shape[0])))
    return np.stack(chunks)


@pytest.mark.parametrize("num_samples", [7, 10, 20, 23, 25, 31])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 100])
def test_chunk_batches_cut_like_inference_slide(num_samples: int, batch_size: int) -> None:
    waveform = np.arange(1, num_samples + 1, dtype=np.float32)
    expected = _chunks_by_index(waveform, 10, 3)
    batches = list(chunk_batches(waveform, 10, 3, batch_size))
    assert all(b.shape[0] <= batch_size for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), expected)
    assert num_chunks(num_samples, 10, 3)[0] == expected.shape[0]


def test_silent_chunks_skip_the_trunk_with_the_same_embeddings(mlx_pipeline, sample) -> None:
    """A chunk where nobody speaks gets exactly what the model computes for its all-zero masks."""
    import mlx.core as mx

    waveform = sample[0][: 12 * 16000]  # three chunks
    scores = mlx_pipeline.segmentation_scores(waveform)
    binarized = mlx_pipeline.binarize_segmentations(mlx_pipeline.to_multilabel(scores))
    data = binarized.data.copy()
    data[1] = 0.0  # the middle chunk: nobody speaks
    binarized = SlidingWindowFeature(data, binarized.sliding_window)
    embeddings = mlx_pipeline.get_embeddings(waveform, binarized)

    model = mlx_pipeline.models.embedding
    masks = mlx_pipeline.embedding_masks(binarized, True)
    audio = mlx_pipeline.chunk_waveforms(waveform, binarized.sliding_window, range(data.shape[0]))
    expected = np.array(model(mx.array(audio), mx.array(masks)))
    np.testing.assert_array_equal(embeddings[1], expected[1])
    # the other chunks ran in a smaller batch: MLX's GEMM blocking may round differently
    for c in (0, 2):
        error = np.linalg.norm(embeddings[c] - expected[c]) / np.linalg.norm(expected[c])
        assert error <= targets.LAYER_REL_L2_F32


@pytest.fixture(scope="module")
def exact_sample_run(mlx_pipeline, sample):
    return mlx_pipeline.apply(sample[0], keep_stages=True)


@pytest.mark.parametrize("mode", ["sparse", "shared"])
def test_fast_embedding_modes_cost_little_der(mode: str, exact_sample_run, mlx_model_dir, sample) -> None:
    """Opt-in fast modes: DER against exact mode within harness.targets.PIPELINE_DER_FAST."""
    from harness.metrics import score, uem_for
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    waveform = sample[0]
    fast = SpeakerDiarizationPipeline(model_path=mlx_model_dir, params={"embedding_mode": mode}).apply(waveform)
    result = score(exact_sample_run.speaker_diarization, fast.speaker_diarization,
                   uem_for(len(waveform) / SAMPLE_RATE))
    print(f"\n{mode} vs exact on the sample: DER {result['der']:.4%}")
    assert result["der"] <= targets.PIPELINE_DER_FAST


def test_sparse_mode_computes_exact_embeddings_and_trains_only_on_them(exact_sample_run, mlx_model_dir, sample,
                                                                        monkeypatch) -> None:
    """Sparse mode: the computed chunks' embeddings are exact mode's; filled ones never train the
    clustering; an uncertain filled speaker's chunk is computed in a second pass (here: every one);
    where the training halves disagree, every chunk is computed and trains, as in exact mode."""
    from mlx_diar.runtime import sparse
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    pipeline = SpeakerDiarizationPipeline(model_path=mlx_model_dir, params={"embedding_mode": "sparse"})
    exact = exact_sample_run.stages["embeddings"]
    active = np.flatnonzero(exact_sample_run.stages["segmentation"].data.sum(axis=(1, 2)) > 0)

    def relative_error(chunks: np.ndarray, embeddings: np.ndarray) -> float:
        return float(np.linalg.norm(embeddings[chunks] - exact[chunks]) / np.linalg.norm(exact[chunks]))

    first = pipeline.apply(sample[0], keep_stages=True)
    computed = first.stages["sparse"]["computed"]
    filled = np.setdiff1d(active, np.flatnonzero(computed))
    assert len(filled) >= len(active) // 2 - 1 and computed[active[::sparse.STRIDE]].all()
    assert relative_error(np.flatnonzero(computed), first.stages["embeddings"]) <= targets.LAYER_REL_L2_F32
    assert relative_error(filled, first.stages["embeddings"]) > 10 * targets.LAYER_REL_L2_F32  # really filled
    trace = first.stages["clustering"]
    assert computed[trace["train_chunk_idx"]].all()
    assert len(trace["train_chunk_idx"]) < len(exact_sample_run.stages["clustering"]["train_chunk_idx"])
    assert first.stages["sparse"]["disagreement"] <= sparse.AGREEMENT and not len(first.stages["sparse"]["completed"])

    # the seeded model finds one cluster on the sample: two are asked for, so that there are margins;
    # and every filled speaker is uncertain, so all filled chunks are recomputed (the halves check
    # is off here: two forced clusters on this file make the halves disagree)
    monkeypatch.setattr(sparse, "MARGIN", np.inf)
    monkeypatch.setattr(sparse, "AGREEMENT", np.inf)
    second = pipeline.apply(sample[0], num_speakers=2, keep_stages=True)
    assert np.array_equal(second.stages["sparse"]["refined"], filled)
    assert relative_error(active, second.stages["embeddings"]) <= targets.LAYER_REL_L2_F32
    assert np.array_equal(second.stages["clustering"]["train_chunk_idx"], trace["train_chunk_idx"])

    # a recording whose halves of the training chunks disagree (here: any) is finished as exact mode
    monkeypatch.setattr(sparse, "MARGIN", 0.0)
    monkeypatch.setattr(sparse, "AGREEMENT", -1.0)
    third = pipeline.apply(sample[0], keep_stages=True)
    assert np.array_equal(third.stages["sparse"]["completed"], filled)
    assert relative_error(active, third.stages["embeddings"]) <= targets.LAYER_REL_L2_F32
    assert np.array_equal(third.stages["clustering"]["train_chunk_idx"],
                          exact_sample_run.stages["clustering"]["train_chunk_idx"])


def test_unknown_embedding_mode_is_a_clear_error(mlx_model_dir) -> None:
    from mlx_diar.errors import OptionError
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    with pytest.raises(OptionError, match="embedding_mode"):
        SpeakerDiarizationPipeline(model_path=mlx_model_dir, params={"embedding_mode": "fastest"})


def test_parallel_lanes_give_the_single_lane_embeddings(mlx_pipeline, sample, monkeypatch) -> None:
    """The exact embedding stage on two CPU streams (single-threaded BLAS) equals one stream,
    progress counts every chunk, and the BLAS thread count is restored afterwards."""
    import mlx.core as mx

    from mlx_diar.runtime import pipeline as pipeline_module
    from mlx_diar.cpu.blas import blas_thread_count

    waveform = sample[0][: 14 * 16000]  # five chunks: an odd count leaves one lane idle at the end
    binarized = mlx_pipeline.binarize_segmentations(
        mlx_pipeline.to_multilabel(mlx_pipeline.segmentation_scores(waveform)))
    threads = blas_thread_count()
    monkeypatch.setattr(pipeline_module, "available_cores", lambda: 2)
    assert len(pipeline_module.lane_streams(mx.cpu)) == (2 if threads is None or threads > 1 else 1)
    seen: list[tuple[int, int]] = []
    lanes = mlx_pipeline.get_embeddings(waveform, binarized, progress=lambda done, total: seen.append((done, total)))
    assert blas_thread_count() == threads
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    monkeypatch.setattr(pipeline_module, "MAX_LANES", 1)
    assert len(pipeline_module.lane_streams(mx.cpu)) == 1
    single = mlx_pipeline.get_embeddings(waveform, binarized)
    error = np.linalg.norm(lanes - single) / np.linalg.norm(single)
    assert error <= targets.LAYER_REL_L2_F32, error  # BLAS on 1 vs 2 threads may block the sums differently


def test_one_chunk_keeps_blas_on_every_core(mlx_pipeline, sample, monkeypatch) -> None:
    """A file of one chunk runs one lane, so the BLAS thread count is left alone (not set to 1)."""
    import contextlib

    from mlx_diar.runtime import pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "available_cores", lambda: 2)
    requested: list[int | None] = []

    def record(count):
        requested.append(count)
        return contextlib.nullcontext()

    monkeypatch.setattr(pipeline_module, "blas_threads", record)
    for seconds in (10, 14):  # one chunk, then five
        waveform = sample[0][: seconds * 16000]
        binarized = mlx_pipeline.binarize_segmentations(
            mlx_pipeline.to_multilabel(mlx_pipeline.segmentation_scores(waveform)))
        mlx_pipeline.get_embeddings(waveform, binarized)
    lanes = len(pipeline_module.lane_streams(pipeline_module.mx.cpu))
    assert requested == [None, 1 if lanes > 1 else None]
