"""Precision policy and quantization: every variant converts, loads as saved, and meets its target
against pyannote float32 on a 10 s clip (targets from harness.targets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from harness import targets
from harness.compare import min_cosine, segmentation_agreement
from harness.metrics import score, uem_for
from mlx_diar import precision, quantize
from mlx_diar.convert import convert_pyannote_model
from mlx_diar.errors import ModelDirError
from mlx_diar.model_io import load_model
from mlx_diar.models.pyannet import BiLSTMLayer
from mlx_diar.pipeline import SpeakerDiarizationPipeline

# (dtype, precision mode, bits): the gated variants, and 4-bit (reported)
VARIANTS = {
    "float16": ("float16", "default", None),
    "bfloat16": ("bfloat16", "default", None),
    "q8": ("float32", "default", 8),
    "q4": ("float32", "default", 4),
}


def test_policy_round_trips_and_keeps_sensitive_blocks_float32() -> None:
    for dtype in precision.REDUCED:
        p = precision.policy(dtype)
        assert precision.from_config({"precision": precision.to_config(p, dtype)}) == p
        for role, keep in precision.KEEP_FLOAT32[dtype].items():
            assert {b for b, bp in p[role].items() if bp.compute == "float32"} == keep
        assert all(bp.compute == dtype for blocks in precision.policy(dtype, "pure").values()
                   for bp in blocks.values())
    with pytest.raises(ModelDirError, match="precision.segmentation"):
        broken = precision.to_config(precision.uniform(), "float32")
        del broken["segmentation"]["lstm"]
        precision.from_config({"precision": broken})


def test_quantized_lstm_equals_float_lstm_on_dequantized_weights() -> None:
    mx.random.seed(0)
    layer = BiLSTMLayer(64, 32)
    layer.update({d: {n: mx.random.normal(getattr(layer[d], n).shape) * 0.2 for n in ("Wx", "Wh", "bias")}
                  for d in ("forward", "backward")})
    specs = {f"{d}.{n}": {"bits": 4, "group_size": 32} for d in ("forward", "backward") for n in ("Wx", "Wh")}
    quantized = quantize.QuantizedBiLSTMLayer(layer, specs)  # quantizes the layer's weights
    for d in ("forward", "backward"):
        layer[d].update({n: mx.dequantize(quantized[d][n].weight, quantized[d][n].scales, quantized[d][n].biases,
                                          32, 4) for n in ("Wx", "Wh")})
    x = mx.random.normal((2, 20, 64))
    np.testing.assert_allclose(np.array(quantized(x)), np.array(layer(x)), atol=2e-5)


@pytest.fixture(scope="module")
def converted(fixture_root: Path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("precision")
    return {name: convert_pyannote_model(fixture_root, out / name, "full", dtype, precision_mode=mode, quantize=bits)
            for name, (dtype, mode, bits) in VARIANTS.items()}


def test_config_records_what_is_stored(converted: dict[str, Path]) -> None:
    config = json.loads((converted["float16"] / "config.json").read_text())
    stored = mx.load(str(converted["float16"] / "model.safetensors"))
    p = precision.from_config(config)
    for key, value in stored.items():
        role, path = key.split(".", 1)
        assert str(value.dtype) == f"mlx.core.{p[role][precision.block_of(role, path)].weights}", key
    q8 = json.loads((converted["q8"] / "config.json").read_text())["quantization"]
    kinds = {s["kind"] for layers in q8["layers"].values() for s in layers.values()}
    assert kinds == {"linear", "lstm", "conv"}
    share = sum(c["quantized"] for c in q8["parameters"].values()) / sum(c["total"] for c in q8["parameters"].values())
    assert share > 0.95


def test_loader_rebuilds_units_from_saved_keys(converted: dict[str, Path], tmp_path: Path) -> None:
    models = load_model(converted["q8"])
    seg = models.segmentation
    assert all(isinstance(layer, quantize.QuantizedBiLSTMLayer) for layer in seg.lstm)
    assert isinstance(seg.lstm[1].forward.Wx, quantize.QuantizedWeight)
    assert not isinstance(seg.lstm[0].forward.Wx, quantize.QuantizedWeight)  # 60 inputs: no group of 64
    assert isinstance(seg.classifier, nn.QuantizedLinear)
    conv = models.embedding.resnet.layer3[0].conv1
    stored = mx.load(str(converted["q8"] / "model.safetensors"))
    key = "embedding.resnet.layer3.0.conv1"
    expected = mx.dequantize(stored[f"{key}.weight"], stored[f"{key}.scales"], stored[f"{key}.biases"], 64, 8)
    assert mx.array_equal(conv.weight.reshape(conv.weight.shape[0], -1), expected).item()
    # config.json's record must agree with the saved keys
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in converted["q8"].iterdir():
        shutil.copy(f, broken / f.name)
    config = json.loads((converted["q8"] / "config.json").read_text())
    config["quantization"]["layers"]["segmentation"]["classifier"]["bits"] = 4
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="differ from config.json's record at \\['classifier'\\]"):
        load_model(broken)


def test_four_bit_keeps_named_blocks_at_eight_bits(converted: dict[str, Path]) -> None:
    q4 = json.loads((converted["q4"] / "config.json").read_text())["quantization"]
    assert q4["kept_8bit"] == {r: sorted(b) for r, b in quantize.KEEP_8BIT.items()}
    for role, layers in q4["layers"].items():
        for spec in layers.values():
            assert spec["bits"] == (8 if spec["block"] in quantize.KEEP_8BIT[role] else 4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_meets_its_target(name: str, converted: dict[str, Path], sample_10s, reference_run_10s) -> None:
    dtype, mode, bits = VARIANTS[name]
    out = SpeakerDiarizationPipeline(model_path=converted[name]).apply(sample_10s, uri="sample10", keep_stages=True)
    ref = reference_run_10s
    der = score(ref.diarization, out.speaker_diarization, uem_for(10.0))["der"]
    frames, _ = segmentation_agreement(out.stages["segmentation_scores"].data, ref.arrays["segmentation_scores"])
    cosine = min_cosine(out.stages["embeddings"], ref.arrays["embeddings"])
    print(f"\n{name}: DER {der:.4%}, frames {frames:.4%}, min cosine {cosine:.6f}")
    target = targets.precision_target(dtype, mode, bits)
    if target is None:  # reported, never gated
        assert np.isfinite(cosine)
        return
    assert der <= target.der and frames >= target.frames and cosine >= target.cosine
    assert len(out.speaker_diarization.labels()) == len(ref.diarization.labels())
