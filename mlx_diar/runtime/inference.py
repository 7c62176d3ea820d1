"""Mirrors pyannote.audio.core.inference.Inference: sliding windows, overlap-add aggregation, trimming.

Arrays are NumPy; frame arithmetic uses pyannote.core's SlidingWindow so that frame indices
are computed exactly as pyannote computes them.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pyannote.core import SlidingWindow, SlidingWindowFeature

from mlx_diar.runtime.audio import Waveform


def num_chunks(num_samples: int, window_size: int, step_size: int) -> tuple[int, bool]:
    """(number of chunks, whether the last one is a zero-padded partial chunk) as `Inference.slide` cuts them.

    Full windows every `step_size` samples, then, when the windows do not end exactly at
    the end of the audio (or the audio is shorter than a window), one last chunk starting
    after the last full window, zero-padded to `window_size`.
    """
    full = (num_samples - window_size) // step_size + 1 if num_samples >= window_size else 0
    has_last_chunk = num_samples < window_size or (num_samples - window_size) % step_size > 0
    return full + int(has_last_chunk), has_last_chunk


def chunk_batches(waveform: Waveform, window_size: int, step_size: int,
                  batch_size: int) -> Iterator[np.ndarray]:
    """(num_samples,) -> successive (<= batch_size, window_size) batches of the chunks of `num_chunks`.

    Each batch is built from the one span of audio its chunks cover (a view of an array, a read
    of an `AudioFile`), so memory does not grow with the overlap of the windows (a 10 s window
    every 1 s would otherwise copy the audio ten times) nor with the recording's length.
    """
    num_samples = waveform.shape[0]
    total, has_last_chunk = num_chunks(num_samples, window_size, step_size)
    full = total - int(has_last_chunk)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        batch = np.zeros((stop - start, window_size), dtype=np.float32)
        whole = max(0, min(stop, full) - start)  # chunks that lie inside the audio
        if whole:
            span = waveform[start * step_size:(start + whole - 1) * step_size + window_size]
            batch[:whole] = sliding_window_view(span, window_size)[::step_size]
        if stop > full:  # the last, partial chunk
            last = waveform[full * step_size:num_samples]
            batch[-1, : last.shape[0]] = last
        yield batch


def trim(scores: SlidingWindowFeature, warm_up: tuple[float, float] = (0.1, 0.1)) -> SlidingWindowFeature:
    """Remove `warm_up` ratios of each chunk on both sides (`Inference.trim`)."""
    _, num_frames, _ = scores.data.shape
    chunks = scores.sliding_window
    left = round(num_frames * warm_up[0])
    right = round(num_frames * warm_up[1])
    new_chunks = SlidingWindow(start=chunks.start + warm_up[0] * chunks.duration, step=chunks.step,
                               duration=(1 - warm_up[0] - warm_up[1]) * chunks.duration)
    return SlidingWindowFeature(scores.data[:, left: num_frames - right], new_chunks)


def aggregate(
    scores: SlidingWindowFeature,
    frames: SlidingWindow,
    warm_up: tuple[float, float] = (0.0, 0.0),
    epsilon: float = 1e-12,
    hamming: bool = False,
    missing: float = np.nan,
    skip_average: bool = False,
) -> SlidingWindowFeature:
    """Overlap-add (num_chunks, num_frames, num_classes) chunk scores into (total_frames, num_classes).

    Same arithmetic as `Inference.aggregate`, in float32 and in chunk order.
    """
    num_chunks, num_frames_per_chunk, num_classes = scores.data.shape
    chunks = scores.sliding_window
    frames = SlidingWindow(start=chunks.start, duration=frames.duration, step=frames.step)
    window = np.hamming(num_frames_per_chunk).reshape(-1, 1) if hamming else np.ones((num_frames_per_chunk, 1))
    warm_up_window = np.ones((num_frames_per_chunk, 1))
    left = round(warm_up[0] / chunks.duration * num_frames_per_chunk)
    warm_up_window[:left] = epsilon
    right = round(warm_up[1] / chunks.duration * num_frames_per_chunk)
    warm_up_window[num_frames_per_chunk - right:] = epsilon
    num_frames = frames.closest_frame(
        chunks.start + chunks.duration + (num_chunks - 1) * chunks.step + 0.5 * frames.duration) + 1
    output = np.zeros((num_frames, num_classes), dtype=np.float32)
    count = np.zeros((num_frames, num_classes), dtype=np.float32)
    mask_max = np.zeros((num_frames, num_classes), dtype=np.float32)
    weight = window * warm_up_window
    for c in range(num_chunks):
        score = np.array(scores.data[c], copy=True)
        mask = 1 - np.isnan(score)
        np.nan_to_num(score, copy=False, nan=0.0)
        start_frame = frames.closest_frame(chunks[c].start + 0.5 * frames.duration)
        sl = slice(start_frame, start_frame + num_frames_per_chunk)
        output[sl] += score * mask * weight
        count[sl] += mask * weight
        mask_max[sl] = np.maximum(mask_max[sl], mask)
    average = output if skip_average else output / np.maximum(count, epsilon)
    average[mask_max == 0.0] = missing
    return SlidingWindowFeature(average, frames)

