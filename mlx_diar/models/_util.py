"""Small helpers shared by the MLX models."""

import mlx.core as mx
import mlx.nn as nn


def linear_dtype(layer: nn.Module) -> mx.Dtype:
    """Compute dtype of a (possibly quantized) Linear layer: its weight's, or its scales' when quantized."""
    return layer.scales.dtype if isinstance(layer, nn.QuantizedLinear) else layer.weight.dtype
