"""Parity of mlx_diar.models.wespeaker (fbank + ResNet34 + weighted stats pooling) with pyannote's
WeSpeakerResNet34, run in the same process on two 10 s slices of the bundled sample.

The torch model is the fixture pipeline's seeded trunk (`reference.seeded`), layers recorded by
`reference.layers`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import mlx_diar  # noqa: F401  (first: loads OpenBLAS before MLX binds its reference BLAS)

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten
from pyannote.audio.models.embedding import wespeaker

from harness import targets
from mlx_diar.conversion import precision
from mlx_diar.models.kernels import ROUTES
from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.models.fbank import kaldi_fbank
from mlx_diar.models.wespeaker import WeSpeakerConfig, WeSpeakerResNet34, nearest_indices
from reference.layers import embedding_layers
from reference.seeded import seeded_wespeaker

pytestmark = pytest.mark.parity

CHUNK = 10 * SAMPLE_RATE
NUM_MASK_FRAMES = 589  # pyannote segmentation-3.0 frames per 10 s chunk


@pytest.fixture(scope="module")
def torch_model():
    """The fixture pipeline's seeded trunk (`reference.seeded`), here with its seeded output layer."""
    return seeded_wespeaker()


def _mlx_model(torch_model, dtype: str = "float32", folded_bn: bool = False) -> WeSpeakerResNet34:
    """Convert through `sanitize`, under `dtype`'s default precision policy."""
    config = dataclasses.replace(WeSpeakerConfig.from_checkpoint(dict(torch_model.hparams)), folded_bn=folded_bn)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    weights = WeSpeakerResNet34.sanitize(state, config)
    model = WeSpeakerResNet34(config)
    model.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    return precision.apply(model, "embedding", precision.policy(dtype))


@pytest.fixture(scope="module")
def audio(sample) -> np.ndarray:
    """(2, CHUNK): [0, 10) s and [10, 20) s of the sample."""
    wav, _ = sample
    return np.stack([wav[:CHUNK], wav[CHUNK : 2 * CHUNK]])


@pytest.fixture(scope="module")
def masks(sample) -> dict[str, np.ndarray]:
    """Name -> (2, 589) per-frame masks for the two chunks."""
    _, rttm = sample
    turns = [line.split() for line in Path(rttm).read_text().splitlines() if line.startswith("SPEAKER")]
    centers = (np.arange(NUM_MASK_FRAMES) + 0.5) * 10.0 / NUM_MASK_FRAMES
    speaker = np.zeros((2, NUM_MASK_FRAMES), np.float32)
    for c in range(2):  # the speaker with the most speech in chunk c
        activity = {}
        for t in turns:
            start, duration, label = float(t[3]) - 10.0 * c, float(t[4]), t[7]
            active = (centers >= start) & (centers < start + duration)
            activity[label] = activity.get(label, np.zeros(NUM_MASK_FRAMES, bool)) | active
        speaker[c] = max(activity.values(), key=np.sum)
    short, tiny = np.zeros_like(speaker), np.zeros_like(speaker)
    short[:, 300:310] = 1  # 2 ResNet frames: std from two values
    tiny[:, 300:303] = 1  # 1 ResNet frame: std exactly 0
    return {"ones": np.ones_like(speaker), "speaker": speaker, "short": short, "tiny": tiny,
            "zeros": np.zeros_like(speaker)}


@pytest.fixture(scope="module")
def reference(torch_model, audio, masks) -> dict:
    """pyannote on the batch: every layer (`reference.layers`), embeddings per mask (speaker axis)."""
    names = [name for name, _ in torch_model.named_modules()
             if name.startswith("resnet.") and "shortcut" not in name and name.count(".") <= 2]
    weights = torch.from_numpy(np.stack(list(masks.values()), axis=1))  # (2, masks, 589)
    start = time.perf_counter()
    layers = embedding_layers(torch_model, torch.from_numpy(audio[:, None]), weights, names=names)
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        frames = torch.from_numpy(layers["resnet.layer4"])
        unweighted = torch_model.forward_embedding(frames).numpy()
        per_mask_2d = {k: torch_model.forward_embedding(frames, torch.from_numpy(m)).numpy() for k, m in masks.items()}
    return {"layers": layers, "embeddings": layers.pop("embedding"), "unweighted": unweighted,
            "per_mask_2d": per_mask_2d, "seconds_per_chunk": seconds / len(audio)}


