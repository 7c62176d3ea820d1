"""Safe reading of pyannote.audio / lightning checkpoints (torch imported lazily).

`torch.load(weights_only=True)` with an explicit allow-list: the handful of classes
that pyannote and lightning checkpoints hold are mapped to small stand-ins defined
here (plain data, no code runs), so reading a checkpoint needs torch but neither
pyannote.audio nor lightning. Anything else in the pickle is refused, naming the class.
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


# Exactly the globals seen in pyannote 2.x/3.x/4.x and lightning 1.x/2.x checkpoints.
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
_PLAIN_GLOBALS: tuple[Any, ...] = (collections.OrderedDict, collections.defaultdict, typing.Any, dict, list, int)


def allowed_globals() -> list[str]:
    """Names of the classes a checkpoint may reference (beyond torch's tensor machinery)."""
    return sorted(_STAND_INS) + ["collections.OrderedDict", "collections.defaultdict", "typing.Any",
                                 "torch.torch_version.TorchVersion"]


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"Reading a PyTorch checkpoint needs torch, which is not installed: {REFERENCE_EXTRA_HINT}"
        ) from e
    return torch


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a pyannote checkpoint without executing arbitrary pickle code.

    Returns the checkpoint dict with tensors as torch tensors and pyannote/lightning
    objects as inert stand-ins. Raises CheckpointError for unreadable files and for
    any class outside the allow-list (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    torch = _import_torch()
    import pickle

    from torch.torch_version import TorchVersion

    safe = [(cls, name) for name, cls in _STAND_INS.items()] + list(_PLAIN_GLOBALS) + [TorchVersion]
    try:
        with torch.serialization.safe_globals(safe):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        match = re.search(r"GLOBAL ([\w.]+)", str(e))
        name = match.group(1) if match else "an unknown global"
        raise CheckpointError(
            f"{path}: refused to load: the checkpoint references {name}, which is not in the "
            f"allow-list of pyannote/lightning classes ({', '.join(allowed_globals())}). "
            "Loading it could execute arbitrary code."
        ) from None
    except Exception as e:  # any parse failure of an untrusted file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
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
    meta = checkpoint["pyannote.audio"]
    specs = meta.get("specifications")
    state = {k: v.detach().cpu().numpy() for k, v in checkpoint["state_dict"].items()}
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
