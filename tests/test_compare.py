"""`python -m harness compare`: report files, CSV contents, and `--check` as a CI gate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from harness import compare
from mlx_diar.errors import OptionError


@pytest.fixture(scope="module", autouse=True)
def reference_cache(tmp_path_factory) -> Path:
    """This module's pyannote runs are cached in a folder of its own (the first compare fills it)."""
    from harness import refcache

    folder = tmp_path_factory.mktemp("reference-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refcache, "directory", lambda: folder)
        yield folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory, sample) -> Path:
    """8 s of the bundled sample (speech from 6.7 s on) with the matching slice of its RTTM."""
    from harness.metrics import reference_for
    from pyannote.core import Segment

    waveform, rttm = sample
    folder = tmp_path_factory.mktemp("clip")
    sf.write(folder / "clip.wav", waveform[6 * 16000: 14 * 16000], 16000, subtype="FLOAT")
    reference = reference_for(rttm, "sample").crop(Segment(6.0, 14.0))
    shifted = reference.__class__(uri="clip")
    for segment, track, label in reference.itertracks(yield_label=True):
        shifted[Segment(segment.start - 6.0, segment.end - 6.0), track] = label
    with open(folder / "clip.rttm", "w") as f:
        shifted.write_rttm(f)
    return folder / "clip.wav"


