"""`python -m harness compare` on bad inputs: each a one-line error naming the file, raised before any
inference (the tests make inference itself fail loudly), shown without a traceback unless `--debug`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness import compare
from harness.metrics import AnnotationError, load_rttm, load_uem, reference_for
from mlx_diar.errors import AudioError, MlxDiarError, OptionError

RTTM_LINE = "SPEAKER {uri} 1 {start} {duration} <NA> <NA> {speaker} <NA> <NA>\n"


@pytest.fixture(autouse=True)
def no_inference(monkeypatch):
    """Every input check must happen before the models are even loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("inference started before the inputs were checked")

    monkeypatch.setattr(compare, "open_session", refuse)


def _wav(folder: Path, name: str = "talk") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.wav"
    noise = np.random.default_rng(0).normal(scale=0.01, size=2 * 16000).astype(np.float32)
    sf.write(path, noise, 16000)
    return path


def _error(argv: list[str], capsys) -> str:
    """Run compare.main, expect exit status 2, return its one stderr line."""
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_empty_rttm(tmp_path: Path, capsys) -> None:
    wav = _wav(tmp_path)
    wav.with_suffix(".rttm").write_text("")
    line = _error(["--audio", str(wav), "--out", str(tmp_path / "r")], capsys)
    assert "talk.rttm" in line and "no SPEAKER turns" in line


def test_rttm_of_another_recording(tmp_path: Path, capsys) -> None:
    wav = _wav(tmp_path)
    wav.with_suffix(".rttm").write_text(RTTM_LINE.format(uri="meeting", start=0.5, duration=1.0, speaker="A"))
    line = _error(["--audio", str(wav), "--out", str(tmp_path / "r")], capsys)
    assert "talk.rttm" in line and "'talk'" in line and "'meeting'" in line


@pytest.mark.parametrize("line, problem", [
    ("SPEAKER talk 1 0.5\n", "expected 'SPEAKER uri channel start duration"),
    (RTTM_LINE.format(uri="talk", start="soon", duration=1.0, speaker="A"), "start 'soon' is not a number"),
    (RTTM_LINE.format(uri="talk", start=0.5, duration=-1.0, speaker="A"), "duration '-1.0' is not a number >= 0"),
    (RTTM_LINE.format(uri="talk", start="nan", duration=1.0, speaker="A"), "start 'nan'"),
])
def test_malformed_rttm_line(tmp_path: Path, capsys, line: str, problem: str) -> None:
    wav = _wav(tmp_path)
    wav.with_suffix(".rttm").write_text(RTTM_LINE.format(uri="talk", start=0.0, duration=0.4, speaker="A") + line)
    message = _error(["--audio", str(wav), "--out", str(tmp_path / "r")], capsys)
    assert "talk.rttm:2:" in message and problem in message


@pytest.mark.parametrize("text, problem", [
    ("talk 1 0.0\n", "talk.uem:1: expected 'uri channel start end'"),
    ("talk 1 zero 1.5\n", "talk.uem:1: start 'zero' is not a number"),
    ("talk 1 1.5 1.0\n", "talk.uem:1: end 1.0 is not after start 1.5"),
    ("meeting 1 0.0 1.0\n", "no UEM segment for 'talk'"),
    ("", "no UEM segment for 'talk'"),
])
def test_bad_uem(tmp_path: Path, capsys, text: str, problem: str) -> None:
    wav = _wav(tmp_path)
    wav.with_suffix(".uem").write_text(text)
    assert problem in _error(["--audio", str(wav), "--out", str(tmp_path / "r")], capsys)


def test_missing_audio(tmp_path: Path, capsys) -> None:
    line = _error(["--audio", str(tmp_path / "nowhere.wav"), "--out", str(tmp_path / "r")], capsys)
    assert "nowhere.wav" in line and "no such audio file" in line


