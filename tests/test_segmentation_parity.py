"""MLX PyanNet (mlx_diar.models.pyannet) against pyannote.audio's PyanNet, run in this process.

Real checkpoints of the offline fixture pipeline: segmentation-3.0 (powerset, 10 s) and
whisperx's segmentation v2 (multilabel, 5 s). Inputs are slices of pyannote's bundled
sample; every layer is compared with the same-named pyannote module, recorded by
`reference.layers`. The speakrs fixtures (real community-1 segmentation of two clips) are
an external target.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path

import mlx_diar  # noqa: F401  (loads OpenBLAS before MLX)
import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
import torch
from pyannote.audio import Model

from harness import targets
from mlx_diar.conversion import precision
from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.conversion.checkpoint import read_checkpoint
from mlx_diar.runtime.inference import chunk_batches
from mlx_diar.models import Powerset, PyanNet, PyanNetConfig
from mlx_diar.models.pyannet import BiLSTMLayer
from reference.layers import segmentation_float64, segmentation_layers

pytestmark = pytest.mark.parity

SPEAKRS = Path(__file__).parent / "data" / "speakrs"
SLICE_STARTS = {"segmentation": (0.0, 8.5, 19.0), "whisperx": (2.0, 13.0, 24.5)}  # seconds


@pytest.fixture(scope="module")
def checkpoints(fixture_root: Path) -> dict[str, Path]:
    """Paths of the two real segmentation checkpoints of the fixture pipeline."""
    return {name: fixture_root / name / "pytorch_model.bin" for name in SLICE_STARTS}


@dataclass
class Pair:
    """One checkpoint loaded both ways."""

    torch_model: torch.nn.Module
    state_dict: dict[str, np.ndarray]
    config: PyanNetConfig
    weights: dict[str, np.ndarray]

    def mlx_model(self, dtype: str = "float32") -> PyanNet:
        """The model under `dtype`'s default precision policy (float32: the exact port)."""
        model = PyanNet(self.config)
        model.load_weights([(k, mx.array(v)) for k, v in self.weights.items()], strict=True)
        precision.apply(model, "segmentation", precision.policy(dtype))
        mx.eval(model.parameters())
        return model


@functools.cache
def load_pair(path: Path) -> Pair:
    """The checkpoint read by the converter's safe loader (MLX side) and by pyannote (torch side)."""
    info = read_checkpoint(path)
    config = PyanNetConfig.from_checkpoint(info.hyper_parameters, info.specifications)
    torch_model = Model.from_pretrained(path).eval()
    return Pair(torch_model, info.state_dict, config, PyanNet.sanitize(info.state_dict, config))


@pytest.fixture(scope="module", params=["segmentation", "whisperx"])
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pair(checkpoints: dict[str, Path], name: str) -> Pair:
    return load_pair(checkpoints[name])


@pytest.fixture(scope="module")
def chunks(pair: Pair, name: str, sample) -> np.ndarray:
    """(3, samples) float32: three different slices of the bundled sample, model duration each."""
    wav, _ = sample
    n = int(pair.config.duration * SAMPLE_RATE)
    return np.stack([wav[int(s * SAMPLE_RATE): int(s * SAMPLE_RATE) + n] for s in SLICE_STARTS[name]])


@pytest.fixture(scope="module")
def reference(pair: Pair, chunks: np.ndarray) -> dict[str, np.ndarray]:
    """Every named pyannote module's output, the monolithic LSTM's layers included (`reference.layers`)."""
    return segmentation_layers(pair.torch_model, torch.from_numpy(chunks)[:, None])


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def decisions(scores: np.ndarray, config: PyanNetConfig) -> np.ndarray:
    """Per-frame decision: argmax class (mono-label / powerset) or active speakers (p > 0.5)."""
    if config.problem == "MONO_LABEL_CLASSIFICATION":
        return scores.argmax(axis=-1)
    return scores > 0.5


def frame_agreement(a: np.ndarray, b: np.ndarray, config: PyanNetConfig) -> float:
    da, db = decisions(a, config), decisions(b, config)
    same = da == db if da.ndim == a.ndim - 1 else np.all(da == db, axis=-1)
    return float(same.mean())


def to_numpy(x: mx.array) -> np.ndarray:
    return np.array(x.astype(mx.float32))


