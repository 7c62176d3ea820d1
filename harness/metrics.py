"""Diarization scoring with pyannote.metrics: DER and JER, collar 0, overlap counted, explicit UEM."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness import targets
from mlx_diar.errors import MlxDiarError


class AnnotationError(MlxDiarError, ValueError):
    """A reference RTTM or UEM file that cannot be used, naming the file (and line) and the problem."""


def uem_for(duration: float):
    """The whole file as the scored region."""
    from pyannote.core import Segment, Timeline

    return Timeline([Segment(0.0, duration)])


def _number(path: Path, lineno: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise AnnotationError(f"{path}:{lineno}: {field} {text!r} is not a number >= 0")
    return value


def load_rttm(path: str | Path) -> dict[str, Any]:
    """{uri: Annotation} of the SPEAKER lines of an RTTM file, each line checked.

    `type uri channel start duration <NA> <NA> speaker ...` per line, as pyannote.database
    reads it; a malformed line raises `AnnotationError` naming the file and the line.
    """
    from pyannote.core import Annotation, Segment

    path = Path(path)
    annotations: dict[str, Any] = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise AnnotationError(f"{path}:{lineno}: expected 'SPEAKER uri channel start duration <NA> <NA> "
                                  f"speaker', got {len(fields)} fields")
        uri, speaker = fields[1], fields[7]
        start = _number(path, lineno, "start", fields[3])
        duration = _number(path, lineno, "duration", fields[4])
        annotation = annotations.setdefault(uri, Annotation(uri=uri))
        annotation[Segment(start, start + duration), lineno] = speaker
    return annotations


def named(annotation, uri: str):
    """A copy of `annotation` named by `uri` made RTTM-safe (`mlx_diar.runtime.audio.rttm_uri`): what the
    harness writes and scores, whatever characters the recording's name holds."""
    from mlx_diar.runtime.audio import rttm_uri

    annotation = annotation.copy()
    annotation.uri = rttm_uri(uri)
    return annotation


def reference_for(path: str | Path, uri: str):
    """The reference Annotation of `uri` (or of its RTTM-safe form) in the RTTM file `path`, `named` by the
    RTTM-safe uri; `AnnotationError` when it has none."""
    from mlx_diar.runtime.audio import rttm_uri

    annotations = load_rttm(path)
    if not annotations:
        raise AnnotationError(f"{path}: no SPEAKER turns (an empty reference cannot name its recording {uri!r})")
    key = uri if uri in annotations else rttm_uri(uri)
    if key not in annotations:
        found = ", ".join(repr(u) for u in sorted(annotations)[:5]) + (", ..." if len(annotations) > 5 else "")
        raise AnnotationError(f"{path}: no turns for {uri!r}, the audio file's name (it has {found}); "
                              f"an RTTM's uri must be its audio file's name without extension")
    return named(annotations[key], uri)


def score(reference, hypothesis, uem) -> dict[str, float]:
    """DER (with its components) and JER of `hypothesis` against `reference` on `uem`.

    Optimal speaker mapping, collar 0, overlapping speech scored (skip_overlap=False).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    details = der(reference, hypothesis, uem=uem, detailed=True)
    jer = JaccardErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis, uem=uem)
    total = details["total"]
    return {
        "der": float(details["diarization error rate"]),
        "jer": float(jer),
        "missed": float(details["missed detection"] / total) if total else 0.0,
        "false_alarm": float(details["false alarm"] / total) if total else 0.0,
        "confusion": float(details["confusion"] / total) if total else 0.0,
        "scored_seconds": float(total),
    }


class Accumulator:
    """Corpus-level DER and JER: pyannote.metrics accumulates every scored file (collar 0, overlap counted)."""

    def __init__(self) -> None:
        from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

        self.der = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        self.jer = JaccardErrorRate(collar=0.0, skip_overlap=False)

    def add(self, reference, hypothesis, uem) -> None:
        self.der(reference, hypothesis, uem=uem)
        self.jer(reference, hypothesis, uem=uem)

    def result(self) -> dict[str, float]:
        return {"der": float(abs(self.der)), "jer": float(abs(self.jer))}


def load_uem(path: str | Path, uri: str):
    """The scored regions of `uri` (or of its RTTM-safe form) from a UEM file (`uri channel start end` per
    line), each line checked."""
    from mlx_diar.runtime.audio import rttm_uri
    from pyannote.core import Segment, Timeline

    path = Path(path)
    names = {uri, rttm_uri(uri)}
    segments = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 4:
            raise AnnotationError(f"{path}:{lineno}: expected 'uri channel start end', got {len(fields)} fields")
        start, end = _number(path, lineno, "start", fields[2]), _number(path, lineno, "end", fields[3])
        if end <= start:
            raise AnnotationError(f"{path}:{lineno}: end {fields[3]} is not after start {fields[2]}")
        if fields[0] in names:
            segments.append(Segment(start, end))
    if not segments:
        raise AnnotationError(f"{path}: no UEM segment for {uri!r}, the audio file's name")
    return Timeline(segments)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def components(reference, hypothesis, uem) -> dict[str, dict[str, float]]:
    """pyannote.metrics' DER and JER components of one file (collar 0, overlap counted), JSON-able.

    Summing them over files and applying `corpus_rates` is exactly what an accumulating
    pyannote.metrics object reports for the corpus (not an average of per-file rates).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der = DiarizationErrorRate(collar=0.0, skip_overlap=False).compute_components(reference, hypothesis, uem=uem)
    jer = JaccardErrorRate(collar=0.0, skip_overlap=False).compute_components(reference, hypothesis, uem=uem)
    return {"der": {k: float(v) for k, v in der.items()}, "jer": {k: float(v) for k, v in jer.items()}}


