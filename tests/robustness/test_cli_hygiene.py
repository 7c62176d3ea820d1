"""Command lines stay one-line and quiet on hostile input (issue 23, item 3 and the smaller cases).

`harness compare` makes uris RTTM-safe as `diarize` does (a space, `|` or a newline in a manifest
uri); `--workers`/`--threads` are checked; argparse errors are one line on every command line;
`MLX_DIAR_CACHE` naming a file is one line; the known-harmless warnings of NumPy (an empty
mean), torch (pyannote's pooling probe) and pyannote.database do not reach stderr.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_diar.runtime.audio import SAMPLE_RATE


# ---------------------------------------------------------------------------------------------- compare uris
def test_compare_makes_manifest_uris_rttm_safe_and_reruns(sample_10s, tmp_path: Path, capsys) -> None:
    from harness import compare
    from harness.metrics import load_rttm

    sf.write(tmp_path / "clip.wav", sample_10s[6 * SAMPLE_RATE:], SAMPLE_RATE)
    uri = "my talk|x\ny"  # a space (a traceback before), a newline and a pipe (a corrupt RTTM and corpus.md)
    manifest = tmp_path / "corpus.jsonl"
    manifest.write_text(json.dumps({"audio": "clip.wav", "uri": uri}) + "\n")
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--out", str(out), "--workers", "1", "--quiet"]
    assert compare.main(argv) == 0, capsys.readouterr().err
    written = sorted((out / "rttm").iterdir())
    assert [p.name.split(".", 1)[1] for p in written] == ["float32.rttm", "pyannote.rttm"]
    for path in written:
        assert set(load_rttm(path)) == {"my_talk_x_y"}, path.read_text()
    corpus_md = (out / "corpus.md").read_text()
    assert "1 done" in corpus_md and "| my talk\\|x y |" in corpus_md
    assert not any(line.startswith("y ") for line in corpus_md.splitlines())
    capsys.readouterr()
    assert compare.main(argv) == 0  # the rerun reads every RTTM back
    assert "0 done, 1 skipped" in capsys.readouterr().out


def test_reference_and_uem_are_found_under_the_safe_uri(tmp_path: Path) -> None:
    from harness.metrics import load_uem, reference_for

    (tmp_path / "r.rttm").write_text("SPEAKER my_talk 1 0.5 1.0 <NA> <NA> A <NA> <NA>\n")
    (tmp_path / "r.uem").write_text("my_talk 1 0.0 2.0\n")
    reference = reference_for(tmp_path / "r.rttm", "my talk")
    assert reference.uri == "my_talk" and reference.labels() == ["A"]
    assert load_uem(tmp_path / "r.uem", "my talk").duration() == 2.0
    (tmp_path / "p.rttm").write_text("SPEAKER a|b 1 0.5 1.0 <NA> <NA> A <NA> <NA>\n")
    assert reference_for(tmp_path / "p.rttm", "a|b").to_rttm().split()[1] == "a_b"


# ---------------------------------------------------------------------------------------------- options
def _one_line_exit(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "usage:" not in err
    return err


@pytest.mark.parametrize("option, value", [("--workers", "0"), ("--workers", "-2"), ("--threads", "0"),
                                           ("--threads", "two")])
def test_compare_workers_and_threads_are_checked(option, value, capsys) -> None:
    from harness import compare

    err = _one_line_exit(compare.main, [option, value], capsys)
    assert err.startswith(f"error: argument {option}: ")


def _mains():
    from harness.__main__ import main as harness
    from harness.compare import main as compare, sensitivity_main
    from harness.memory import main as memory
    from harness.profile import main as profile
    from mlx_diar.__main__ import main as mlx_diar
    from mlx_diar.conversion.convert import main as convert
    from reference.__main__ import main as reference

    return {"harness": harness, "compare": compare, "sensitivity": sensitivity_main, "memory": memory,
            "profile": profile, "mlx_diar": mlx_diar, "convert": convert, "reference": reference}


@pytest.mark.parametrize("name", ["harness", "compare", "sensitivity", "memory", "profile", "mlx_diar", "convert",
                                  "reference"])
def test_argparse_errors_are_one_line_everywhere(name, capsys) -> None:
    _one_line_exit(_mains()[name], ["--no-such-option"], capsys)


def test_a_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from harness.__main__ import main

    (tmp_path / "cache").write_text("not a directory")
    monkeypatch.setenv("MLX_DIAR_CACHE", str(tmp_path / "cache"))
    assert main(["fixtures"]) == 1
    assert capsys.readouterr().err == (f"error: MLX_DIAR_CACHE={tmp_path / 'cache'}: the cache is not a directory; "
                                       "set MLX_DIAR_CACHE to a directory\n")


# ---------------------------------------------------------------------------------------------- warnings
def test_single_cluster_of_nothing_is_nan_without_numpy_warnings() -> None:
    from mlx_diar.clustering.assignment import single_cluster

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hard, soft, centroids = single_cluster(np.zeros((3, 2, 4)), np.zeros((0, 4)))
    assert hard.shape == (3, 2) and np.isnan(centroids).all()


def test_diarizing_a_second_of_speech_prints_nothing_on_stderr(sample_10s, mlx_model_dir, tmp_path, capfd) -> None:
    import mlx_diar.__main__ as cli

    sf.write(tmp_path / "short.wav", sample_10s[7 * SAMPLE_RATE: 8 * SAMPLE_RATE], SAMPLE_RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as a plain command line shows them
        assert cli.main(["diarize", str(tmp_path / "short.wav"), "--model", str(mlx_model_dir)]) == 0
    out, err = capfd.readouterr()
    assert err == "" and out.startswith("SPEAKER short 1 ")


def test_pyannote_s_minimum_length_probe_warns_nothing(fixture_root) -> None:
    from reference.runner import ModelTaps, load_pipeline

    pipeline = load_pipeline(fixture_root)  # a fresh pipeline: its probe has not run yet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ModelTaps(pipeline, layer_items=1)
    assert [str(w.message) for w in caught] == []
    assert pipeline._embedding.min_num_samples > 0
