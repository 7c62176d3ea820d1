"""Parity targets, written once: the tests and `harness compare --check` read them here.

docs/parity.md explains each one, what it applies to and how it is measured.
"""

from __future__ import annotations

import dataclasses

# float32, real or seeded weights
# float32 segmentation against pyannote run in float64: MLX's relative L2 error (every layer, the output, whole-file
# scores) may be this many times pyannote's own float32 error, or LAYER_REL_L2_F32; measured on an AMD EPYC without
# AVX-512, MLX is 1.0x-3.2x pyannote's error (SincNet rounding amplified by instance norm differs per CPU kernel)
FLOAT32_NOISE_RATIO = 4.0
# fraction of frames whose argmax agrees: float32 parity must not change who speaks on any decided frame
SEGMENTATION_ARGMAX_AGREEMENT_F32 = 1.0
# every named layer, relative L2 error: float32 rounding measures up to 6e-5, a 5% error in one LSTM weight fails
LAYER_REL_L2_F32 = 1e-4
# embedding cosine: clustering compares directions; float32 rounding moves them by ~1e-7, a wrong layer by far more
EMBEDDING_COSINE_F32 = 0.99999
# MLX scored against pyannote's own output: float32 is exact (identical RTTM)
PIPELINE_DER_F32 = 0.0



@dataclasses.dataclass(frozen=True)
class PrecisionTarget:
    """Reduced-precision variant vs pyannote float32, on every file (speaker count equal too)."""

    der: float  # DER of the MLX output scored against pyannote's, fraction (0.001 = 0.1 point)
    cosine: float  # smallest cosine over (chunk, speaker) embeddings
    frames: float  # share of segmentation frames whose argmax equals pyannote's


# Reasons: float16 keeps 10 mantissa bits, so with the float32-sensitive blocks kept (statistics
# pooling, fbank, log-softmax) the output may move by a frame in a thousand and no more; bfloat16
# keeps 7 bits, so 4x that; 8-bit weights add ~0.4 % relative weight error per layer (speakrs ships
# 8-bit segmentation at zero DER cost and 8-bit embedding at +1 pt on real data: half of that here).
PRECISION_TARGETS = {
    "float16": PrecisionTarget(der=0.001, cosine=0.999, frames=0.999),  # default policy
    "bfloat16": PrecisionTarget(der=0.003, cosine=0.995, frames=0.995),  # default policy
    "q8": PrecisionTarget(der=0.005, cosine=0.99, frames=0.995),  # 8-bit weights (any float policy)
}


def precision_target(dtype: str, precision: str = "default", quantize: int | None = None) -> PrecisionTarget | None:
    """The target a variant is gated on; None for float32 (exact targets above), the naive 'pure'
    variants and 4-bit ones (reported, never gated)."""
    if precision == "pure" or quantize == 4:
        return None
    if quantize == 8:
        return PRECISION_TARGETS["q8"]
    return PRECISION_TARGETS.get(dtype)


# clustering from the real community-1 fixture (speakrs)
# VBx gamma and pi: float64 on both sides, so only float64 reordering over its iterations is allowed
VBX_ATOL = 1e-9

# Whole-file runs: pyannote's own float32 log-probs differ from its float64 ones by up to 8.5e-4
# on the 30 s sample (measured here, segmentation-3.0), so a frame whose top-2 margin in the
# reference is below this is a tie that float32 cannot decide. Argmax agreement is required on
# every other frame, and whole-file log-prob errors must stay below this float32 noise floor.
SEGMENTATION_TIE_MARGIN = 1e-3

# opt-in fast embedding modes (`embedding_mode="sparse"` or "shared"): DER against exact mode on the same file
PIPELINE_DER_FAST = 0.005  # 0.5 point

def segmentation_f32_bound(pyannote_f32_rel_l2: float) -> float:
    """Largest allowed relative L2 error of an MLX float32 segmentation layer against pyannote's float64 one,
    given pyannote's own float32 error against float64 on the same input."""
    return max(LAYER_REL_L2_F32, FLOAT32_NOISE_RATIO * pyannote_f32_rel_l2)
