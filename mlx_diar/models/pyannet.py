"""Mirrors pyannote.audio.models.segmentation.PyanNet

SincNet > (Bi)LSTM > feed-forward > classifier > activation (log-softmax for
powerset / mono-label, sigmoid for multi-label). MLX has no bidirectional or
multi-layer LSTM: each layer here holds a forward and a time-reversed LSTM whose
outputs are concatenated; both directions run in one recurrent loop
(`kernels.lstm_recurrence`, or `numpy_kernels.bilstm` on the CPU's accelerated route).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from math import comb
from typing import Any, Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from pyannote.core import SlidingWindow

from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.cpu import numpy_kernels
from mlx_diar.models.kernels import accelerated, lstm_recurrence
from mlx_diar.cpu.pyannet_numpy import NumpyPyanNet
from mlx_diar.models.sincnet import SincNet, sinc_filters
from mlx_diar.conversion.precision import compute_dtypes

# pyannote's PyanNet.SINCNET_DEFAULTS / LSTM_DEFAULTS / LINEAR_DEFAULTS, used where a
# checkpoint's hyper_parameters leave a key out (as pyannote's merge_dict does).
_SINCNET_DEFAULTS = {"stride": 10}
_LSTM_DEFAULTS = {"hidden_size": 128, "num_layers": 2, "bidirectional": True, "monolithic": True}
_LINEAR_DEFAULTS = {"hidden_size": 128, "num_layers": 2}

_PROBLEMS = ("BINARY_CLASSIFICATION", "MONO_LABEL_CLASSIFICATION", "MULTI_LABEL_CLASSIFICATION")
_DERIVED = ("num_classes", "num_speakers", "powerset")


@dataclass
class PyanNetConfig:
    """Hyper-parameters (checkpoint ``hyper_parameters``) and task specifications of a PyanNet."""

    sample_rate: int = SAMPLE_RATE
    sincnet_stride: int = 10
    lstm_hidden_size: int = 128
    lstm_num_layers: int = 2
    lstm_bidirectional: bool = True
    lstm_monolithic: bool = True
    linear_hidden_size: int = 128
    linear_num_layers: int = 2
    problem: str = "MONO_LABEL_CLASSIFICATION"
    classes: list[str] = field(default_factory=lambda: ["speaker#1", "speaker#2", "speaker#3"])
    powerset_max_classes: int | None = 2
    duration: float = 10.0
    warm_up: tuple[float, float] = (0.0, 0.0)
    resolution: str = "FRAME"
    permutation_invariant: bool = True

    def __post_init__(self) -> None:
        if self.problem not in _PROBLEMS:
            raise ValueError(f"unsupported problem {self.problem!r}; expected one of {_PROBLEMS}")
        if self.powerset_max_classes is not None and self.problem != "MONO_LABEL_CLASSIFICATION":
            raise ValueError("powerset_max_classes only makes sense with MONO_LABEL_CLASSIFICATION")
        self.classes = list(self.classes)
        self.warm_up = tuple(self.warm_up)

    @property
    def powerset(self) -> bool:
        """Whether the output is in powerset space (pyannote's Specifications.powerset)."""
        return self.powerset_max_classes is not None

    @property
    def num_speakers(self) -> int:
        """Number of regular classes (speakers)."""
        return len(self.classes)

    @property
    def num_classes(self) -> int:
        """Output dimension: number of powerset classes, or of regular classes."""
        if not self.powerset:
            return self.num_speakers
        return sum(comb(self.num_speakers, k) for k in range(self.powerset_max_classes + 1))

    @property
    def lstm_output_size(self) -> int:
        """Feature size of the LSTM output."""
        return self.lstm_hidden_size * (2 if self.lstm_bidirectional else 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: the fields plus the derived num_classes, num_speakers, powerset."""
        out = dataclasses.asdict(self)
        out["warm_up"] = list(self.warm_up)
        out.update({name: getattr(self, name) for name in _DERIVED})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PyanNetConfig:
        """Inverse of `to_dict`; derived keys, when present, must agree with the fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - set(_DERIVED))
        if unknown:
            raise ValueError(f"unknown PyanNetConfig keys: {unknown}")
        config = cls(**{k: v for k, v in data.items() if k in names})
        wrong = [k for k in _DERIVED if k in data and data[k] != getattr(config, k)]
        if wrong:
            raise ValueError(f"inconsistent derived PyanNetConfig keys: {wrong}")
        return config

    @classmethod
    def from_checkpoint(cls, hyper_parameters: dict[str, Any], specifications: dict[str, Any]) -> PyanNetConfig:
        """Build from a checkpoint's ``hyper_parameters`` and its specifications as a plain dict.

        ``specifications`` keys: problem (enum name), resolution (enum name), duration,
        warm_up, classes, powerset_max_classes, permutation_invariant (others are ignored).
        """
        sincnet = {**_SINCNET_DEFAULTS, **(hyper_parameters.get("sincnet") or {})}
        lstm = {**_LSTM_DEFAULTS, **(hyper_parameters.get("lstm") or {})}
        linear = {**_LINEAR_DEFAULTS, **(hyper_parameters.get("linear") or {})}
        return cls(
            sample_rate=int(hyper_parameters.get("sample_rate", SAMPLE_RATE)),
            sincnet_stride=int(sincnet["stride"]),
            lstm_hidden_size=int(lstm["hidden_size"]),
            lstm_num_layers=int(lstm["num_layers"]),
            lstm_bidirectional=bool(lstm["bidirectional"]),
            lstm_monolithic=bool(lstm["monolithic"]),
            linear_hidden_size=int(linear["hidden_size"]),
            linear_num_layers=int(linear["num_layers"]),
            problem=str(specifications["problem"]),
            classes=[str(c) for c in specifications["classes"]],
            powerset_max_classes=specifications.get("powerset_max_classes"),
            duration=float(specifications["duration"]),
            warm_up=tuple(float(w) for w in specifications.get("warm_up") or (0.0, 0.0)),
            resolution=str(specifications.get("resolution", "FRAME")),
            permutation_invariant=bool(specifications.get("permutation_invariant", False)),
        )


class LSTM(nn.Module):
    """One-direction LSTM with mlx.nn.LSTM's parameters: Wx (4H,D), Wh (4H,H), bias (4H,).

    The input projection of all time steps is one matmul; the recurrence is
    `kernels.lstm_recurrence`. Activations are time-major (T,B,F) inside the LSTM stack.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.Wx = mx.zeros((4 * hidden_size, input_size))
        self.Wh = mx.zeros((4 * hidden_size, hidden_size))
        self.bias = mx.zeros((4 * hidden_size,))

    def input_projection(self, x: mx.array) -> mx.array:
        """(..., D) -> (..., 4H): x Wx^T + bias for every time step."""
        return mx.addmm(self.bias, x, self.Wx.T)

    def __call__(self, x: mx.array) -> mx.array:
        """Time-major (T,B,D) -> (T,B,H) hidden states, from zero initial state."""
        return lstm_recurrence(self.input_projection(x)[:, None], self.Wh.T[None])[:, 0]


class BiLSTMLayer(nn.Module):
    """One layer of torch's nn.LSTM: ``forward`` and, if bidirectional, ``backward`` (run on the
    time-reversed input); outputs concatenated [forward, backward]."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = True):
        super().__init__()
        self.forward = LSTM(input_size, hidden_size)
        if bidirectional:
            self.backward = LSTM(input_size, hidden_size)

    def time_major(self, x: mx.array) -> mx.array:
        """(T,B,D) -> (T,B,2H), or (T,B,H) when not bidirectional; both directions in one recurrence."""
        if "backward" not in self:
            return self.forward(x)
        if accelerated(x.dtype):
            weights = (np.stack([np.array(getattr(d, name)) for d in (self.forward, self.backward)])
                       for name in ("Wx", "Wh", "bias"))
            return mx.array(numpy_kernels.bilstm(np.array(x), *weights))
        xp = mx.stack([self.forward.input_projection(x), self.backward.input_projection(x[::-1])], axis=1)
        hidden = lstm_recurrence(xp, mx.stack([self.forward.Wh.T, self.backward.Wh.T]))
        return mx.concatenate([hidden[:, 0], hidden[::-1, 1]], axis=-1)

    def __call__(self, x: mx.array) -> mx.array:
        """Batch-first (B,T,D) -> (B,T,2H), as torch's nn.LSTM(batch_first=True)."""
        return self.time_major(x.transpose(1, 0, 2)).transpose(1, 0, 2)


