"""The restricted reader of PyTorch zip checkpoints (`mlx_diar.conversion.torch_zip`).

Against torch, bit for bit: every checkpoint the project knows (the fixture's segmentation,
embedding and whisperx models; checkpoints beside the speakrs clips when present) and checkpoints
saved here with every storage dtype and view layout. Without torch: hand-built archives that try to
run code, lie about sizes or inflate, each refused with the file and the problem named.
"""

from __future__ import annotations

import enum
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlx_diar.conversion import checkpoint, torch_zip
from mlx_diar.conversion.checkpoint import _plain, _torch_load, load_checkpoint
from mlx_diar.errors import CheckpointError

SPEAKRS_DIRS = (Path(__file__).parent / "data/speakrs", Path("/work/shared/fixtures/speakrs-community1"))
SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def known_checkpoints(fixture_root: Path) -> dict[str, Path]:
    """Every checkpoint the project knows: the fixture's three, and any beside the speakrs clips."""
    found = {f"fixture/{role}": fixture_root / role / "pytorch_model.bin"
             for role in ("segmentation", "embedding", "whisperx")}
    for folder in SPEAKRS_DIRS:
        if folder.is_dir():
            found |= {f"speakrs/{p.relative_to(folder)}": p for p in sorted(folder.rglob("*")) if p.suffix in SUFFIXES}
    return found


def _tensors(mine: Any, theirs: Any, where: str = "", seen: set[int] | None = None) -> list[tuple[str, Any, Any]]:
    """Walk both objects in step: (path, mine, torch's) for every array; assert everything else is equal.

    Stand-ins are compared by class name and attributes (omegaconf nodes point back to their parents:
    each object is walked once)."""
    seen = set() if seen is None else seen
    if id(theirs) in seen:
        return []
    seen.add(id(theirs))
    if isinstance(theirs, np.ndarray):
        assert isinstance(mine, np.ndarray), where
        return [(where, mine, theirs)]
    assert type(mine).__name__ == type(theirs).__name__, where
    if isinstance(theirs, dict):
        assert list(mine) == list(theirs), where
        return [t for k in theirs for t in _tensors(mine[k], theirs[k], f"{where}/{k}", seen)]
    if isinstance(theirs, (list, tuple)):
        assert len(mine) == len(theirs), where
        return [t for k, (a, b) in enumerate(zip(mine, theirs)) for t in _tensors(a, b, f"{where}[{k}]", seen)]
    if isinstance(theirs, (enum.Enum, str, int, float, bool, type(None))):
        assert _plain(mine) == _plain(theirs), where
        return []
    if isinstance(theirs, type) or not hasattr(theirs, "__dict__"):  # `int`, `typing.Any` as values
        assert mine is theirs, where
        return []
    assert list(vars(mine)) == list(vars(theirs)), where
    return [t for k, v in vars(theirs).items() for t in _tensors(vars(mine)[k], v, f"{where}.{k}", seen)]


def byte_equality(path: Path) -> tuple[int, int, bool]:
    """(tensors, bytes, identical) of the restricted reader against torch.load(weights_only=True)."""
    pairs = _tensors(torch_zip.load(path, checkpoint._ALLOWED), _torch_load(path))
    identical = all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes() for _, a, b in pairs)
    return len(pairs), sum(b.nbytes for _, _, b in pairs), identical


def test_identical_to_torch_on_every_known_checkpoint(fixture_root: Path) -> None:
    pytest.importorskip("torch")
    rows = {name: byte_equality(path) for name, path in known_checkpoints(fixture_root).items()}
    print("\n| checkpoint | tensors | bytes | identical |\n|---|---|---|---|")
    for name, (count, size, same) in rows.items():
        print(f"| {name} | {count} | {size} | {'y' if same else 'n'} |")
    assert all(same for _, _, same in rows.values()), rows
    assert rows["fixture/whisperx"][0] > 54  # the optimizer states' tensors too, not only the state_dict


def test_every_storage_dtype_and_view_layout_matches_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5) / 7
    saved = {
        "state_dict": {
            "transposed": base.transpose(0, 2),  # non-contiguous view of a shared storage
            "sliced": base[1:, ::2, 1:4],  # storage offset and strides
            "expanded_row": base[0, 0],
            "scalar": torch.tensor(3.5, dtype=torch.float64),
            "empty": torch.zeros(0, 4),
            "param": torch.nn.Parameter(torch.randn(2, 3)),
            **{str(dtype).removeprefix("torch."): (torch.arange(-6, 6) % 5).to(dtype).reshape(3, 4).t()
               for dtype in (torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16, torch.int32,
                             torch.int64, torch.bool, torch.complex64, torch.complex128)},
            "bf16_extremes": torch.tensor([1e38, -3e-39, float("inf"), float("nan"), 1 / 3], dtype=torch.bfloat16),
        },
        "pyannote.audio": {"versions": {"torch": torch.__version__}},
    }
    path = tmp_path / "layouts.bin"
    torch.save(saved, path)
    count, _, same = byte_equality(path)
    assert same and count == len(saved["state_dict"])
    state = load_checkpoint(path)["state_dict"]
    assert state["bfloat16"].dtype == np.float32 and state["transposed"].flags.c_contiguous
    assert np.array_equal(state["bf16_extremes"], saved["state_dict"]["bf16_extremes"].float().numpy(), equal_nan=True)


