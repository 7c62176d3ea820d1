"""`python -m mlx_diar diarize` (issue 12, items 3 and 4): options checked before any inference, each
result written as soon as it is ready, a bad file costs only itself, errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mlx_diar.__main__ as cli

BAD_OPTIONS = [
    (["--num-speakers", "0"],
     "error: num_speakers = 0 must be between 1 and 1000 (leave it unset for an automatic count)"),
    (["--num-speakers", "-3"], "error: num_speakers = -3 must be between 1 and 1000"),
    (["--num-speakers", "100000"], "error: num_speakers = 100000 must be between 1 and 1000"),
    (["--min-speakers", "4", "--max-speakers", "2"],
     "error: min_speakers must be smaller than (or equal to) max_speakers"),
    (["--num-speakers", "5", "--max-speakers", "2"], "error: num_speakers = 5 contradicts"),
    (["--num-speakers", "two"], "error: argument --num-speakers: invalid int value: 'two'"),
    (["--threshold", "nan"], "error: argument --threshold: must be a finite number"),
    (["--threshold", "abc"], "error: argument --threshold: expected a number, got 'abc'"),
    (["--fa", "0"], "error: argument --fa: must be a finite number > 0, got '0'"),
    (["--fb", "-1"], "error: argument --fb: must be a finite number > 0, got '-1'"),
    (["--min-duration-off", "inf"], "error: argument --min-duration-off: must be a finite number >= 0"),
    (["--segmentation-batch-size", "0"], "error: argument --segmentation-batch-size: must be a finite number >= 1"),
    (["--embedding-batch-size", "2.5"], "error: argument --embedding-batch-size: expected an integer, got '2.5'"),
    (["--param", "clustering.threshold=nan"], "error: --param value 'nan' is not a finite number"),
    (["--param", "oops"], "error: --param expects GROUP.NAME=VALUE"),
    (["--embedding-mode", "fastest"], "error: argument --embedding-mode: invalid choice: 'fastest'"),
]


def test_the_embedding_modes_offered_are_the_pipeline_s(capsys) -> None:
    from mlx_diar.runtime.pipeline import EMBEDDING_MODES

    with pytest.raises(SystemExit):
        cli.main(["diarize", "--help"])
    assert "{" + ",".join(EMBEDDING_MODES) + "}" in capsys.readouterr().out


@pytest.mark.parametrize("options, line", BAD_OPTIONS)
def test_bad_options_are_one_line_before_any_model_or_audio_is_read(tmp_path, capsys, options, line) -> None:
    # neither the model nor the audio exists: the option is what must be reported
    try:
        code = cli.main(["diarize", str(tmp_path / "missing.wav"), "--model", str(tmp_path / "nomodel"), *options])
    except SystemExit as e:  # argparse: exit status 2
        code = e.code
    err = capsys.readouterr().err
    assert code in (1, 2) and err.startswith(line) and err.count("\n") == 1, err


def test_unwritable_outputs_are_refused_before_inference(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    for option, target, problem in (("--rttm", tmp_path / "file/out.rttm", "cannot write there"),
                                    ("--rttm", tmp_path / "dir", "is a directory"),
                                    ("--rttm-dir", tmp_path / "file/sub", "cannot write there")):
        assert cli.main(["diarize", "x.wav", "--model", str(tmp_path / "nomodel"), option, str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {option} {target}: {problem}") and err.count("\n") == 1


def _clip(path: Path, waveform: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, waveform, 16000, subtype="FLOAT")
    return path


@pytest.fixture
def batch(sample_10s: np.ndarray, tmp_path: Path) -> list[Path]:
    """Generated inputs: same stems in two folders, spaces and unicode in names, a broken and a silent file."""
    clip = sample_10s  # speech from 6.7 s on
    files = [_clip(tmp_path / "in/a.wav", clip), _clip(tmp_path / "in/sub/a.wav", clip),
             tmp_path / "in/broken.wav", _clip(tmp_path / "in/two words é.wav", clip),
             _clip(tmp_path / "in/silent.wav", np.zeros(16000 * 3, np.float32))]
    files[2].write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    return files


def _uris(text: str) -> list[str]:
    return sorted({line.split()[1] for line in text.splitlines()})


def test_batch_goes_on_after_a_bad_file(batch, mlx_model_dir, tmp_path, capsys) -> None:
    out, per_file = tmp_path / "out/all.rttm", tmp_path / "out/rttm"
    code = cli.main(["diarize", *map(str, batch), "--model", str(mlx_model_dir), "--rttm", str(out),
                     "--rttm-dir", str(per_file)])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err[0].startswith(f"error: {batch[2]}: cannot decode audio")
    assert err[1] == f"warning: {batch[4]}: the audio is silent: no speech can be found in it"
    assert err[2:] == ["error: 1 of 5 files failed"]
    assert _uris(out.read_text()) == ["a", "a-2", "two_words_é"]
    assert sorted(p.name for p in per_file.iterdir()) == ["a-2.rttm", "a.rttm", "silent.rttm", "two_words_é.rttm"]
    assert (per_file / "a.rttm").read_text() + (per_file / "a-2.rttm").read_text() in out.read_text()


def test_results_are_on_disk_before_a_later_crash(batch, mlx_model_dir, tmp_path, monkeypatch) -> None:
    out = tmp_path / "all.rttm"
    real, calls = cli.diarize_one, []

    def crash_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # not even an Exception: the run stops here
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "diarize_one", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["diarize", str(batch[0]), str(batch[3]), "--model", str(mlx_model_dir), "--rttm", str(out)])
    assert _uris(out.read_text()) == ["a"]


def test_traceback_only_with_debug(tmp_path) -> None:
    argv = [sys.executable, "-m", "mlx_diar", "diarize", "x.wav", "--model", str(tmp_path / "nomodel")]
    plain = subprocess.run(argv, capture_output=True, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr == (f"error: {tmp_path / 'nomodel'}: no such directory, nor a Hugging Face id; expected a "
                            "converted mlx-diar model directory (config.json), a pyannote pipeline directory "
                            "(config.yaml), or the Hugging Face id (ORG/NAME) of either\n")
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True)
    assert "Traceback" in debug.stderr and debug.stderr.endswith(plain.stderr)