class _CaptureAsMLX(dict):
    """A ``capture`` for `NumpyPyanNet` that stores each output into `target` as an MLX array as
    soon as it is produced (so a timing capture sees every layer end when it does)."""

    def __init__(self, target: dict[str, mx.array]) -> None:
        super().__init__()
        self.target = target

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.target[name] = mx.array(value)


class PyanNet(nn.Module):
    """PyanNet segmentation model: (batch, samples) waveforms -> (batch, frames, num_classes)."""

    def __init__(self, config: PyanNetConfig):
        super().__init__()
        self.config = config
        self.sincnet = SincNet(sample_rate=config.sample_rate, stride=config.sincnet_stride)
        hidden = config.lstm_hidden_size
        self.lstm = [
            BiLSTMLayer(60 if k == 0 else config.lstm_output_size, hidden, config.lstm_bidirectional)
            for k in range(config.lstm_num_layers)
        ]
        sizes = [config.lstm_output_size] + [config.linear_hidden_size] * config.linear_num_layers
        self.linear = [nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:])]
        self.classifier = nn.Linear(sizes[-1], config.num_classes)
        self.compute = compute_dtypes("segmentation")

    def set_compute_dtypes(self, compute: Mapping[str, mx.Dtype]) -> None:
        """Compute dtype per precision block (`mlx_diar.conversion.precision`); parameters must already be cast."""
        self.compute = compute

    def activation(self, scores: mx.array) -> mx.array:
        """log-softmax (mono-label, incl. powerset) or sigmoid (binary / multi-label)."""
        if self.config.problem == "MONO_LABEL_CLASSIFICATION":
            return nn.log_softmax(scores, axis=-1)
        return mx.sigmoid(scores)

    def __call__(self, waveforms: mx.array, capture: dict[str, mx.array] | None = None) -> mx.array:
        """(batch, samples) or (batch, 1, samples) mono waveforms -> (batch, frames, num_classes).

        Each precision block (sincnet, lstm, linear, classifier, activation) computes in
        its dtype of ``self.compute`` (`mlx_diar.conversion.precision`). When ``capture`` is a dict, it receives
        the outputs of every pyannote sub-module under its module path, in torch layout:
        ``sincnet.*`` (B,C,T), ``lstm.k`` and ``lstm`` (B,T,F), ``linear.k`` (pre-activation),
        ``classifier`` (logits), ``activation``. Where `numpy_forward` applies, that forward runs.
        """
        forward = self.numpy_forward()
        if forward is None:
            return self.head(self.features(waveforms, capture), capture)
        return mx.array(forward(np.array(waveforms), None if capture is None else _CaptureAsMLX(capture)))

    def numpy_forward(self) -> NumpyPyanNet | None:
        """This model's float32 NumPy forward (a snapshot of its weights) where it runs instead of
        the MLX layers: on the accelerated kernel route (`kernels.accelerated`: "auto", the CPU)
        with every block and parameter in float32 (no quantized unit); None elsewhere."""
        if not accelerated(mx.float32) or any(d != mx.float32 for d in self.compute.values()):
            return None
        params = tree_flatten(self.parameters())
        if any(value.dtype != mx.float32 for _, value in params):
            return None
        config = self.config
        return NumpyPyanNet(weights={name: np.array(value) for name, value in params},
                            sincnet_stride=config.sincnet_stride, num_lstm_layers=config.lstm_num_layers,
                            bidirectional=config.lstm_bidirectional, num_linear_layers=config.linear_num_layers,
                            log_softmax=config.problem == "MONO_LABEL_CLASSIFICATION")

    def features(self, waveforms: mx.array, capture: dict[str, mx.array] | None = None,
                 sincnet_batch: int | None = None) -> mx.array:
        """SincNet: waveforms -> (batch, frames, 60) in the LSTM's dtype.

        With ``sincnet_batch``, SincNet runs over that many waveforms at a time and the parts are
        concatenated: one part at a time holds SincNet's large activations.
        """
        if waveforms.ndim == 3:
            waveforms = waveforms.squeeze(1)
        x = waveforms.astype(self.compute["sincnet"])[..., None]
        if sincnet_batch and capture is None and x.shape[0] > sincnet_batch:
            x = mx.concatenate([self.sincnet(x[start:start + sincnet_batch])
                                for start in range(0, x.shape[0], sincnet_batch)])
        else:
            x = self.sincnet(x, capture)
        return x.astype(self.compute["lstm"])

    def head(self, features: mx.array, capture: dict[str, mx.array] | None = None) -> mx.array:
        """SincNet features (batch, frames, 60) -> LSTM stack > linear > classifier > activation."""
        dtypes = self.compute
        x = features.transpose(1, 0, 2)  # time-major through the LSTM stack
        for k, layer in enumerate(self.lstm):
            x = layer.time_major(x)
            if capture is not None:
                capture[f"lstm.{k}"] = x.transpose(1, 0, 2)
        x = x.transpose(1, 0, 2)
        if capture is not None:
            capture["lstm"] = x
        x = x.astype(dtypes["linear"])
        for k, linear in enumerate(self.linear):
            x = linear(x)
            if capture is not None:
                capture[f"linear.{k}"] = x
            x = nn.leaky_relu(x, negative_slope=0.01)
        x = self.classifier(x.astype(dtypes["classifier"]))
        if capture is not None:
            capture["classifier"] = x
        x = self.activation(x.astype(dtypes["activation"]))
        if capture is not None:
            capture["activation"] = x
        return x

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for ``num_samples`` input samples."""
        return self.sincnet.num_frames(num_samples)

    def receptive_field_size(self, num_frames: int = 1) -> int:
        """Number of input samples seen by ``num_frames`` consecutive output frames."""
        return self.sincnet.receptive_field_size(num_frames)

    def receptive_field_center(self, frame: int = 0) -> int:
        """Index of the input sample at the center of frame ``frame``'s receptive field."""
        return self.sincnet.receptive_field_center(frame)

    @property
    def receptive_field(self) -> SlidingWindow:
        """Output frames as a SlidingWindow in seconds (pyannote's Model.receptive_field)."""
        size = self.receptive_field_size(1)
        step = self.receptive_field_size(2) - size
        start = self.receptive_field_center(0) - (size - 1) / 2
        sr = self.config.sample_rate
        return SlidingWindow(start=start / sr, duration=size / sr, step=step / sr)

    @staticmethod
    def sanitize(state_dict: dict[str, np.ndarray], config: PyanNetConfig) -> dict[str, np.ndarray]:
        """Map a pyannote PyanNet ``state_dict`` (NumPy arrays) to this module's parameter names.

        The sinc filterbank parameters become ``sincnet.conv1d.0.weight``; Conv1d weights go
        channels-last; LSTM ``bias_ih + bias_hh`` become one bias. Raises ValueError listing
        unknown keys, missing keys and shape mismatches.
        """
        expected = {k: v.shape for k, v in tree_flatten(PyanNet(config).parameters())}
        out: dict[str, np.ndarray] = {}
        unknown: list[str] = []
        missing: list[str] = []
        sinc: dict[str, np.ndarray] = {}
        broken: list[str] = []  # source tensors whose shapes cannot be combined
        lstm_bias: dict[str, dict[str, np.ndarray]] = {}
        for key, value in state_dict.items():
            value = np.asarray(value, dtype=np.float32)
            if key.startswith("sincnet.conv1d.0.filterbank."):
                sinc[key.rsplit(".", 1)[1]] = value
                continue
            lstm = _lstm_key(key, config.lstm_monolithic)
            if lstm is None:
                name = key
                if re.fullmatch(r"sincnet\.conv1d\.\d+\.weight", key) and value.ndim == 3:  # else a mismatch
                    value = value.transpose(0, 2, 1)
            elif lstm[1] == "bias":
                lstm_bias.setdefault(lstm[0] + ".bias", {})[lstm[2]] = value
                continue
            else:
                name = f"{lstm[0]}.{lstm[1]}"
            if name in expected and name not in out:
                out[name] = value
            else:
                unknown.append(key)

        sinc_parts = ("low_hz_", "band_hz_", "window_", "n_")
        unknown += [f"sincnet.conv1d.0.filterbank.{p}" for p in sinc if p not in sinc_parts]
        if all(p in sinc for p in sinc_parts):
            try:
                filters = sinc_filters(*(sinc[p] for p in sinc_parts), sample_rate=config.sample_rate)
                out["sincnet.conv1d.0.weight"] = filters.transpose(0, 2, 1)
            except ValueError:
                broken += [f"sincnet.conv1d.0.filterbank.{p}: {sinc[p].shape}" for p in sinc_parts]
        else:
            missing += [f"sincnet.conv1d.0.filterbank.{p}" for p in sinc_parts if p not in sinc]
        reported = {"sincnet.conv1d.0.weight"}  # its missing sources are already listed
        for name, parts in lstm_bias.items():
            if name not in expected:
                unknown += [f"{name} ({p})" for p in parts]
            elif len(parts) != 2:
                missing += [f"{name} ({p})" for p in ("bias_ih", "bias_hh") if p not in parts]
                reported.add(name)
            elif parts["bias_ih"].shape != parts["bias_hh"].shape:
                broken.append(f"{name}: bias_ih {parts['bias_ih'].shape} and bias_hh {parts['bias_hh'].shape}")
                reported.add(name)
            else:
                out[name] = parts["bias_ih"] + parts["bias_hh"]
        missing += sorted(set(expected) - set(out) - reported)
        mismatched = [
            f"{k}: {out[k].shape} vs expected {expected[k]}"
            for k in sorted(out)
            if k in expected and tuple(out[k].shape) != tuple(expected[k])
        ] + broken
        if unknown or missing or mismatched:
            raise ValueError(
                "PyanNet state_dict does not match the config:"
                f"\n  unknown keys: {sorted(unknown)}"
                f"\n  missing keys: {sorted(set(missing))}"
                f"\n  shape mismatches: {mismatched}"
            )
        return out


_MONOLITHIC = re.compile(r"lstm\.(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")
_SPLIT = re.compile(r"lstm\.(\d+)\.(weight_ih|weight_hh|bias_ih|bias_hh)_l0(_reverse)?")


def _lstm_key(key: str, monolithic: bool) -> tuple[str, str, str] | None:
    """torch LSTM key -> (MLX direction path, MLX parameter name, torch kind); None if not LSTM.

    Monolithic nn.LSTM: ``lstm.weight_ih_l{k}[_reverse]``; split (monolithic=False):
    ``lstm.{k}.weight_ih_l0[_reverse]``.
    """
    match = (_MONOLITHIC if monolithic else _SPLIT).fullmatch(key)
    if match is None:
        return None
    kind, layer, reverse = (
        (match[1], match[2], match[3]) if monolithic else (match[2], match[1], match[3])
    )
    path = f"lstm.{layer}.{'backward' if reverse else 'forward'}"
    name = {"weight_ih": "Wx", "weight_hh": "Wh"}.get(kind, "bias")
    return path, name, kind