def test_undecodable_audio(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    assert "broken.wav: cannot decode audio" in _error(["--audio", str(bad), "--out", str(tmp_path / "r")], capsys)


@pytest.mark.parametrize("below", [False, True], ids=["a-file", "below-a-file"])
def test_unwritable_out(tmp_path: Path, capsys, below: bool) -> None:
    """`--out` naming a file, or a folder below a file: refused before any inference (root cannot write there
    either, unlike a read-only folder)."""
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    out = taken / "reports" if below else taken
    line = _error(["--audio", str(_wav(tmp_path / "in")), "--out", str(out)], capsys)
    assert f"--out {out}: cannot write reports there" in line
    assert taken.read_text() == "a file, not a folder"


def test_two_files_with_one_name(tmp_path: Path, capsys) -> None:
    a, b = _wav(tmp_path / "a"), _wav(tmp_path / "b")
    line = _error(["--audio", str(a), str(b), "--out", str(tmp_path / "r")], capsys)
    assert str(b) in line and "same name" in line


def test_dataset_and_layer_items_options(tmp_path: Path, capsys) -> None:
    assert "--dataset" in _error(["--dataset", str(tmp_path / "none"), "--out", str(tmp_path / "r")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no audio files" in _error(["--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "r")], capsys)
    wav = _wav(tmp_path)
    assert "--layer-items 0" in _error(["--audio", str(wav), "--layer-items", "0", "--out", str(tmp_path / "r")],
                                       capsys)
    line = _error(["--audio", str(wav), "--memory-curve", "10", "-5", "--out", str(tmp_path / "r")], capsys)
    assert "--memory-curve -5: minutes must be above 0" in line


@pytest.mark.parametrize("options, problem", [
    (["--repeat", "0"], "--repeat 0: must be 1 to 100"),
    (["--variant", "float64"], "--variant float64: expected DTYPE[-pure][-qBITSgGROUP][-MODE]"),
    (["--variant", "float32-pure"], "--variant float32-pure: expected"),
    (["--variant", "float32", "float32"], "--variant float32: given twice"),
    (["--variant", "float16-sparse"], "--variant float16-sparse: a fast mode is judged against its exact mode; "
                                      "add float16"),
    (["--variant", "float32", "--quantize", "8"], "--variant names the variants: give it without --dtype"),
    (["--dataset", ".", "--repeat", "5"], "--repeat, --no-warmup and --fresh-reference apply to --audio runs"),
    (["--dataset", ".", "--fresh-reference"], "not the reference cache"),
])
def test_variant_and_repeat_options(tmp_path: Path, capsys, options: list[str], problem: str) -> None:
    source = [] if "--dataset" in options else ["--audio", str(_wav(tmp_path))]
    assert problem in _error([*source, *options, "--out", str(tmp_path / "r")], capsys)
    assert not (tmp_path / "r").exists()  # refused before the report folder is made


def test_error_types_for_the_python_api(tmp_path: Path) -> None:
    """The same checks raise typed errors from Python (all MlxDiarError, so one `except` catches them)."""
    wav = _wav(tmp_path)
    with pytest.raises(AudioError):
        compare.collect_audio([tmp_path / "missing.flac"], None)
    with pytest.raises(OptionError):
        compare.collect_audio(None, wav)
    rttm = wav.with_suffix(".rttm")
    rttm.write_text("")
    with pytest.raises(AnnotationError):
        compare.collect_audio([wav], None)
    assert issubclass(AnnotationError, MlxDiarError)


def test_well_formed_files_still_load(tmp_path: Path) -> None:
    """Comments and non-SPEAKER lines are skipped; overlapping and repeated turns are all kept."""
    rttm = tmp_path / "talk.rttm"
    rttm.write_text("# a comment\n"
                    + RTTM_LINE.format(uri="talk", start=0.0, duration=1.0, speaker="A")
                    + RTTM_LINE.format(uri="talk", start=0.0, duration=1.0, speaker="B")
                    + RTTM_LINE.format(uri="talk", start=0.0, duration=1.0, speaker="C")
                    + "SPKR-INFO talk 1 <NA> <NA> <NA> unknown A <NA> <NA>\n"
                    + RTTM_LINE.format(uri="other", start=2.0, duration=0.5, speaker="A"))
    assert set(load_rttm(rttm)) == {"talk", "other"}
    talk = reference_for(rttm, "talk")
    assert sorted(talk.labels()) == ["A", "B", "C"] and len(list(talk.itertracks())) == 3
    uem = tmp_path / "talk.uem"
    uem.write_text("talk 1 0.0 1.0\nother 1 0.0 9.0\ntalk 1 1.5 2.0\n")
    assert [(s.start, s.end) for s in load_uem(uem, "talk")] == [(0.0, 1.0), (1.5, 2.0)]


def test_cli_one_line_and_debug_traceback(tmp_path: Path) -> None:
    """`python -m harness compare`: one line without traceback; `--debug` shows the traceback."""
    argv = [sys.executable, "-m", "harness", "compare", "--audio", str(tmp_path / "gone.wav"),
            "--out", str(tmp_path / "r")]
    plain = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [f"error: {tmp_path / 'gone.wav'}: no such audio file"]
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "AudioError" in debug.stderr
