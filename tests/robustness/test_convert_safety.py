"""The converter never destroys anything (issue 12, item 2) and writes with the user's umask (item 6)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_diar.conversion.convert import convert_pyannote_model
from mlx_diar.errors import OptionError
from mlx_diar.fsutil import atomic_directory, atomic_write


@pytest.fixture(scope="module")
def segmentation(fixture_root: Path, tmp_path_factory) -> Path:
    """A copy of the fixture's segmentation checkpoint folder (small: converts in about a second)."""
    folder = tmp_path_factory.mktemp("src") / "segmentation"
    shutil.copytree(fixture_root / "segmentation", folder)
    return folder


def _convert(source: Path, out: Path, **kwargs) -> Path:
    return convert_pyannote_model(source, out, "segmentation", **kwargs)


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_existing_non_empty_output_is_refused_without_force(segmentation: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(OptionError, match=r"exists and is not empty; pass --force"):
        _convert(segmentation, out)
    with pytest.raises(OptionError, match="does not look like an mlx-diar model directory"):
        _convert(segmentation, out, force=True)  # --force never deletes arbitrary content
    assert _tree(out) == {"notes.txt": b"precious"}


def test_force_replaces_a_model_directory(segmentation: Path, tmp_path: Path) -> None:
    out = _convert(segmentation, tmp_path / "out", dtype="float16")
    _convert(segmentation, out, force=True)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old directory left


def test_an_empty_output_directory_is_used(segmentation: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert (_convert(segmentation, tmp_path / "out") / "config.json").is_file()


@pytest.mark.parametrize("where", ["same", "inside", "containing", "file"])
def test_output_may_not_overlap_the_input(segmentation: Path, tmp_path: Path, where: str) -> None:
    source = tmp_path / "src" / "segmentation"
    shutil.copytree(segmentation, source)
    before = _tree(tmp_path / "src")
    out = {"same": source, "inside": source / "mlx", "containing": source.parent,
           "file": source / "pytorch_model.bin"}[where]
    with pytest.raises(OptionError, match="overwrite or sit inside the input"):
        _convert(source, out, force=True)
    assert _tree(tmp_path / "src") == before


def test_pipeline_converted_into_itself_is_refused(fixture_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "pipeline"
    shutil.copytree(fixture_root, root, ignore=shutil.ignore_patterns("whisperx"))
    before = _tree(root)
    for out in (root, root / "mlx"):
        with pytest.raises(OptionError, match="overwrite or sit inside the input"):
            convert_pyannote_model(root, out, "full", force=True)
    assert _tree(root) == before


def test_crashed_run_leftovers_are_cleaned_next_time(segmentation: Path, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    leftover = tmp_path / f".out.partial-{dead}-deadbeef"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".out.partial-{os.getpid()}-cafe"  # a running conversion: left alone
    live.mkdir()
    unrelated = tmp_path / ".out.backup"
    unrelated.mkdir()
    _convert(segmentation, tmp_path / "out")
    assert not leftover.exists() and live.exists() and unrelated.exists()


def test_failure_inside_leaves_the_old_directory_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"format_version": 1}')
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(out, replace=True) as work:
            (work / "config.json").write_text("new")
            raise RuntimeError("boom")
    assert (out / "config.json").read_text() == '{"format_version": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_outputs_follow_the_umask(fixture_root: Path, tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = convert_pyannote_model(fixture_root, tmp_path / "full", "full", shard_size=2_000_000)
        rttm = atomic_write(tmp_path / "x.rttm", "SPEAKER x 1 0.000 1.000 <NA> <NA> A <NA> <NA>\n")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*out.iterdir(), rttm]}
    assert {"config.json", "plda.safetensors", "model.safetensors.index.json", "x.rttm"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(segmentation: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    argv = [sys.executable, "-m", "mlx_diar.conversion.convert", "--pytorch-path", str(segmentation), "--mlx-path", str(out),
            "--model-type", "segmentation"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {out}: exists and is not empty")
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True)
    assert "Traceback" in debug.stderr and debug.stderr.rstrip().splitlines()[-1] == proc.stderr.strip()
