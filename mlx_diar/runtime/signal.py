"""Mirrors pyannote.audio.utils.signal: hysteresis `binarize` and the `Binarize` annotation builder."""

from __future__ import annotations

import numpy as np
from pyannote.core import Annotation, Segment, SlidingWindowFeature
from pyannote.core.utils.generators import string_generator


def binarize(scores: np.ndarray, onset: float = 0.5, offset: float | None = None,
             initial_state: bool | None = None) -> np.ndarray:
    """Hysteresis thresholding along the frame axis of (num_chunks, num_frames, num_classes) scores.

    Same semantics as `utils.signal.binarize_swf` / `binarize_ndarray`: on above `onset`, off
    below `offset`, otherwise the previous state (the initial state for leading frames).
    Returns float (0.0/1.0) with the input's shape.
    """
    offset = offset or onset
    data = np.nan_to_num(np.moveaxis(scores, 1, -1))  # (..., frames)
    if initial_state is None:
        state0 = data[..., 0] >= 0.5 * (onset + offset)
    else:
        state0 = np.full(data.shape[:-1], bool(initial_state))
    on = data > onset
    defined = (data < offset) | on
    # index of the last well-defined frame up to each frame (-1 when none yet)
    idx = np.where(defined, np.arange(data.shape[-1]), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    value = np.take_along_axis(on, np.maximum(last, 0), axis=-1)
    result = np.where(last >= 0, value, state0[..., None])
    return np.moveaxis(1.0 * result, -1, 1)


def to_annotation(discrete: SlidingWindowFeature, min_duration_on: float = 0.0,
                  min_duration_off: float = 0.0, onset: float = 0.5, offset: float = 0.5) -> Annotation:
    """(num_frames, num_classes) scores -> Annotation with integer labels (`utils.signal.Binarize`)."""
    num_frames, _ = discrete.data.shape
    frames = discrete.sliding_window
    timestamps = [frames[i].middle for i in range(num_frames)]
    active = Annotation()
    tracks = string_generator()
    for k, k_scores in enumerate(discrete.data.T):
        label = k if discrete.labels is None else discrete.labels[k]
        track = next(tracks)
        start = timestamps[0]
        is_active = k_scores[0] > onset
        t = timestamps[0]
        for t, y in zip(timestamps[1:], k_scores[1:]):
            if is_active:
                if y < offset:
                    active[Segment(start, t), track] = label
                    start = t
                    is_active = False
            elif y > onset:
                start = t
                is_active = True
        if is_active:
            active[Segment(start, t), track] = label
    if min_duration_off > 0.0:
        active = active.support(collar=min_duration_off)
    if min_duration_on > 0:
        for segment, track in list(active.itertracks()):
            if segment.duration < min_duration_on:
                del active[segment, track]
    return active
