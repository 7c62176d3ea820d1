"""PyTorch zip checkpoints read without torch, and without running any code they name.

Since torch 1.6, `torch.save` writes a zip archive: `PREFIX/data.pkl`, a pickle whose
persistent ids name storages, and `PREFIX/data/<key>`, each storage's raw bytes (in the byte
order `PREFIX/byteorder` names; little-endian when absent). `load` unpickles `data.pkl` with a
`pickle.Unpickler` whose `find_class` answers only an allow-list: torch's tensor rebuild
functions and typed storages (implemented here over NumPy), `collections.OrderedDict`, and what
the caller adds (`mlx_diar.conversion.checkpoint` adds pyannote's and Lightning's plain-data
classes as inert stand-ins). Any other global is refused with the file and the global named.

Tensors come back as NumPy arrays (C-contiguous copies; storage offset, sizes and strides
honoured) with the storage's dtype, except bfloat16, which NumPy lacks: it becomes float32,
exactly (a bfloat16 is the upper half of a float32). Sizes are bounded: `data.pkl` and every
storage entry by their declared size and compression ratio (zip bombs), every storage by the
element count its persistent id declares, every tensor by its storage (a view may not reach past
it nor hold more elements than it). Not read here: torch's legacy non-zip format (torch < 1.6 or
`_use_new_zipfile_serialization=False`), TorchScript archives and quantized tensors.
"""

from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import io
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlx_diar.errors import CheckpointError

MAX_PICKLE_BYTES = 64 << 20  # data.pkl of community-1's checkpoints: < 30 kB
MAX_COMPRESSION_RATIO = 32  # torch stores its entries uncompressed; a zip bomb inflates ~1000x
MAX_DIMS = 32


@dataclasses.dataclass(frozen=True)
class StorageType:
    """Stand-in for a typed storage class (`torch.FloatStorage`, ...): names the element dtype."""

    name: str
    dtype: np.dtype
    bfloat16: bool = False  # raw uint16 on disk, float32 once read


