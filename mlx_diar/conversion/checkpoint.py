"""Safe reading of pyannote.audio / Lightning checkpoints, without torch.

PyTorch zip checkpoints (every `torch.save` since torch 1.6) are read by the restricted reader of
`mlx_diar.conversion.torch_zip`: no torch, no pickle code run. The handful of classes that
pyannote and Lightning checkpoints hold are mapped to small stand-ins defined here (plain data,
no code runs), so reading a checkpoint needs neither pyannote.audio nor Lightning. Anything else
in the pickle is refused, naming the class. Only torch's legacy non-zip format is handed to
`torch.load(weights_only=True)` with the same allow-list, and only when torch is installed.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np

from mlx_diar.conversion import torch_zip
from mlx_diar.errors import CheckpointError

REFERENCE_EXTRA_HINT = 'pip install "mlx-diar[reference]"'


class Problem(enum.Enum):
    """Stand-in for pyannote.audio.core.task.Problem."""

    BINARY_CLASSIFICATION = 0
    MONO_LABEL_CLASSIFICATION = 1
    MULTI_LABEL_CLASSIFICATION = 2
    REPRESENTATION = 3
    REGRESSION = 4


class Resolution(enum.Enum):
    """Stand-in for pyannote.audio.core.task.Resolution."""

    FRAME = 1
    CHUNK = 2


class _Record:
    """Stand-in for a pickled plain-data object: keeps its attributes, runs no code."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) protocol
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state or {})

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.__dict__.items()}


class Specifications(_Record):
    """Stand-in for pyannote.audio.core.task.Specifications."""


class Introspection(_Record):
    """Stand-in for pyannote.audio.core.model.Introspection (pyannote < 3)."""


class _OmegaConfNode(_Record):
    """Stand-in for omegaconf containers/metadata found in optimizer states."""


class TorchVersion(str):
    """Stand-in for torch.torch_version.TorchVersion (a version string)."""


def _plain(value: Any) -> Any:
    """Convert stand-ins and enums to JSON-friendly values."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, _Record):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if type(value).__name__ == "TorchVersion":
        return str(value)
    return value


# Exactly the globals seen in pyannote 2.x/3.x/4.x and lightning 1.x/2.x checkpoints
# (protocol-2 pickles name builtins as `__builtin__.dict`, `__builtin__.long`: read as below).
_STAND_INS: dict[str, Any] = {
    "pyannote.audio.core.task.Specifications": Specifications,
    "pyannote.audio.core.task.Problem": Problem,
    "pyannote.audio.core.task.Resolution": Resolution,
    "pyannote.audio.core.model.Introspection": Introspection,
    "omegaconf.listconfig.ListConfig": _OmegaConfNode,
    "omegaconf.dictconfig.DictConfig": _OmegaConfNode,
    "omegaconf.base.ContainerMetadata": _OmegaConfNode,
    "omegaconf.base.Metadata": _OmegaConfNode,
    "omegaconf.nodes.AnyNode": _OmegaConfNode,
}
_PLAIN_GLOBALS: dict[str, Any] = {"collections.OrderedDict": collections.OrderedDict,
                                  "collections.defaultdict": collections.defaultdict, "typing.Any": typing.Any,
                                  "builtins.dict": dict, "builtins.list": list, "builtins.int": int}
_ALLOWED: dict[str, Any] = {**_STAND_INS, **_PLAIN_GLOBALS, "torch.torch_version.TorchVersion": TorchVersion}


def allowed_globals() -> list[str]:
    """Names of the classes a checkpoint may reference (beyond torch's tensor machinery)."""
    return sorted(_ALLOWED)


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` with the same allow-list; tensors become NumPy arrays.

    The reader of torch's legacy non-zip format, which `torch_zip` does not read; CheckpointError
    when torch is not installed.
    """
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: not a PyTorch zip checkpoint; torch's legacy (non-zip) format needs torch, "
                              f"which is not installed: {REFERENCE_EXTRA_HINT}") from None
    import pickle

    from torch.torch_version import TorchVersion as RealTorchVersion

    safe = [(cls, name) for name, cls in _STAND_INS.items()] + list(_PLAIN_GLOBALS.values()) + [RealTorchVersion]
    try:
        with torch.serialization.safe_globals(safe):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        match = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise CheckpointError(torch_zip.refusal(path, match.group(1) if match else "an unknown global",
                                                _ALLOWED)) from None
    except Exception as e:  # any parse failure of an untrusted file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None

    def numpy(value: Any) -> Any:
        """Tensors as NumPy arrays (bfloat16 as float32), in place in dicts and lists."""
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        if isinstance(value, (dict, list)):
            for key in value.keys() if isinstance(value, dict) else range(len(value)):
                value[key] = numpy(value[key])
        return tuple(numpy(v) for v in value) if isinstance(value, tuple) else value

    return numpy(checkpoint)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a pyannote checkpoint without executing arbitrary pickle code.

    Returns the checkpoint dict with tensors as NumPy arrays (bfloat16 as float32, exactly) and
    pyannote/lightning objects as inert stand-ins. Zip checkpoints are read by `torch_zip` (no
    torch); the legacy non-zip format by torch, when installed. Raises CheckpointError for
    unreadable files and for any class outside the allow-list (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    checkpoint = torch_zip.load(path, _ALLOWED) if torch_zip.is_zip_checkpoint(path) else _torch_load(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a pyannote checkpoint (no 'state_dict')")
    if "pyannote.audio" not in checkpoint:
        raise CheckpointError(f"{path}: not a pyannote.audio checkpoint (no 'pyannote.audio' entry)")
    return checkpoint


@dataclasses.dataclass
class CheckpointInfo:
    """What a converter needs from a checkpoint, as plain data (no torch objects)."""

    path: Path
    sha256: str
    module: str
    klass: str
    hyper_parameters: dict[str, Any]
    specifications: dict[str, Any] | None
    state_dict: dict[str, np.ndarray]
    versions: dict[str, str]


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Safely load a checkpoint and return its architecture, hyper-parameters and weights (NumPy)."""
    checkpoint = load_checkpoint(path)
    try:
        meta = checkpoint["pyannote.audio"]
        specs = meta.get("specifications")
        state = dict(checkpoint["state_dict"])
        bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, np.ndarray)
                                                   and v.dtype.kind in "biufc")]
        if bad:
            raise CheckpointError(f"{path}: state_dict[{str(bad[0])[:80]!r}] is not a numeric tensor")
        return CheckpointInfo(
            path=Path(path),
            sha256=sha256sum(path),
            module=meta["architecture"]["module"],
            klass=meta["architecture"]["class"],
            hyper_parameters=_plain(dict(checkpoint.get("hyper_parameters", {}))),
            specifications=_plain(specs) if specs is not None else None,
            state_dict=state,
            versions=_plain(meta.get("versions", {})),
        )
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not a pyannote checkpoint: pyannote.audio.architecture or state_dict "
                              f"malformed ({type(e).__name__}: {e})") from None
