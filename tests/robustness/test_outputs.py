"""Outputs never destroy what is at their path (issue 23, items 1 and 5, ENOSPC, `reference --rttm DIR`).

`--rttm` of `python -m mlx_diar diarize` and `python -m reference diarize`: a FIFO, a character
device and stdout are written through, a symlink's target is rewritten and the link kept; a
directory, a block device, a socket, a dangling symlink or an input is refused before any
inference. Device nodes and FIFOs are made under the test's temporary directory only (mknod is
skipped where it is not permitted); the block device's numbers belong to no driver.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mlx_diar.__main__ as cli
from mlx_diar.errors import OptionError, OutputError
from mlx_diar.fsutil import TextOutput, atomic_write

RTTM = "SPEAKER {uri} 1 0.500 1.000 <NA> <NA> SPEAKER_00 <NA> <NA>\n"


def _wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(16000, np.float32), 16000)
    return path


@pytest.fixture
def fake_diarize(monkeypatch) -> list[str]:
    """diarize without a model or inference: each file's RTTM is one turn; returns the uris diarized."""
    calls: list[str] = []

    class Pipeline:
        def __init__(self, **kwargs) -> None:
            pass

    def diarize_one(pipeline, path, uri, args) -> str:
        calls.append(uri)
        return RTTM.format(uri=uri)

    monkeypatch.setattr("mlx_diar.runtime.pipeline.SpeakerDiarizationPipeline", Pipeline)
    monkeypatch.setattr("mlx_diar.conversion.hub.resolve_model", lambda source: source)
    monkeypatch.setattr(cli, "diarize_one", diarize_one)
    return calls


def _diarize(audio: list[Path], *options: str) -> int:
    return cli.main(["diarize", *map(str, audio), "--model", "unused", *options])


def _mknod(path: Path, mode: int, device: int) -> Path:
    try:
        os.mknod(path, mode | 0o666, device)
    except (PermissionError, OSError) as e:
        pytest.skip(f"mknod not permitted here ({e})")
    return path


def test_a_fifo_is_written_through(tmp_path, fake_diarize) -> None:
    audio = [_wav(tmp_path / "a.wav"), _wav(tmp_path / "b.wav")]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    assert _diarize(audio, "--rttm", str(fifo)) == 0
    reader.join(timeout=30)
    assert received == [RTTM.format(uri="a") + RTTM.format(uri="b")]  # each part once, in order
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_character_device_is_written_through(tmp_path, fake_diarize) -> None:
    null = _mknod(tmp_path / "null", stat.S_IFCHR, os.makedev(1, 3))  # the numbers of /dev/null
    assert _diarize([_wav(tmp_path / "a.wav")], "--rttm", str(null)) == 0
    assert stat.S_ISCHR(null.lstat().st_mode) and fake_diarize == ["a"]


@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_stdout(tmp_path, fake_diarize, capsys, target) -> None:
    assert _diarize([_wav(tmp_path / "a.wav")], "--rttm", target) == 0
    assert capsys.readouterr().out == RTTM.format(uri="a")