def test_legacy_format_goes_to_torch_only_when_installed(tmp_path: Path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "legacy.bin"
    torch.save({"state_dict": {"w": torch.ones(2, 2)}, "pyannote.audio": {}}, path,
               _use_new_zipfile_serialization=False)
    assert not torch_zip.is_zip_checkpoint(path)
    assert load_checkpoint(path)["state_dict"]["w"].tobytes() == np.ones((2, 2), np.float32).tobytes()
    monkeypatch.setitem(sys.modules, "torch", None)  # as in a base install
    with pytest.raises(CheckpointError, match="legacy \\(non-zip\\) format needs torch") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_reads_without_torch(fixture_root: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    info = checkpoint.read_checkpoint(fixture_root / "whisperx/pytorch_model.bin")
    assert info.state_dict["classifier.weight"].shape == (3, 128) and info.versions["torch"] == "1.10.0+cu102"


# ------------------------------------------------------------------------------------ hand-built archives
class Global:
    """A global named by module and name, pickled as GLOBAL without importing it."""

    def __init__(self, dotted: str) -> None:
        self.module, _, self.name = dotted.rpartition(".")

    def __call__(self, *args):  # pickle asks the reducer's function to be callable
        raise AssertionError("never called here")


class Call:
    """Pickles as REDUCE: `func(*args)`."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Ref:
    """A persistent storage reference ('storage', torch.<kind>, key, location, numel)."""

    def __init__(self, key: str, numel: int, kind: str = "FloatStorage", pid: Any = None) -> None:
        self.pid = pid or ("storage", Global(f"torch.{kind}"), key, "cpu", numel)


class _Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Global] = lambda self, obj: self.write(f"c{obj.module}\n{obj.name}\n".encode())

    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, Ref) else None


def tensor(ref: Ref, size: tuple, stride: tuple, offset: int = 0, *extra: Any) -> Call:
    return Call(Global("torch._utils._rebuild_tensor_v2"), ref, offset, size, stride, False,
                Call(Global("collections.OrderedDict")), *extra)


def archive(path: Path, obj: Any = None, storages: dict[str, bytes] | None = None, raw_pickle: bytes | None = None,
            prefix: str = "archive/", compression: int = zipfile.ZIP_STORED, extra: dict[str, bytes] | None = None) -> Path:
    """A torch-style zip: PREFIX/data.pkl (protocol 2) and PREFIX/data/<key> for each storage."""
    if raw_pickle is None:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=2).dump(obj)
        raw_pickle = buffer.getvalue()
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr(f"{prefix}data.pkl", raw_pickle)
        for key, data in (storages or {}).items():
            zf.writestr(f"{prefix}data/{key}", data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def checkpoint_with(state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"state_dict": Call(Global("collections.OrderedDict"), list(state.items())), "pyannote.audio": {},
            **extra}


def test_hand_built_archive_reads_with_views(tmp_path: Path) -> None:
    data = np.arange(12, dtype="<f4")
    path = archive(tmp_path / "ok.bin", checkpoint_with({"t": tensor(Ref("0", 12), (3, 2), (1, 3), 2)}),
                   {"0": data.tobytes()})
    got = load_checkpoint(path)["state_dict"]["t"]
    want = np.lib.stride_tricks.as_strided(data[2:], (3, 2), (4, 12))
    assert got.tobytes() == np.ascontiguousarray(want).tobytes() and got.shape == (3, 2)


def test_big_endian_archives_are_swapped(tmp_path: Path) -> None:
    data = np.array([1.5, -2.25, 3e-8], dtype="<f8")
    path = archive(tmp_path / "be.bin", checkpoint_with({"t": tensor(Ref("0", 3, "DoubleStorage"), (3,), (1,))}),
                   {"0": data.astype(">f8").tobytes()}, extra={"archive/byteorder": b"big"})
    got = load_checkpoint(path)["state_dict"]["t"]
    assert got.dtype == np.float64 and got.dtype.isnative and np.array_equal(got, data)


_EXEC = b"\x80\x02cbuiltins\nexec\nX\x0b\x00\x00\x00open('x','w')\x85R."
_STACK_GLOBAL_EVAL = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x8c\x011\x94\x85R."


@pytest.mark.parametrize("payload, named", [
    (Call(Global("posix.system"), "echo pwned"), "posix.system"),
    (Call(Global("__builtin__.eval"), "1"), "builtins.eval"),  # protocol-2 names are mapped, then refused
    (Global("torch._utils._rebuild_qtensor"), "torch._utils._rebuild_qtensor"),
    (Global("torch.UntypedStorage"), "torch.UntypedStorage"),
    (Global("builtins.dict.fromkeys"), "builtins.dict.fromkeys"),
    (Call(Global("collections.OrderedDict.__getattribute__"), "x"), "collections.OrderedDict.__getattribute__"),
    (Global("pyannote.audio.core.model.Model"), "pyannote.audio.core.model.Model"),
])
def test_globals_outside_the_allow_list_are_refused(tmp_path: Path, payload: Any, named: str) -> None:
    path = archive(tmp_path / "evil.bin", checkpoint_with({}, payload=payload))
    with pytest.raises(CheckpointError, match="allow-list") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and f"references {named}," in str(e.value)


@pytest.mark.parametrize("raw, named", [(_EXEC, "builtins.exec"), (_STACK_GLOBAL_EVAL, "builtins.eval")])
def test_raw_exploit_pickles_are_refused(tmp_path: Path, raw: bytes, named: str) -> None:
    path = archive(tmp_path / "evil.bin", raw_pickle=raw)
    with pytest.raises(CheckpointError, match=f"references {named}, which is not in the allow-list"):
        load_checkpoint(path)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("case, problem", [
    ("past_the_storage", "does not fit its storage"),
    ("more_elements_than_storage", "does not fit its storage"),
    ("negative_stride", "non-negative integers"),
    ("storage_bytes_lie", "holds 8 bytes, its storage declares 16"),
    ("missing_storage", "archive/data/0 is missing"),
    ("not_a_storage_id", "not a torch storage reference"),
    ("key_path", "malformed storage reference"),
    ("same_key_two_types", "referenced as FloatStorage"),
    ("hooks", "backward hooks or metadata"),
])
def test_malformed_tensors_are_refused(tmp_path: Path, case: str, problem: str) -> None:
    four = np.zeros(4, "<f4").tobytes()
    tensors = {
        "past_the_storage": tensor(Ref("0", 4), (2, 2), (2, 1), 1),
        "more_elements_than_storage": tensor(Ref("0", 4), (1 << 40,), (0,)),
        "negative_stride": tensor(Ref("0", 4), (2,), (-1,), 3),
        "storage_bytes_lie": tensor(Ref("0", 4), (4,), (1,)),
        "missing_storage": tensor(Ref("0", 4), (4,), (1,)),
        "not_a_storage_id": tensor(Ref("0", 4, pid=("module", "os")), (4,), (1,)),
        "key_path": tensor(Ref("../../etc/passwd", 4), (4,), (1,)),
        "same_key_two_types": [tensor(Ref("0", 4), (4,), (1,)), tensor(Ref("0", 2, "DoubleStorage"), (2,), (1,))],
        "hooks": tensor(Ref("0", 4), (4,), (1,), 0, {"m": 1}),
    }
    storages = {} if case == "missing_storage" else {"0": four[:8] if case == "storage_bytes_lie" else four}
    path = archive(tmp_path / f"{case}.bin", checkpoint_with({"t": tensors[case]}), storages)
    with pytest.raises(CheckpointError, match=problem) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_zip_bombs_and_odd_archives_are_refused(tmp_path: Path) -> None:
    zeros = bytes(8 << 20)
    bomb = archive(tmp_path / "bomb.bin", checkpoint_with({"t": tensor(Ref("0", len(zeros) // 4), (len(zeros) // 4,),
                                                                         (1,))}),
                   {"0": zeros}, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_checkpoint(bomb)
    two = archive(tmp_path / "two.bin", checkpoint_with({}), extra={"other/data.pkl": b"."})
    with pytest.raises(CheckpointError, match="one PREFIX/data.pkl, found 2"):
        load_checkpoint(two)
    with pytest.raises(CheckpointError, match="byteorder"):
        load_checkpoint(archive(tmp_path / "order.bin", checkpoint_with({}), extra={"archive/byteorder": b"middle"}))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(archive(tmp_path / "truncated.bin", raw_pickle=b"\x80\x02}q\x00(X"))
    with pytest.raises(CheckpointError, match="not a numeric tensor"):
        checkpoint.read_checkpoint(archive(tmp_path / "str.bin", checkpoint_with(
            {"w": "text"}, **{"pyannote.audio": {"architecture": {"module": "m", "class": "C"}}})))
