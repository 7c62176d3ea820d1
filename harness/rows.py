"""The rows a comparison measures, typed: `harness.compare` produces them, `harness.report` writes them.

One dataclass per report table (its fields are the CSV columns, in order) and one for the
diarizations a recording's timeline plot draws.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

NAN = math.nan


@dataclasses.dataclass
class LayerRow:
    """One named layer of one model, MLX against pyannote on the same recorded input (layers.csv)."""

    file: str
    variant: str
    dtype: str
    quantize: str  # "q8g64" style, "" when not quantized
    model: str  # "segmentation" or "embedding"
    layer: str  # pyannote's module path
    depth: int  # position in the MLX forward order
    shape: str
    max_abs_err: float = NAN
    rel_l2: float = NAN
    cosine: float = NAN
    argmax_agreement: float = NAN  # segmentation output only
    f64_err_pyannote: float = NAN  # segmentation output only: relative L2 error against pyannote run in float64
    f64_err_mlx: float = NAN
    target: str = ""
    passed: bool | None = None  # None: the variant has no target for this layer


@dataclasses.dataclass
class PipelineRow:
    """One side's whole-pipeline result on one file, or on the corpus (file "(all)") (pipeline.csv)."""

    file: str
    variant: str  # "pyannote" or the MLX variant's name
    side: str  # "pyannote" or "mlx"
    duration_s: float
    speakers: float = NAN
    reference_speakers: float = NAN
    pyannote_speakers: float = NAN  # MLX rows: speakers pyannote found on the same file
    size_mb: float = NAN  # MLX rows: the converted model directory on disk
    quantized_share: float = NAN  # MLX rows: share of model parameters quantized
    der_vs_reference: float = NAN
    jer_vs_reference: float = NAN
    der_vs_pyannote: float = NAN
    jer_vs_pyannote: float = NAN
    # frames where the two sides' argmax differ on a tie (pyannote's top-2 margin below SEGMENTATION_TIE_MARGIN),
    # and the MLX DER once those frames take pyannote's decision (the float32 gate; equal to der_vs_pyannote
    # without such a frame)
    tie_frames_flipped: float = NAN
    der_vs_pyannote_ties_resolved: float = NAN
    der_vs_exact: float = NAN  # fast embedding modes: against the same conversion in exact mode
    segmentation_frame_agreement: float = NAN
    segmentation_frame_agreement_decided: float = NAN
    embedding_min_cosine: float = NAN  # the embedding stage on pyannote's masks (`metrics.embedding_min_cosine`)
    embedding_min_cosine_own_masks: float = NAN  # the pipeline's embeddings, on its own segmentation's masks
    target: str = ""
    passed: bool | None = None


@dataclasses.dataclass
class TimingRow:
    """Wall-clock of one stage of one side's run on one file (timing.csv)."""

    file: str
    variant: str
    side: str
    stage: str
    seconds: float
    rtf: float  # seconds per second of audio
    speed_ratio: float  # pyannote seconds / MLX seconds (NaN on pyannote's rows)
    peak_rss_mb: float
    warmup_runs: int
    repeats: int = 1  # timed runs; `seconds` and `peak_rss_mb` are their medians (each run in timing_runs.csv)
    cached: str = ""  # pyannote rows taken from the reference cache: when that run was measured (ISO date)


@dataclasses.dataclass
class TimingRun:
    """Wall-clock of one stage in one timed run (timing_runs.csv): the samples `harness diff` tests."""

    file: str
    variant: str
    side: str
    stage: str
    repeat: int  # 0-based, in the order the runs were made (variants interleaved within a repeat)
    seconds: float
    peak_rss_mb: float
    cached: str = ""


@dataclasses.dataclass
class Diarizations:
    """One recording's diarizations (pyannote.core Annotations) for its timeline plot."""

    duration: float
    pyannote: Any
    reference: Any = None
    mlx: dict[str, Any] = dataclasses.field(default_factory=dict)  # {variant name: Annotation}


def to_frame(rows: Sequence[Any], row_type: type):
    """`rows` as a pandas DataFrame with `row_type`'s fields as columns, in order (also when empty)."""
    import pandas as pd

    columns = [field.name for field in dataclasses.fields(row_type)]
    return pd.DataFrame([dataclasses.asdict(row) for row in rows], columns=columns)