def test_a_symlink_keeps_being_a_link_to_the_rewritten_target(tmp_path, fake_diarize) -> None:
    target, link = tmp_path / "kept/target.rttm", tmp_path / "link.rttm"
    target.parent.mkdir()
    target.write_text("old\n")
    link.symlink_to(target)
    assert _diarize([_wav(tmp_path / "a.wav"), _wav(tmp_path / "b.wav")], "--rttm", str(link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == RTTM.format(uri="a") + RTTM.format(uri="b")
    assert sorted(p.name for p in target.parent.iterdir()) == ["target.rttm"]  # no temporary left


def _refused(tmp_path, capsys, fake_diarize, target: Path, problem: str, audio: Path | None = None) -> None:
    audio = audio or _wav(tmp_path / "a.wav")
    assert _diarize([audio], "--rttm", str(target)) == 1
    err = capsys.readouterr().err
    assert err == f"error: --rttm {target}: {problem}\n", err
    assert fake_diarize == []  # refused before any inference


def test_a_block_device_is_refused(tmp_path, capsys, fake_diarize) -> None:
    device = _mknod(tmp_path / "disk", stat.S_IFBLK, os.makedev(240, 0))  # 240: local/experimental, no driver
    _refused(tmp_path, capsys, fake_diarize, device, "is a block device; only a regular file, a FIFO, a character "
             "device or - (stdout) can take the output")
    assert stat.S_ISBLK(device.lstat().st_mode)


def test_a_socket_is_refused(tmp_path, capsys, fake_diarize) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        _refused(tmp_path, capsys, fake_diarize, path, "is a socket; only a regular file, a FIFO, a character "
                 "device or - (stdout) can take the output")
        assert stat.S_ISSOCK(path.lstat().st_mode)


def test_a_dangling_symlink_is_refused(tmp_path, capsys, fake_diarize) -> None:
    link = tmp_path / "link.rttm"
    link.symlink_to(tmp_path / "nowhere/x.rttm")
    _refused(tmp_path, capsys, fake_diarize, link, "is a symlink to a missing file; refusing to write through it")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("through_link", [False, True])
def test_an_input_is_never_the_output(tmp_path, capsys, fake_diarize, through_link) -> None:
    audio = _wav(tmp_path / "a.wav")
    before = audio.read_bytes()
    target = audio
    if through_link:
        target = tmp_path / "out.rttm"
        target.symlink_to(audio)
    _refused(tmp_path, capsys, fake_diarize, target, "is also an input; refusing to overwrite it", audio)
    assert audio.read_bytes() == before


def test_a_symlink_in_rttm_dir_fails_that_file_only(tmp_path, capsys, fake_diarize) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.rttm"
    out.mkdir()
    elsewhere.write_text("keep\n")
    (out / "a.rttm").symlink_to(elsewhere)
    assert _diarize([_wav(tmp_path / "a.wav"), _wav(tmp_path / "b.wav")], "--rttm-dir", str(out)) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {out / 'a.rttm'}: is a symlink; refusing to replace it with a file (remove it or choose another "
        "output)", "error: 1 of 2 files failed"]
    assert (out / "a.rttm").is_symlink() and elsewhere.read_text() == "keep\n"
    assert (out / "b.rttm").read_text() == RTTM.format(uri="b")


def test_disk_full_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, capsys, fake_diarize) -> None:
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "out/all.rttm"
    with pytest.raises(OutputError, match=rf"^{target}: cannot write \(No space left on device\)$"):
        atomic_write(target, "x")
    assert _diarize([_wav(tmp_path / "a.wav")], "--rttm", str(target)) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {target}: cannot write (No space left on device)",
                                                    "error: 1 of 1 files failed"]
    assert list(target.parent.iterdir()) == []


def test_text_output_streams_each_part_once(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    with TextOutput(fifo, "--rttm") as output:
        output.add("one\n")
        output.add("two\n")
    reader.join(timeout=30)
    assert received == ["one\ntwo\n"]
    with pytest.raises(OptionError, match="is a directory"):
        TextOutput(tmp_path, "--rttm")


# ---------------------------------------------------------------------------------------------- reference
@pytest.fixture
def fake_reference(monkeypatch) -> list[str]:
    """`python -m reference diarize` without pyannote: load_pipeline records its call, the run is one turn."""
    import reference.runner as runner

    calls: list[str] = []

    class Run:
        meta = {"timings": {"total": 0.0}, "labels": ["SPEAKER_00"]}

        def rttm(self, exclusive: bool = False) -> str:
            return RTTM.format(uri="a")

    monkeypatch.setattr(runner, "load_pipeline", lambda checkpoint, config=None: calls.append(checkpoint))
    monkeypatch.setattr(runner, "run_reference", lambda *args, **kwargs: Run())
    return calls


def _reference(audio: Path, *options: str) -> int:
    from reference.__main__ import main

    return main(["diarize", str(audio), "--checkpoint", "unused", *options])


@pytest.mark.parametrize("option", ["--rttm", "--bundle"])
def test_reference_refuses_a_directory_before_inference(tmp_path, capsys, fake_reference, option) -> None:
    (tmp_path / "dir").mkdir()
    assert _reference(_wav(tmp_path / "a.wav"), option, str(tmp_path / "dir")) == 1
    err = capsys.readouterr().err
    problem = "is a directory" if option == "--rttm" else "exists and is not a regular file; refusing to replace it"
    assert err.startswith("error: ") and problem in err and err.count("\n") == 1, err
    assert fake_reference == []


def test_reference_writes_through_a_symlink_and_a_fifo(tmp_path, capsys, fake_reference) -> None:
    audio = _wav(tmp_path / "a.wav")
    target, link = tmp_path / "target.rttm", tmp_path / "link.rttm"
    target.write_text("old\n")
    link.symlink_to(target)
    assert _reference(audio, "--rttm", str(link)) == 0
    assert link.is_symlink() and target.read_text() == RTTM.format(uri="a")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    assert _reference(audio, "--rttm", str(fifo)) == 0
    reader.join(timeout=30)
    assert received == [RTTM.format(uri="a")] and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_reference_audio_warnings_are_one_line(tmp_path, capsys, fake_reference) -> None:
    audio = _wav(tmp_path / "silent.wav")
    assert _reference(audio, "--rttm", str(tmp_path / "out.rttm")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"warning: {audio}: the audio is silent: no speech can be found in it"
    assert len(err) == 2 and err[1].startswith("[reference] silent.wav")