# torch's typed storages by element type; torch.UntypedStorage, quantized and complex-half ones are refused
STORAGE_TYPES: dict[str, StorageType] = {name: StorageType(name, np.dtype(dtype)) for name, dtype in {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16"}.items()}
STORAGE_TYPES["BFloat16Storage"] = StorageType("BFloat16Storage", np.dtype("<u2"), bfloat16=True)


class Storage:
    """One storage of the archive (`PREFIX/data/<key>`), read when a tensor first needs it."""

    def __init__(self, archive: "_Archive", kind: StorageType, key: str, numel: int) -> None:
        self.archive, self.kind, self.key, self.numel = archive, kind, key, numel
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The storage's elements, 1-D, in native byte order."""
        if self._array is None:
            dtype = self.kind.dtype.newbyteorder(">" if self.archive.big_endian else "<")
            raw = self.archive.entry(f"data/{self.key}", self.numel * dtype.itemsize)
            self._array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
        return self._array


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _ints(value: Any, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_DIMS or not all(
            type(v) is int and v >= 0 for v in value):
        raise CheckpointError(f"{where}: a tensor's {field} = {str(value)[:80]} is not a tuple of at most "
                              f"{MAX_DIMS} non-negative integers")
    return value


class _Archive:
    """The zip archive of one checkpoint: its `data.pkl` prefix, byte order and bounded entry reads."""

    def __init__(self, path: Path, zf: zipfile.ZipFile) -> None:
        self.path, self.zf = path, zf
        pickles = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: a PyTorch zip checkpoint holds one PREFIX/data.pkl, found "
                                  f"{len(pickles)}: not a torch.save archive")
        self.prefix = pickles[0][: -len("data.pkl")]
        order = self.entry("byteorder", None, limit=16).decode("ascii", "replace") if (
            f"{self.prefix}byteorder" in zf.NameToInfo) else "little"
        if order not in ("little", "big"):
            raise CheckpointError(f"{path}: {self.prefix}byteorder = {order[:16]!r}, expected 'little' or 'big'")
        self.big_endian = order == "big"
        self.storages: dict[str, Storage] = {}

    def entry(self, name: str, size: int | None, limit: int | None = None) -> bytes:
        """`PREFIX/name`, checked to declare `size` bytes (or at most `limit`) and not to inflate absurdly."""
        full = self.prefix + name
        info = self.zf.NameToInfo.get(full)
        if info is None:
            raise CheckpointError(f"{self.path}: {full} is missing from the archive")
        if size is not None and info.file_size != size:
            raise CheckpointError(f"{self.path}: {full} holds {info.file_size} bytes, its storage declares {size}")
        if limit is not None and info.file_size > limit:
            raise CheckpointError(f"{self.path}: {full} declares {info.file_size} bytes, more than {limit}")
        if info.file_size > max(info.compress_size * MAX_COMPRESSION_RATIO, 1 << 20):
            raise CheckpointError(f"{self.path}: {full} inflates {info.compress_size} bytes to {info.file_size} "
                                  "(a zip bomb?)")
        return self.zf.read(info)

    def storage(self, pid: Any) -> Storage:
        """The storage a persistent id ('storage', StorageType, key, location, numel) names."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: persistent id {str(pid)[:80]} is not a torch storage reference")
        _, kind, key, location, numel = pid
        if not isinstance(kind, StorageType):
            raise CheckpointError(f"{self.path}: storage {key!r} has type {str(kind)[:60]}, not a typed torch storage "
                                  f"({', '.join(sorted(STORAGE_TYPES))})")
        if not (isinstance(key, str) and re.fullmatch(r"\w{1,64}", key) and isinstance(location, str)
                and type(numel) is int and numel >= 0):
            raise CheckpointError(f"{self.path}: malformed storage reference {str(pid)[:80]}")
        storage = self.storages.setdefault(key, Storage(self, kind, key, numel))
        if (storage.kind, storage.numel) != (kind, numel):
            raise CheckpointError(f"{self.path}: storage {key!r} is referenced as {storage.kind.name}[{storage.numel}] "
                                  f"and as {kind.name}[{numel}]")
        return storage


def _rebuild_tensor(path: Path, storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 over NumPy: a C-contiguous copy of the strided view."""
    where = str(path)
    if not isinstance(storage, Storage):
        raise CheckpointError(f"{where}: a tensor is built on {type(storage).__name__}, not on an archive storage")
    size, stride = _ints(size, "size", where), _ints(stride, "stride", where)
    if type(offset) is not int or offset < 0 or len(size) != len(stride) or not isinstance(requires_grad, bool):
        raise CheckpointError(f"{where}: malformed tensor (offset {offset!r}, size {size}, stride {stride})")
    if backward_hooks or metadata:
        raise CheckpointError(f"{where}: a tensor carries backward hooks or metadata, which are not read")
    count = math.prod(size)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if count else offset - 1
    if count > storage.numel or last >= storage.numel:
        raise CheckpointError(f"{where}: a tensor of size {size}, stride {stride} at offset {offset} does not fit "
                              f"its storage {storage.key!r} of {storage.numel} elements")
    if count == 0:
        array = np.empty(size, dtype=storage.kind.dtype.newbyteorder("="))
    else:
        base = storage.array()
        view = np.lib.stride_tricks.as_strided(base[offset:], shape=size,
                                               strides=[s * base.itemsize for s in stride], writeable=False)
        array = np.array(view, order="C")
    return _bfloat16_to_float32(array) if storage.kind.bfloat16 else array


def _rebuild_parameter(path: Path, data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> np.ndarray:
    """torch._utils._rebuild_parameter(_with_state): the tensor itself."""
    if not isinstance(data, np.ndarray) or backward_hooks or state:
        raise CheckpointError(f"{path}: a parameter that is not a plain tensor (or carries hooks or state)")
    return data


class _Unpickler(pickle.Unpickler):
    """Unpickles `data.pkl` with only `allowed` globals; storages come from the archive."""

    def __init__(self, data: bytes, archive: _Archive, allowed: Mapping[str, Any]) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.archive, self.allowed = archive, allowed

    def find_class(self, module: str, name: str) -> Any:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # protocol 2 names
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full not in self.allowed:
            raise CheckpointError(refusal(self.archive.path, full, self.allowed))
        return self.allowed[full]

    def persistent_load(self, pid: Any) -> Storage:
        return self.archive.storage(pid)


def refusal(path: Path, name: str, allowed: Any) -> str:
    """The message of a refused global (also used for torch's own refusals)."""
    names = sorted(set(allowed) - set(TENSOR_GLOBALS)) + ["torch's tensor rebuild functions and typed storages"]
    return (f"{path}: refused to load: the checkpoint references {name}, which is not in the allow-list "
            f"({', '.join(names)}). Loading it could execute arbitrary code.")


TENSOR_GLOBALS = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                  "torch._utils._rebuild_parameter_with_state", *(f"torch.{name}" for name in STORAGE_TYPES))


def torch_globals(path: Path) -> dict[str, Any]:
    """The torch names every checkpoint may use (TENSOR_GLOBALS), and `collections.OrderedDict`."""
    tensor = lambda *args: _rebuild_tensor(path, *args)  # noqa: E731 - bound to the file for messages
    parameter = lambda *args: _rebuild_parameter(path, *args)  # noqa: E731
    return {"torch._utils._rebuild_tensor_v2": tensor, "torch._utils._rebuild_parameter": parameter,
            "torch._utils._rebuild_parameter_with_state": parameter,
            "collections.OrderedDict": collections.OrderedDict,
            **{f"torch.{name}": kind for name, kind in STORAGE_TYPES.items()}}


def is_zip_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a zip archive (torch's format since 1.6); the legacy format is not."""
    return zipfile.is_zipfile(path)


def load(path: str | Path, extra_globals: Mapping[str, Any]) -> Any:
    """Unpickle the zip checkpoint at `path` with torch's tensor globals plus `extra_globals` allowed.

    Returns the saved object with every tensor a NumPy array. Raises CheckpointError naming the file
    and the problem: a global outside the allow-list, a malformed archive, storage or tensor.
    """
    path = Path(path)
    allowed = {**torch_globals(path), **extra_globals}
    try:
        with zipfile.ZipFile(path) as zf:
            archive = _Archive(path, zf)
            data = archive.entry("data.pkl", None, limit=MAX_PICKLE_BYTES)
            return _Unpickler(data, archive, allowed).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            KeyError, IndexError, OverflowError, MemoryError, RecursionError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