def best_time(fn, repeat: int = 2) -> float:
    """Best wall-clock seconds of ``repeat`` calls (this machine is shared)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_config_matches_pyannote(pair: Pair) -> None:
    model, config = pair.torch_model, pair.config
    assert config.num_classes == model.dimension
    assert config.powerset == model.specifications.powerset
    assert config.num_speakers == len(model.specifications.classes)
    assert PyanNetConfig.from_dict(config.to_dict()) == config
    mlx_model = PyanNet(config)
    for num_samples in (1000, 52623, int(config.duration * SAMPLE_RATE), 416247):
        assert mlx_model.num_frames(num_samples) == model.num_frames(num_samples)
    ours, theirs = mlx_model.receptive_field, model.receptive_field
    assert (ours.start, ours.duration, ours.step) == (theirs.start, theirs.duration, theirs.step)


def test_sanitize_reports_bad_state_dicts(pair: Pair) -> None:
    bad = dict(pair.state_dict)
    bad["lstm.weight_ih_l9"] = bad.pop("lstm.weight_ih_l0")
    del bad["lstm.bias_hh_l1_reverse"]
    del bad["sincnet.conv1d.0.filterbank.n_"]
    bad["classifier.weight"] = bad["classifier.weight"][:, :5]
    bad["foo.bar"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError) as error:
        PyanNet.sanitize(bad, pair.config)
    message = str(error.value)
    for expected in ("lstm.weight_ih_l9", "foo.bar", "lstm.0.forward.Wx", "bias_hh",
                     "filterbank.n_", "classifier.weight"):
        assert expected in message


def test_sanitize_split_lstm_checkpoint(pair: Pair) -> None:
    """monolithic=False checkpoints name layers lstm.{k}.weight_ih_l0; same weights result."""
    split = {
        re.sub(r"^lstm\.(\w+)_l(\d+)", r"lstm.\2.\1_l0", key): value for key, value in pair.state_dict.items()
    }
    config = PyanNetConfig.from_dict({**pair.config.to_dict(), "lstm_monolithic": False})
    weights = PyanNet.sanitize(split, config)
    assert weights.keys() == pair.weights.keys()
    assert all(np.array_equal(weights[k], pair.weights[k]) for k in weights)


def test_float32_parity(pair: Pair, chunks: np.ndarray, reference: dict[str, np.ndarray], name: str,
                        route: str) -> None:
    model = pair.mlx_model()
    capture: dict[str, mx.array] = {}
    scores = model(mx.array(chunks), capture)
    mx.eval(scores, capture)
    mlx_s = best_time(lambda: mx.eval(model(mx.array(chunks))))
    with torch.inference_mode():
        torch_s = best_time(lambda: pair.torch_model(torch.from_numpy(chunks)[:, None]))

    ours, theirs = to_numpy(scores), reference["activation"]
    max_abs = float(np.abs(ours - theirs).max())
    agreement = frame_agreement(ours, theirs, pair.config)
    errors = {layer: rel_l2(to_numpy(capture[layer]), reference[layer]) for layer in capture}
    print(f"\n[{name} float32, {route} kernels] {chunks.shape[0]} x {pair.config.duration:g} s: max abs {max_abs:.2e}, "
          f"frame agreement {agreement:.4f}; mlx {mlx_s:.2f} s, pyannote {torch_s:.2f} s")
    for layer, error in errors.items():
        print(f"  {layer:<22} rel L2 {error:.2e}")

    truth = segmentation_float64(pair.torch_model, chunks, layers=True)
    own = {layer: rel_l2(reference[layer], truth[layer]) for layer in errors}
    mine = {layer: rel_l2(to_numpy(capture[layer]), truth[layer]) for layer in errors}
    print(f"  against pyannote in float64 (rel L2), pyannote float32 / MLX float32: "
          + ", ".join(f"{layer} {own[layer]:.1e}/{mine[layer]:.1e}" for layer in ("sincnet", "lstm.0", "activation")))

    assert set(capture) <= set(reference)
    assert {"sincnet", "lstm", "classifier", "activation"} <= set(capture)
    assert agreement >= targets.SEGMENTATION_ARGMAX_AGREEMENT_F32
    too_far = {layer: (own[layer], mine[layer]) for layer in errors if mine[layer] > targets.segmentation_f32_bound(own[layer])}
    assert not too_far, too_far
    # the per-layer torch rebuild of the monolithic LSTM is itself exact
    last = f"lstm.{pair.config.lstm_num_layers - 1}"
    assert rel_l2(reference[last], reference["lstm"]) < 1e-6


@pytest.mark.parametrize("value", [0.0, 0.3])
def test_digital_silence_matches_pyannote(pair: Pair, chunks: np.ndarray, value: float, route: str) -> None:
    """A chunk constant over its whole duration (beside real ones in the batch): pyannote's
    convolutions keep it exactly constant, and so must the decisions here (see SincNet)."""
    batch = np.concatenate([np.full((1, chunks.shape[1]), value, np.float32), chunks[:1]])
    ours = to_numpy(pair.mlx_model()(mx.array(batch)))
    with torch.inference_mode():
        theirs = pair.torch_model(torch.from_numpy(batch)[:, None]).numpy()
    truth = segmentation_float64(pair.torch_model, batch)
    own, mine = rel_l2(theirs[0], truth[0]), rel_l2(ours[0], truth[0])
    print(f"\n[{value}] constant chunk against pyannote in float64 (rel L2): pyannote float32 {own:.1e}, "
          f"MLX {mine:.1e}; real chunk against pyannote float32: max abs {np.abs(ours[1] - theirs[1]).max():.1e}")
    assert frame_agreement(ours[:1], theirs[:1], pair.config) == 1.0
    assert frame_agreement(ours[1:], theirs[1:], pair.config) >= targets.SEGMENTATION_ARGMAX_AGREEMENT_F32
    assert mine <= targets.segmentation_f32_bound(own)


def test_sincnet_sub_batches(pair: Pair, chunks: np.ndarray) -> None:
    """SincNet over a few chunks at a time (as the pipeline runs it), the LSTM over all: same scores."""
    model = pair.mlx_model()
    whole = to_numpy(model(mx.array(chunks)))
    parts = to_numpy(model.head(model.features(mx.array(chunks), sincnet_batch=2)))
    assert chunks.shape[0] > 2
    assert rel_l2(parts, whole) <= targets.LAYER_REL_L2_F32


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_layer_matches_torch(bidirectional: bool, route: str) -> None:
    """One (bi)LSTM layer with random weights against torch.nn.LSTM (covers lstm_bidirectional=False),
    with the recurrence on each kernel route (NumPy on the CPU's "auto", compiled MLX steps on "mlx")."""
    torch.manual_seed(0)
    reference = torch.nn.LSTM(12, 8, bidirectional=bidirectional, batch_first=True)
    params = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    layer = BiLSTMLayer(12, 8, bidirectional=bidirectional)
    for direction, suffix in (("forward", ""), ("backward", "_reverse"))[: 1 + bidirectional]:
        layer[direction].update({
            "Wx": mx.array(params[f"weight_ih_l0{suffix}"]),
            "Wh": mx.array(params[f"weight_hh_l0{suffix}"]),
            "bias": mx.array(params[f"bias_ih_l0{suffix}"] + params[f"bias_hh_l0{suffix}"]),
        })
    x = torch.randn(2, 30, 12)
    with torch.inference_mode():
        expected = reference(x)[0].numpy()
    assert rel_l2(np.array(layer(mx.array(x.numpy()))), expected) <= targets.LAYER_REL_L2_F32


@pytest.mark.parametrize("dtype", precision.REDUCED)
def test_half_precision_policy(
    pair: Pair, chunks: np.ndarray, reference: dict[str, np.ndarray], name: str, dtype: str
) -> None:
    """The default policy's frame agreement with pyannote float32 meets the variant's target."""
    theirs = reference["activation"]
    model = pair.mlx_model(dtype)
    assert model.classifier.weight.dtype == precision.DTYPES[dtype]  # reduced by the default policy
    assert model.lstm[0].forward.Wh.dtype == mx.float32  # kept float32: precision.KEEP_FLOAT32
    ours = to_numpy(model(mx.array(chunks)))
    agreement = frame_agreement(ours, theirs, pair.config)
    print(f"\n[{name} {dtype}] max abs {np.abs(ours - theirs).max():.2e}, frame agreement {agreement:.4f}")
    assert agreement >= targets.precision_target(dtype).frames


@pytest.mark.parametrize("clip, expected", [("test_short.wav", "short_segmentation_data.npy"),
                                            ("test.wav", "pipeline_segmentation_data.npy")])
def test_speakrs_community1_segmentation(checkpoints: dict[str, Path], clip: str, expected: str, route: str) -> None:
    """Hard multilabel segmentation (10 s windows, 1 s step) equals community-1's, frame for frame."""
    pair = load_pair(checkpoints["segmentation"])
    config = pair.config
    wav, sr = sf.read(SPEAKRS / clip, dtype="float32")
    assert sr == SAMPLE_RATE
    chunks = np.concatenate(list(chunk_batches(wav, int(config.duration * SAMPLE_RATE), SAMPLE_RATE, batch_size=1 << 20)))  # 1 s step
    scores = pair.mlx_model()(mx.array(chunks))
    ours = Powerset(config.num_speakers, config.powerset_max_classes).to_multilabel(to_numpy(scores))
    target = np.load(SPEAKRS / expected)
    assert ours.shape == target.shape
    differ = int(np.any(ours != target, axis=-1).sum())
    print(f"\n[{clip}] {len(chunks)} chunks: {differ} of {ours.shape[0] * ours.shape[1]} frames differ")
    assert differ == 0


def test_numpy_forward_matches_mlx_layers(pair: Pair, chunks: np.ndarray) -> None:
    """The float32 NumPy forward that `PyanNet` runs on the CPU against its MLX layers (the MLX
    route), sub-module by sub-module; and where the NumPy forward does not apply."""
    from mlx_diar.models import kernels

    model = pair.mlx_model()
    forward = model.numpy_forward()
    assert forward is not None
    ours: dict[str, np.ndarray] = {}
    scores = forward(chunks, ours)
    with kernels.route("mlx"):
        assert model.numpy_forward() is None
        layers: dict[str, mx.array] = {}
        expected = to_numpy(model(mx.array(chunks), layers))
    assert set(ours) == set(layers)
    worst = {name: rel_l2(ours[name], to_numpy(layers[name])) for name in ours}
    assert max(worst.values()) <= targets.LAYER_REL_L2_F32, worst
    assert rel_l2(scores, expected) <= targets.LAYER_REL_L2_F32
    assert pair.mlx_model("float16").numpy_forward() is None