def _run_mlx(model: WeSpeakerResNet34, audio: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    capture: dict[str, mx.array] = {}
    start = time.perf_counter()
    frames = model.forward_frames(mx.array(audio), capture=capture)
    mx.eval(frames)
    seconds = time.perf_counter() - start
    weights = mx.array(np.stack(list(masks.values()), axis=1))
    embeddings = model.forward_embedding(frames, weights, capture=capture)
    unweighted = model.forward_embedding(frames)
    mx.eval(embeddings, unweighted, capture)
    return {"frames": frames, "layers": {k: np.array(v.astype(mx.float32)) for k, v in capture.items()},
            "embeddings": np.array(embeddings), "unweighted": np.array(unweighted),
            "seconds_per_chunk": seconds / len(audio)}


@pytest.fixture(scope="module", params=ROUTES)
def mlx_float32(request, torch_model, audio, masks) -> dict:
    """The float32 model's outputs on each kernel route (`mlx_diar.models.kernels.route`)."""
    from mlx_diar.models import kernels

    model = _mlx_model(torch_model)
    with kernels.route(request.param):
        return _run_mlx(model, audio, masks) | {"model": model, "route": request.param}


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _check_layers(mlx_layers: dict, torch_layers: dict, label: str) -> None:
    unpaired = sorted(set(mlx_layers) - set(torch_layers) - {"embedding"})
    assert not unpaired, f"captured layers without a pyannote counterpart: {unpaired}"
    worst = 0.0
    for name, value in mlx_layers.items():
        if name == "embedding":
            continue
        ref = torch_layers[name]
        assert value.shape == ref.shape, name
        err = _rel_l2(value, ref)
        worst = max(worst, err)
        print(f"{label} {name:18s} rel L2 {err:.2e}")
        assert err <= targets.LAYER_REL_L2_F32, f"{name}: rel L2 {err:.2e}"
    print(f"{label} worst layer rel L2 {worst:.2e}")


def _check_embeddings(result: dict, reference: dict, masks: dict, threshold: float, label: str) -> None:
    cosines = {name: _cosine(result["embeddings"][:, i], reference["embeddings"][:, i]) for i, name in enumerate(masks)}
    cosines["none"] = _cosine(result["unweighted"], reference["unweighted"])
    for name, cos in cosines.items():
        print(f"{label} mask {name:8s} cosine {np.array2string(cos, precision=8)}")
        assert np.all(np.isfinite(cos)), name
        assert np.all(cos >= threshold), f"{name}: cosine {cos}"


def test_fbank_matches_pyannote(mlx_float32, reference) -> None:
    ours, ref = mlx_float32["layers"]["fbank"], reference["layers"]["fbank"]
    assert ours.shape == ref.shape == (2, 998, 80)
    err = _rel_l2(ours, ref)
    print(f"fbank max abs err {np.abs(ours - ref).max():.2e} (|fbank| max {np.abs(ref).max():.1f}), rel L2 {err:.2e}")
    assert err <= targets.LAYER_REL_L2_F32


@pytest.mark.parametrize("options", [
    {"window_type": "povey"},
    {"window_type": "hanning", "snip_edges": False},
    {"window_type": "blackman", "round_to_power_of_two": False, "frame_length": 20.0},
    {"window_type": "rectangular", "frame_shift": 12.5},
])
def test_kaldi_fbank_options(audio, options: dict) -> None:
    import torchaudio.compliance.kaldi as kaldi

    waveform = audio[:, : 2 * SAMPLE_RATE] * 32768
    ref = np.stack([kaldi.fbank(torch.from_numpy(w[None]), num_mel_bins=80, dither=0.0, **options).numpy()
                    for w in waveform])
    ours = np.array(kaldi_fbank(mx.array(waveform), **options))
    assert ours.shape == ref.shape
    assert _rel_l2(ours, ref) <= targets.LAYER_REL_L2_F32


def test_fbank_running_centering(audio) -> None:
    reference = wespeaker.BaseWeSpeakerResNet(fbank_centering_span=1.5)
    config = WeSpeakerConfig(fbank_centering_span=1.5)
    with torch.inference_mode():
        ref = reference.compute_fbank(torch.from_numpy(audio[:, None, : 4 * SAMPLE_RATE])).numpy()
    ours = np.array(WeSpeakerResNet34(config).compute_fbank(mx.array(audio[:, : 4 * SAMPLE_RATE])))
    assert _rel_l2(ours, ref) <= targets.LAYER_REL_L2_F32


def test_layers_float32(mlx_float32, reference) -> None:
    _check_layers(mlx_float32["layers"], reference["layers"], f"f32 {mlx_float32['route']}")
    print(f"seconds per 10 s chunk: mlx {mlx_float32['seconds_per_chunk']:.2f} "
          f"torch {reference['seconds_per_chunk']:.2f}")


def test_embeddings_float32(mlx_float32, reference, masks) -> None:
    _check_embeddings(mlx_float32, reference, masks, targets.EMBEDDING_COSINE_F32, "f32")


def test_two_dimensional_weights(mlx_float32, reference, masks) -> None:
    """The pipeline's call: (batch, frames) weights, one mask per waveform."""
    model, frames = mlx_float32["model"], mlx_float32["frames"]
    for name, mask in masks.items():
        ours = np.array(model.forward_embedding(frames, mx.array(mask)))
        cos = _cosine(ours, reference["per_mask_2d"][name])
        assert np.all(cos >= targets.EMBEDDING_COSINE_F32), f"{name}: {cos}"


def test_degenerate_masks_stay_finite(mlx_float32, torch_model, masks) -> None:
    """pyannote 4.0.7 returns no NaN for empty or tiny masks: zero stats give seg_1's bias."""
    index = list(masks).index("zeros")
    bias = torch_model.resnet.seg_1.bias.detach().numpy()
    np.testing.assert_allclose(mlx_float32["embeddings"][:, index], np.stack([bias, bias]), rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(mlx_float32["embeddings"]))


def test_folded_batchnorm(torch_model, audio, masks, reference, route: str) -> None:
    model = _mlx_model(torch_model, folded_bn=True)
    assert not any("bn" in k or "shortcut.1" in k for k, _ in tree_flatten(model.parameters()))
    result = _run_mlx(model, audio, masks)
    assert "resnet.conv1" not in result["layers"]  # conv output is the BN output once folded
    _check_layers(result["layers"], reference["layers"], "folded")
    _check_embeddings(result, reference, masks, targets.EMBEDDING_COSINE_F32, "folded")


@pytest.mark.parametrize("dtype", precision.REDUCED)
def test_half_precision_policy(torch_model, audio, masks, reference, dtype) -> None:
    """The default policy (mlx_diar.conversion.precision) on the first chunk only: MLX's CPU half-precision
    convolutions are slower than float32."""
    model = _mlx_model(torch_model, dtype=dtype)
    assert model.resnet.layer4[0].conv1.weight.dtype == precision.DTYPES[dtype]
    result = _run_mlx(model, audio[:1], {k: m[:1] for k, m in masks.items()})
    first = {k: reference[k][:1] for k in ("embeddings", "unweighted")}
    layer4 = _rel_l2(result["layers"]["resnet.layer4"], reference["layers"]["resnet.layer4"][:1])
    print(f"{dtype} layer4 rel L2 {layer4:.2e}, mlx seconds per chunk {result['seconds_per_chunk']:.2f}")
    _check_embeddings(result, first, masks, targets.precision_target(dtype).cosine, dtype)


def test_split_path_equals_one_call(mlx_float32, audio, masks) -> None:
    model = mlx_float32["model"]
    waveforms = mx.array(audio[:, : 2 * SAMPLE_RATE])
    weights = mx.array(np.stack([m[:, :118] for m in masks.values()], axis=1))
    one_call = model(waveforms, weights)
    split = model.forward_embedding(model.forward_frames(waveforms), weights)
    assert one_call.shape == (2, len(masks), 256)
    np.testing.assert_array_equal(np.array(one_call), np.array(split))


def test_nearest_indices_match_torch() -> None:
    for num_weights, num_frames in [(589, 125), (589, 13), (293, 125), (10, 125), (125, 125), (7, 14), (1000, 3)]:
        source = torch.arange(num_weights, dtype=torch.float32)[None, None]
        ref = torch.nn.functional.interpolate(source, size=num_frames, mode="nearest")[0, 0].long().numpy()
        np.testing.assert_array_equal(nearest_indices(num_weights, num_frames), ref)


def test_min_num_samples_matches_pyannote(torch_model, mlx_float32) -> None:
    from pyannote.audio.pipelines.speaker_verification import PyannoteAudioPretrainedSpeakerEmbedding

    model = mlx_float32["model"]
    assert model.min_num_samples == PyannoteAudioPretrainedSpeakerEmbedding(torch_model).min_num_samples
    assert model(mx.random.normal((1, model.min_num_samples))).shape == (1, 256)
    with pytest.raises(ValueError):
        model(mx.random.normal((1, model.min_num_samples - 1)))


def test_two_embedding_layers(audio) -> None:
    from pyannote.audio.models.embedding.wespeaker.resnet import ResNet34

    reference = wespeaker.WeSpeakerResNet34()
    torch.manual_seed(1)
    reference.resnet = ResNet34(80, 256, two_emb_layer=True)
    with torch.no_grad():
        reference.resnet.seg_bn_1.running_mean.normal_(0.0, 0.1)
        reference.resnet.seg_bn_1.running_var.uniform_(0.5, 1.5)
    reference.eval()
    config = WeSpeakerConfig(two_emb_layer=True)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    model = WeSpeakerResNet34(config)
    model.load_weights([(k, mx.array(v)) for k, v in WeSpeakerResNet34.sanitize(state, config).items()], strict=True)
    waveforms = audio[:, : 2 * SAMPLE_RATE]
    mask = np.zeros((2, 118), np.float32)
    mask[:, 20:90] = 1
    with torch.inference_mode():
        ref = reference(torch.from_numpy(waveforms[:, None]), weights=torch.from_numpy(mask)).numpy()
    ours = np.array(model(mx.array(waveforms), mx.array(mask)))
    assert np.all(_cosine(ours, ref) >= targets.EMBEDDING_COSINE_F32)


def test_sanitize_reports_every_problem(torch_model) -> None:
    config = WeSpeakerConfig()
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    state["resnet.extra.weight"] = np.zeros(3, np.float32)
    del state["resnet.layer2.0.shortcut.1.running_var"]
    state["resnet.seg_1.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError) as error:
        WeSpeakerResNet34.sanitize(state, config)
    message = str(error.value)
    assert "resnet.extra.weight" in message
    assert "resnet.layer2.0.shortcut.1.running_var" in message
    assert "resnet.seg_1.bias: (7,) != (256,)" in message


def test_config_round_trip(torch_model) -> None:
    config = WeSpeakerConfig.from_checkpoint(dict(torch_model.hparams))
    assert config == WeSpeakerConfig() and config.feat_dim == 80
    assert WeSpeakerConfig.from_dict(config.to_dict()) == config
    assert WeSpeakerConfig.from_checkpoint({}) == config  # pyannote's converted checkpoints store none
    with pytest.raises(ValueError, match="pooling"):
        WeSpeakerConfig.from_checkpoint({"pooling": "ASTP"})