def corpus_rates(parts: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Corpus DER, JER and DER components (as fractions of scored speech) from summed `components`."""
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der_metric, jer_metric = DiarizationErrorRate(), JaccardErrorRate()
    der = {k: sum(p["der"][k] for p in parts) for k in der_metric.components_}
    jer = {k: sum(p["jer"][k] for p in parts) for k in jer_metric.components_}
    total = der["total"]
    return {"der": float(der_metric.compute_metric(der)) if total else float("nan"),
            "jer": float(jer_metric.compute_metric(jer)) if parts else float("nan"),
            "missed": der["missed detection"] / total if total else float("nan"),
            "false_alarm": der["false alarm"] / total if total else float("nan"),
            "confusion": der["confusion"] / total if total else float("nan"),
            "scored_s": total}


def segmentation_agreement(mine: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(agreement on all frames, agreement on frames the float32 reference decides) of the argmax."""
    same = mine.argmax(-1) == reference.argmax(-1)
    top2 = np.sort(reference, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) >= targets.SEGMENTATION_TIE_MARGIN
    return float(np.mean(same)), float(np.mean(same[decided])) if decided.any() else 1.0


def flipped_ties(mine: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(chunks, frames) mask of the frames where the argmax differs and the reference's top-2 margin is
    below `targets.SEGMENTATION_TIE_MARGIN`: ties that float32 rounding decides either way."""
    top2 = np.sort(reference, axis=-1)[..., -2:]
    return (mine.argmax(-1) != reference.argmax(-1)) & ((top2[..., 1] - top2[..., 0]) < targets.SEGMENTATION_TIE_MARGIN)


def min_cosine(mine: np.ndarray, reference: np.ndarray) -> float:
    """Smallest cosine similarity over (chunk, speaker) embeddings."""
    a, b = mine.reshape(-1, mine.shape[-1]), reference.reshape(-1, reference.shape[-1])
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(np.nanmin(cos))


def embedding_min_cosine(pipeline, waveform: np.ndarray, reference_arrays: Mapping[str, np.ndarray],
                         own: Mapping[str, Any] | None = None) -> float:
    """The MLX embedding stage's error alone: its embeddings computed from pyannote's own binarized
    segmentation (the same pooling masks and chunks), smallest cosine against pyannote's embeddings.

    The pipeline's embeddings pool over the MLX segmentation's masks; where a reduced-precision
    segmentation moves a speaker boundary by a frame, a (chunk, speaker) pooled over a few frames
    changes direction whatever the embedding model's precision. That is the segmentation's error
    (counted by frame agreement and DER), so the embedding target is measured on identical inputs.

    With `own`, the stages an exact-mode run of `pipeline` kept on the same waveform (`keep_stages`),
    only the chunks whose binarized segmentation differs from pyannote's are computed again: every
    other chunk has the same audio and pooling masks, so its embeddings are the run's own.
    """
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    start, duration, step = (float(v) for v in reference_arrays["segmentation.window"])
    # pyannote records powerset outputs already hard, multilabel ones as scores: binarized as its get_embeddings does
    binarized = pipeline.binarize_segmentations(SlidingWindowFeature(
        reference_arrays["segmentation"], SlidingWindow(start=start, duration=duration, step=step)))
    mine = None if own is None or "embeddings" not in own else pipeline.binarize_segmentations(own["segmentation"]).data
    if mine is None or mine.shape != binarized.data.shape or own["embeddings"].shape[:2] != mine.shape[::2]:
        return min_cosine(pipeline.get_embeddings(waveform, binarized), reference_arrays["embeddings"])
    embeddings = np.array(own["embeddings"], copy=True)
    differ = np.flatnonzero((mine != binarized.data).reshape(len(mine), -1).any(axis=1))
    masks = pipeline.embedding_masks(binarized, bool(pipeline.params["embedding_exclude_overlap"]))
    active = masks[differ].any(axis=(1, 2))
    embeddings[differ[~active]] = pipeline.silent_embedding(masks.shape[1])
    pipeline.compute_chunks(waveform, binarized, differ[active], embeddings)
    return min_cosine(embeddings, reference_arrays["embeddings"])