@pytest.fixture(scope="module")
def report(clip: Path, tmp_path_factory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("report") / "r"
    code = compare.main(["--audio", str(clip), "--dtype", "float32", "--embedding-mode", "sparse", "shared",
                         "--out", str(out), "--check", "--quiet"])
    return code, out


def test_report_files_and_columns(report) -> None:
    code, out = report
    assert code == 0, (out / "summary.md").read_text()
    assert {p.name for p in out.iterdir()} >= {"layers.csv", "pipeline.csv", "timing.csv", "summary.md", "report.html"}
    layers = pd.read_csv(out / "layers.csv")
    assert list(layers.columns) == ["file", "variant", "dtype", "quantize", "model", "layer", "depth", "shape",
                                    "max_abs_err", "rel_l2", "cosine", "argmax_agreement", "f64_err_pyannote", "f64_err_mlx", "target", "passed"]
    segmentation = layers[layers.model == "segmentation"]
    embedding = layers[layers.model == "embedding"]
    assert len(segmentation) == 20  # wav_norm1d, 3 x (conv, pool, norm), sincnet, 4 lstm + lstm, 2 linear, classifier, activation
    assert {"lstm.0", "lstm.3", "classifier", "activation"} <= set(segmentation.layer)
    assert np.isfinite(segmentation.f64_err_mlx).all()  # every segmentation layer is gated against float64
    assert {"fbank", "resnet.layer1", "resnet.layer4", "resnet.pool", "resnet.seg_1"} <= set(embedding.layer)
    assert layers.passed.all()
    assert set(layers.variant) == {"float32"}  # the fast modes run the same conversion: not compared twice
    pipeline = pd.read_csv(out / "pipeline.csv").set_index("variant")
    assert list(pipeline.index) == ["pyannote", "float32", "float32-sparse", "float32-shared"]
    assert pipeline.loc["float32", "der_vs_pyannote"] == 0.0 and np.isnan(pipeline.loc["float32", "der_vs_exact"])
    for fast in ("float32-sparse", "float32-shared"):  # judged against exact mode on the same file
        assert np.isfinite(pipeline.loc[fast, "der_vs_exact"]) and np.isfinite(pipeline.loc[fast, "der_vs_pyannote"])
        assert pipeline.loc[fast, "target"].startswith("DER vs exact mode") and pipeline.loc[fast, "passed"]
    assert np.isfinite(pipeline.der_vs_reference).all()
    timing = pd.read_csv(out / "timing.csv")
    assert len(timing) == 4 * len(compare.STAGES)
    assert (timing.loc[timing.side == "mlx", "speed_ratio"].dropna() > 0).all()
    assert (timing.peak_rss_mb > 0).all()
    summary = (out / "summary.md").read_text().splitlines()
    assert "PASS" in summary[0]
    assert not [line for line in summary if "| nan |" in line]  # what was not measured is a dash
    text = "\n".join(summary)  # with fast modes, a column of their DER against exact mode
    assert "| clip | float32 | 0.00 % | – |" in text and "| clip | float32-sparse | " in text
    assert json.loads((out / "meta.json").read_text())["verdict"]["passed"] is True


def test_a_cached_reference_run_is_reused_and_said(report, clip: Path, reference_cache: Path, tmp_path: Path,
                                                   monkeypatch) -> None:
    """The second compare of a file takes pyannote's run from the cache (pyannote is not even loaded), gives the
    same parity rows, marks pyannote's timing as cached with its date; `--fresh-reference` runs pyannote again."""
    import reference.runner

    _, first = report
    assert len(list(reference_cache.glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("pyannote loaded although its run is cached")

    monkeypatch.setattr(reference.runner, "load_pipeline", refuse)
    argv = ["--audio", str(clip), "--dtype", "float32", "--embedding-mode", "sparse", "shared", "--check", "--quiet"]
    assert compare.main([*argv, "--out", str(tmp_path / "r"), "--repeat", "2"]) == 0
    pipeline = pd.read_csv(tmp_path / "r" / "pipeline.csv")
    pd.testing.assert_frame_equal(pipeline, pd.read_csv(first / "pipeline.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r" / "layers.csv"), pd.read_csv(first / "layers.csv"))
    timing = pd.read_csv(tmp_path / "r" / "timing.csv", keep_default_na=False)
    measured = json.loads((first / "meta.json").read_text())["created"][:10]
    pyannote = timing[timing.side == "pyannote"]
    assert pyannote["cached"].str.startswith(measured).all() and (timing.loc[timing.side == "mlx", "cached"] == "").all()
    assert (timing.loc[timing.side == "mlx", "repeats"] == 2).all() and (pyannote["repeats"] == 1).all()
    runs = pd.read_csv(tmp_path / "r" / "timing_runs.csv")
    assert sorted(runs.loc[runs.variant == "float32", "repeat"].unique()) == [0, 1]
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["pyannote_loaded"] is False and meta["reference"]["clip"]["cached"].startswith(measured)
    assert "taken from the reference cache (measured " in (tmp_path / "r" / "summary.md").read_text()
    with pytest.raises(AssertionError, match="pyannote loaded"):
        compare.main([*argv, "--out", str(tmp_path / "fresh"), "--fresh-reference"])


def test_check_fails_on_a_perturbed_lstm_and_names_it(clip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from mlx_diar.conversion.model_io import load_weights, save_weights

    real = compare.converted_model

    def perturbed(root, fingerprint, variant):
        source = real(root, fingerprint, variant)
        target = tmp_path / "perturbed"
        if not target.exists():
            import shutil

            shutil.copytree(source, target)
            weights = load_weights(target)
            name = next(k for k in weights if k.startswith("segmentation.lstm.1.") and k.endswith("Wx"))
            weights[name] = weights[name] * 1.05
            (target / "model.safetensors").unlink()
            save_weights(target, weights, dtype="float32", shard_size=1 << 40)
        return target

    monkeypatch.setattr(compare, "converted_model", perturbed)
    code = compare.main(["--audio", str(clip), "--out", str(tmp_path / "r"), "--check", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "check failed" in err and "segmentation layer lstm.1" in err and "clip" in err
    layers = pd.read_csv(tmp_path / "r" / "layers.csv")
    assert layers.set_index("layer").loc["lstm.0", "passed"]  # before the perturbation: still exact


def test_dataset_mode_collects_audio_rttm_and_uem(tmp_path: Path, sample_10s) -> None:
    from pyannote.core import Annotation, Segment

    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.flac", sample_10s, 16000)
    reference = Annotation(uri="a")
    reference[Segment(6.7, 9.9)] = "spk"
    with open(tmp_path / "a.rttm", "w") as f:
        reference.write_rttm(f)
    (tmp_path / "a.uem").write_text("a 1 2.0 9.0\n")
    (tmp_path / "notes.txt").write_text("not audio")
    items = compare.collect_audio(None, tmp_path)
    assert [item.uri for item in items] == ["a", "b"]
    a, b = items
    assert a.reference.labels() == ["spk"] and b.reference is None
    assert a.uem.extent() == Segment(2.0, 9.0) and b.uem.extent() == Segment(0.0, 10.0)
    with pytest.raises(OptionError, match="not a directory"):
        compare.collect_audio(None, tmp_path / "a.rttm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="no audio files"):
        compare.collect_audio(None, tmp_path / "empty")


def test_variants() -> None:
    names = [v.name for v in compare.variants("all", 8, 64)]
    assert names == ["float32", "float16", "bfloat16", "float32-q8g64", "float16-q8g64", "bfloat16-q8g64"]
    assert [v.name for v in compare.variants("float16", None, 64)] == ["float16"]
    fast = compare.variants("all", None, 64, fast_modes=("exact", "sparse"))
    assert [v.name for v in fast] == ["float32", "float16", "bfloat16", "float32-sparse", "float16-sparse",
                                      "bfloat16-sparse"]
    assert fast[3].exact == fast[0] and fast[3].model_name == "float32"
    for variant in compare.variants("all", 4, 32, pure=True, fast_modes=("sparse", "shared")):
        assert compare.Variant.parse(variant.name) == variant  # `--variant NAME` names any variant


def test_fast_mode_target_is_its_der_against_exact_mode() -> None:
    from harness import targets
    from harness.rows import PipelineRow

    row = PipelineRow(file="f", variant="float32-sparse", side="mlx", duration_s=1.0, der_vs_pyannote=0.5,
                      segmentation_frame_agreement=0.0)  # neither judges a fast mode
    sparse = compare.Variant("float32", embedding_mode="sparse")
    row.der_vs_exact = targets.PIPELINE_DER_FAST
    assert compare.pipeline_target(sparse, row) == ("DER vs exact mode <= 0.5 pt", True)
    row.der_vs_exact = targets.PIPELINE_DER_FAST + 1e-4
    assert compare.pipeline_target(sparse, row)[1] is False
    assert "vs exact mode 0.51%" in compare.first_failure([], [dataclasses.replace(row, passed=False)])[0]
    row.der_vs_exact = float("nan")  # never measured: not a pass
    assert compare.pipeline_target(sparse, row)[1] is False


def test_model_cache_is_keyed_on_source_variant_format_and_converter(tmp_path: Path, monkeypatch) -> None:
    """A conversion is reused only for the same source, variant, on-disk format and converter version."""
    import mlx_diar.conversion.convert
    from mlx_diar.conversion import model_io

    conversions = []

    def convert(root, target, model_type, dtype, quantize=None, q_group_size=64, precision_mode="default"):
        conversions.append(Path(target).name)
        Path(target).mkdir(parents=True)
        (Path(target) / "config.json").write_text("{}")
        return Path(target)

    monkeypatch.setenv("MLX_DIAR_CACHE", str(tmp_path))
    monkeypatch.setattr(mlx_diar.conversion.convert, "convert_pyannote_model", convert)
    f32, f16 = compare.Variant("float32"), compare.Variant("float16")
    f32_sparse = compare.Variant("float32", embedding_mode="sparse")

    def cached(fingerprint: str = "a" * 64, variant: compare.Variant = f32) -> Path:
        return compare.converted_model(tmp_path / "source", fingerprint, variant)

    first = cached()
    assert cached() == first and len(conversions) == 1  # same key: reused
    assert cached(variant=f32_sparse) == first and len(conversions) == 1  # an embedding mode: the same model
    keys = {first, cached(variant=f16), cached(fingerprint="b" * 64)}
    monkeypatch.setattr(model_io, "CONVERTER_VERSION", model_io.CONVERTER_VERSION + 1)  # a sanitize changed
    keys.add(cached())
    monkeypatch.setattr(model_io, "FORMAT_VERSION", model_io.FORMAT_VERSION + 1)  # the layout changed
    keys.add(cached())
    assert len(keys) == 5 and len(conversions) == 5
    assert all(key.parent == tmp_path / "models" for key in keys)


def test_corpus_records_are_keyed_on_the_embedding_modes_too() -> None:
    """A resumed corpus run redoes its recordings when the fast modes asked for change."""
    def task(*modes: str) -> compare.CompareTask:
        return compare.CompareTask(None, compare.variants("float32", None, 64, fast_modes=modes), "cpu", 1, "a" * 64)

    assert task("sparse").fingerprint == task("sparse").fingerprint
    assert len({task().fingerprint, task("sparse").fingerprint, task("shared").fingerprint}) == 3


def test_only_differing_frames_with_a_small_margin_are_ties() -> None:
    from harness import targets
    from harness.metrics import flipped_ties

    reference = np.array([[[0.0, -1.0], [0.0, -targets.SEGMENTATION_TIE_MARGIN / 2], [0.0, -0.5]]], np.float32)
    mine = np.array([[[0.0, -1.0], [-1e-3, 0.0], [-1.0, 0.0]]], np.float32)  # frames 1 and 2 flipped
    np.testing.assert_array_equal(flipped_ties(mine, reference), [[False, True, False]])


@pytest.mark.parametrize("device, warmed", [("cpu", int(compare.WARMUP_SECONDS) * 16000), ("gpu", 30 * 16000)])
def test_the_mlx_warm_up_covers_a_whole_file_on_a_gpu(device: str, warmed: int, monkeypatch) -> None:
    """A GPU compiles kernels per batch shape at first use, and a 10 s clip's batches miss a whole
    file's: there the MLX warm-up is the whole first file; pyannote's stays the clip."""
    from mlx_diar.runtime import pipeline as runtime

    lengths = []

    class Recorder:
        def __init__(self, **kwargs) -> None:
            pass

        def apply(self, waveform: np.ndarray) -> None:
            lengths.append(len(waveform))

    monkeypatch.setattr(runtime, "SpeakerDiarizationPipeline", Recorder)
    monkeypatch.setattr(compare, "converted_model", lambda *args: None)
    session = compare.open_session(None, [compare.Variant.parse("float32")], device, np.zeros(30 * 16000, np.float32))
    assert lengths == [warmed]
    assert len(session.warmup) == int(compare.WARMUP_SECONDS) * 16000
