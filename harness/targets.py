"""Parity targets of shared/ARCHITECTURE.md §5, written once: tests and `compare --check` read them here."""

from __future__ import annotations

# float32, real or seeded weights
SEGMENTATION_MAX_ABS_ERR_F32 = 1e-4  # log-probabilities (powerset) or probabilities (multilabel)
SEGMENTATION_ARGMAX_AGREEMENT_F32 = 1.0  # fraction of frames
LAYER_REL_L2_F32 = 1e-4  # every named layer, relative L2 error
EMBEDDING_COSINE_F32 = 0.99999
PIPELINE_DER_F32 = 0.0  # MLX scored against pyannote's own output

# float16 / bfloat16
SEGMENTATION_FRAME_AGREEMENT_HALF = 0.99
EMBEDDING_COSINE_HALF = 0.999
PIPELINE_DER_HALF = 0.005  # 0.5 point

# quantized
PIPELINE_DER_INT8 = 0.01  # 1 point

# clustering from the real community-1 fixture (speakrs)
VBX_ATOL = 1e-9

# Whole-file runs: pyannote's own float32 log-probs differ from its float64 ones by up to 8.5e-4
# on the 30 s sample (measured here, segmentation-3.0), so a frame whose top-2 margin in the
# reference is below this is a tie that float32 cannot decide. Argmax agreement is required on
# every other frame, and whole-file log-prob errors must stay below this float32 noise floor.
SEGMENTATION_TIE_MARGIN = 1e-3

# opt-in fast mode (`embedding_mode="shared"`): DER against exact mode on the same file
PIPELINE_DER_SHARED = 0.005  # 0.5 point
