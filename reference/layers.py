"""Per-layer activations of pyannote models through forward hooks, named by module path."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def _to_numpy(value) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return None


class LayerRecorder:
    """Records the outputs of the named sub-modules of `model` during one forward call.

    Tuple outputs keep their first tensor for `nn.LSTM` (its output sequence) and are
    stored element-wise as `name.<i>` otherwise.
    """

    def __init__(self, model: torch.nn.Module, names: Iterable[str] | None = None) -> None:
        wanted = set(names) if names is not None else None
        self.layers: dict[str, np.ndarray] = {}
        self._modules = [(n, m) for n, m in model.named_modules() if n and (wanted is None or n in wanted)]
        self._handles: list = []

    def _hook(self, name: str, module: torch.nn.Module):
        def hook(_module, _inputs, output):
            if isinstance(output, tuple):
                if isinstance(module, torch.nn.LSTM):
                    output = output[0]
                else:
                    for i, item in enumerate(output):
                        if (array := _to_numpy(item)) is not None:
                            self.layers[f"{name}.{i}"] = array
                    return
            if (array := _to_numpy(output)) is not None:
                self.layers[name] = array

        return hook

    def __enter__(self) -> "LayerRecorder":
        for name, module in self._modules:
            self._handles.append(module.register_forward_hook(self._hook(name, module)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def lstm_per_layer(lstm: torch.nn.LSTM, inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """Outputs of each layer of a monolithic (multi-layer) nn.LSTM, as `lstm.<k>`.

    A monolithic nn.LSTM exposes only its last layer to hooks; this replays it layer by
    layer with single-layer LSTMs holding the sliced `*_l<k>` weights (same arithmetic).
    """
    outputs: dict[str, np.ndarray] = {}
    x = inputs
    directions = ["", "_reverse"] if lstm.bidirectional else [""]
    with torch.inference_mode():
        for k in range(lstm.num_layers):
            layer = torch.nn.LSTM(x.shape[-1], lstm.hidden_size, num_layers=1, batch_first=lstm.batch_first,
                                  bidirectional=lstm.bidirectional, dtype=x.dtype)
            state = {}
            for d in directions:
                for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    state[f"{p}_l0{d}"] = getattr(lstm, f"{p}_l{k}{d}")
            layer.load_state_dict(state)
            x, _ = layer(x)
            outputs[f"lstm.{k}"] = x.detach().float().cpu().numpy()
    return outputs


def segmentation_layers(model: torch.nn.Module, waveforms: torch.Tensor) -> dict[str, np.ndarray]:
    """Every named layer of a PyanNet on `waveforms` (batch, 1, samples), LSTM layers included."""
    captured: dict[str, torch.Tensor] = {}
    def keep_lstm_input(module, inputs) -> None:  # a pre-hook returning a value would replace the input
        captured.setdefault("in", inputs[0])

    handle = model.lstm.register_forward_pre_hook(keep_lstm_input)
    try:
        with LayerRecorder(model) as recorder, torch.inference_mode():
            model(waveforms)
    finally:
        handle.remove()
    layers = dict(recorder.layers)
    if isinstance(model.lstm, torch.nn.LSTM):
        layers.update(lstm_per_layer(model.lstm, captured["in"]))
    return layers


def segmentation_float64(model: torch.nn.Module, waveforms: np.ndarray, layers: bool = False):
    """A PyanNet's output on (batch, samples) waveforms computed in float64 (on a copy of the model);
    with `layers`, every named layer as `segmentation_layers` records them (stored in float32: that rounding,
    ~6e-8 relative, is far below the float32 errors it measures).

    The ground truth against which the float32 rounding of either implementation is measured:
    how far pyannote's own float32 output is from it depends on the CPU's kernels.
    """
    import copy

    model64 = copy.deepcopy(model).double().eval()
    inputs = torch.from_numpy(np.asarray(waveforms, dtype=np.float64))[:, None]
    if layers:
        return segmentation_layers(model64, inputs)
    with torch.inference_mode():
        return model64(inputs).numpy()


EMBEDDING_STAGES = ("resnet.conv1", "resnet.bn1", "resnet.layer1", "resnet.layer2", "resnet.layer3",
                    "resnet.layer4", "resnet.pool", "resnet.seg_1")


def embedding_layers(model: torch.nn.Module, waveforms: torch.Tensor, weights: torch.Tensor | None = None,
                     names: Iterable[str] | None = EMBEDDING_STAGES) -> dict[str, np.ndarray]:
    """fbank, the named ResNet layers and the embedding of a WeSpeakerResNet34 (names=None: all modules)."""
    with LayerRecorder(model, names=names) as recorder, torch.inference_mode():
        embeddings = model(waveforms, weights=weights)
        fbank = model.compute_fbank(waveforms)
    layers = dict(recorder.layers)
    layers["fbank"] = fbank.float().cpu().numpy()
    layers["embedding"] = embeddings.float().cpu().numpy()
    return layers
