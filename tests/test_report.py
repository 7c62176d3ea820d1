"""The report layer on small synthetic frames: CSV, summary.md, report.html (escaping, offline) and,
with the `browser` marker, report.html rendered by headless Chromium."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyannote.core import Annotation, Segment

from harness.report import FAIL_COLOUR, PASS_COLOUR, write_reports
from harness.rows import Diarizations, LayerRow, PipelineRow, TimingRow

EVIL = "<script>alert(1)</script> & co.wav"
VARIANTS = ["float32", "float16", "float32-q8g64"]
LAYERS = {"segmentation": ["sincnet.conv1d.0", "lstm.2", "linear.1", "activation"],
          "embedding": ["fbank", "resnet.layer1", "resnet.layer3", "embedding"]}
STAGES = ["segmentation", "speaker_counting", "embeddings", "clustering", "reconstruction", "total"]
VERDICT = f"FAIL: first failure: {EVIL} float16 embedding cosine 0.9981 < 0.999"


def _layers() -> list[LayerRow]:
    rows = []
    for v, variant in enumerate(VARIANTS):
        for model, names in LAYERS.items():
            for depth, layer in enumerate(names):
                err = 0.0 if (variant, layer) == ("float32", "fbank") else 10.0 ** (-6 + v + 0.3 * depth)
                failed = variant == "float16" and layer == "embedding"
                rows.append(LayerRow(
                    file=EVIL, variant=variant, dtype=variant.split("-")[0],
                    quantize="q8g64" if "q8" in variant else "", model=model, layer=layer,
                    depth=depth, shape="(1, 589, 7)", max_abs_err=3 * err, rel_l2=err,
                    cosine=0.9981 if failed else 1 - err,
                    argmax_agreement=1.0 if layer == "activation" else np.nan,
                    target="" if variant == "float32-q8g64" else "rel L2 <= 1e-4",
                    passed=None if variant == "float32-q8g64" else not failed,
                ))
    return rows


def _runs() -> list[tuple[str, str]]:
    """(variant, side) as harness.compare records them: pyannote once per file, MLX once per variant."""
    return [("pyannote", "pyannote")] + [(variant, "mlx") for variant in VARIANTS]


def _pipeline() -> list[PipelineRow]:
    rows = []
    for variant, side in _runs():
        mlx = side == "mlx"
        rows.append(PipelineRow(
            file=EVIL, variant=variant, side=side, duration_s=30.0, speakers=2,
            reference_speakers=2, der_vs_reference=0.068, jer_vs_reference=0.12,
            der_vs_pyannote=0.0 if mlx else np.nan, jer_vs_pyannote=0.0 if mlx else np.nan,
            segmentation_frame_agreement=1.0 if mlx else np.nan,
            embedding_min_cosine=0.99999 if mlx else np.nan,
            target="DER vs pyannote <= 0.5 pt" if mlx else "", passed=True if mlx else None,
        ))
    return rows


def _timing() -> list[TimingRow]:
    rows = []
    for variant, side in _runs():
        for k, stage in enumerate(STAGES):
            seconds = (0.5 + k) * (1.0 if side == "pyannote" else 0.4)
            rows.append(TimingRow(file=EVIL, variant=variant, side=side, stage=stage, seconds=seconds,
                                  rtf=seconds / 30.0, speed_ratio=2.5 if side == "mlx" else np.nan,
                                  peak_rss_mb=900.0 if side == "pyannote" else 400.0, warmup_runs=1))
    return rows


def _annotation(turns: list[tuple[float, float, str]]) -> Annotation:
    ann = Annotation(uri="x")
    for start, end, label in turns:
        ann[Segment(start, end)] = label
    return ann


def _diarizations() -> dict[str, Diarizations]:
    hyp = [(0.5, 9.0, "SPEAKER_00"), (8.0, 20.0, "SPEAKER_01"), (21.0, 29.0, "SPEAKER_00")]
    return {EVIL: Diarizations(
        duration=30.0,
        # `$\undefined$` would be a mathtext error if matplotlib parsed it
        reference=_annotation([(0.4, 9.1, "A & <b>"), (8.1, 20.2, r"$\undefined$"), (21.0, 29.5, "A & <b>")]),
        pyannote=_annotation(hyp),
        mlx={variant: _annotation(hyp) for variant in VARIANTS},
    )}


def _meta() -> dict:
    return {
        "title": "mlx-diar parity <test>",
        "verdict": {"passed": False, "text": VERDICT},
        "failures": [f"{EVIL} float16 embedding cosine 0.9981 < 0.999"],
        "machine": {"platform": "Linux-x86_64", "cpu": "Test CPU", "cores": 2, "memory_gb": 8.0,
                    "device": "Device(cpu, 0)", "blas": "openblas (pthreads)"},
        "versions": {"mlx": "0.29", "pyannote.audio": "4.0.1", "torch": "2.13.0"},
        "checkpoint": {"source": "fixture pipeline & co", "files": [
            {"role": "segmentation", "path": "/cache/segmentation.bin", "sha256": "ab" * 32, "real": True},
            {"role": "embedding", "path": "/cache/embedding.bin", "sha256": "cd" * 32, "real": False},
        ]},
        "seeded_parts": ["The embedding model's weights are seeded, not trained."],
        "warmup": "1 warm-up run per side excluded from timings",
        "created": "2025-01-01T00:00:00+00:00",
        "command": "python -m harness compare --check",
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict[str, Path], dict[str, list]]:
    rows = {"layers": _layers(), "pipeline": _pipeline(), "timing": _timing()}
    out = tmp_path_factory.mktemp("report") / "run"  # not existing yet: write_reports creates it
    paths = write_reports(out, rows["layers"], rows["pipeline"], rows["timing"], _meta(), _diarizations())
    return paths, rows


def test_files_written_atomically(report):
    paths, _ = report
    assert set(paths) == {"layers.csv", "pipeline.csv", "timing.csv", "summary.md", "report.html"}
    out = next(iter(paths.values())).parent
    assert sorted(p.name for p in out.iterdir()) == sorted(paths)  # no temporary files left behind


@pytest.mark.parametrize("name, row_type", [("layers", LayerRow), ("pipeline", PipelineRow), ("timing", TimingRow)])
def test_csv_matches_rows(report, name, row_type):
    paths, rows = report
    written = pd.read_csv(paths[f"{name}.csv"], keep_default_na=False)
    assert list(written.columns) == [field.name for field in dataclasses.fields(row_type)]
    assert len(written) == len(rows[name])
    assert (written["file"] == EVIL).all()


def test_summary_fits_one_screen_and_starts_with_the_verdict(report):
    """Verdict, the variants table, the three worst layers and the speed ratios on one screen; every
    other table behind <details>."""
    paths, _ = report
    text = paths["summary.md"].read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("## ❌ FAIL: first failure:")
    assert html.escape(VERDICT, quote=False) in lines[0]
    screen = lines[:lines.index("<details><summary>Every table: layers, pipeline, speed &amp; memory, per stage</summary>")]
    assert len(screen) <= 30
    header = next(line for line in screen if line.startswith("| variant | pass |"))
    rows = [line for line in screen if line.startswith(("| float32 |", "| float16 |", "| float32-q8g64 |"))]
    assert "DER vs pyannote" in header and "worst layer" in header and len(rows) == 3
    assert "| float16 | ❌ |" in rows[1] and "| float32-q8g64 | ✅ |" in rows[2]  # layer failures count
    worst = next(line for line in screen if line.startswith("**Worst layers**"))
    assert worst.count(";") == 2 and worst.index("float16 embedding/embedding 7.9e-05 ❌") < worst.index("✅")
    speed = screen.index("| file | pyannote s | float32 | float16 | float32-q8g64 |")
    assert screen[speed + 2].endswith("| 5.500 | 2.50× | 2.50× | 2.50× |")
    assert "**Failures** (1):" in screen
    for header in ("### Layers", "### Pipeline", "### Speed & memory"):
        assert lines.index(header) > len(screen)
    assert lines[-1].startswith("Plots and full tables: `report.html`")
    assert "<script>" not in text
    assert "2.50×" in text and "0.00 %" in text and "6.80 %" in text
    assert re.search(r"\d\.\de-0\d", text)  # errors in scientific notation
    assert "embedding `cdcdcdcdcdcd` (seeded)" in text


def test_html_is_offline_escaped_and_has_plots(report):
    paths, _ = report
    text = paths["report.html"].read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", text, re.I)
    assert not re.search(r"url\(|@import|https?://", text, re.I)
    assert EVIL not in text and "<script" not in text.lower()
    assert html.escape(EVIL) in text
    assert text.count('src="data:image/png;base64,') == 4  # 2 layer plots, 1 timeline, 1 timing plot
    assert html.escape(VERDICT) in text and f"background:{FAIL_COLOUR}" in text
    assert "SEEDED" in text and "seeded, not trained" in text.lower()


def test_passing_run_over_two_files(tmp_path):
    """A green verdict, a second file without reference RTTM (NaN DER vs reference), a corpus row."""
    layers, pipeline, timing = ([*rows, *(dataclasses.replace(r, file="b.wav") for r in rows)]
                                for rows in (_layers(), _pipeline(), _timing()))
    for row in pipeline[len(pipeline) // 2:]:
        row.der_vs_reference = row.jer_vs_reference = row.reference_speakers = np.nan
    pipeline.append(PipelineRow(file="(all)", variant="float16", side="mlx", duration_s=60.0, der_vs_pyannote=0.001))
    diarizations = _diarizations()
    diarizations["b.wav"] = dataclasses.replace(diarizations[EVIL], reference=None)
    meta = {**_meta(), "verdict": {"passed": True, "text": "PASS: every target met"}, "failures": []}
    paths = write_reports(tmp_path, layers, pipeline, timing, meta, diarizations)
    summary = paths["summary.md"].read_text(encoding="utf-8")
    assert summary.startswith("## ✅ PASS: every target met\n")
    assert "Failures" not in summary and "| b.wav | float16 | 0.00 % | – / – |" in summary
    assert "| (all) | float16 | 0.10 % | – / – |" in summary
    page = paths["report.html"].read_text(encoding="utf-8")
    assert 'class="verdict pass"' in page and page.count("data:image/png;base64,") == 6


def test_reports_follow_the_umask(tmp_path):
    """Reports are readable by whoever the user's umask allows (not mkstemp's 0600)."""
    import os

    old = os.umask(0o022)
    try:
        paths = write_reports(tmp_path / "r", _layers(), _pipeline(), _timing(), _meta(), _diarizations())
    finally:
        os.umask(old)
    assert {oct(path.stat().st_mode & 0o777) for path in paths.values()} == {oct(0o644)}


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,2000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="no chromium / chromium-browser / google-chrome on PATH")
def test_chromium_renders_the_verdict(report, tmp_path):
    from PIL import Image

    paths, _ = report
    browser, url = _chromium(), paths["report.html"].resolve().as_uri()
    png = tmp_path / "report.png"
    _run_chromium(browser, tmp_path / "profile", f"--screenshot={png}", url)
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1280)
    assert (pixels.min(axis=2) > 245).mean() < 0.9  # not blank
    assert len(np.unique((pixels // 16).reshape(-1, 3), axis=0)) > 20  # several distinct colours
    red = (np.abs(pixels - _rgb(FAIL_COLOUR)).max(axis=2) <= 2).sum()
    green = (np.abs(pixels - _rgb(PASS_COLOUR)).max(axis=2) <= 2).sum()
    assert red > 30_000 and green < red // 20  # the failing verdict's red banner

    dom = _run_chromium(browser, tmp_path / "profile", "--dump-dom", url).stdout
    assert html.escape(VERDICT, quote=False) in dom
    assert re.search(r'<div class="verdict fail" id="verdict">', dom)
    assert "<script" not in dom.lower()


def test_memory_curve_goes_into_every_report(tmp_path):
    rows = [{"minutes": m, "embedding_mode": "exact", "peak_mb": peak, "imports_mb": 117.0, "loaded_mb": 155.0,
             "seconds": 60.0 * m, "speakers": 3, "timings": {}, "helpers_mb": [210.0]}
            for m, peak in ((10, 700.0), (60, 840.0))]
    paths = write_reports(tmp_path / "r", _layers(), _pipeline(), _timing(), _meta(), _diarizations(), memory=rows)
    assert "| 60 | exact | 840 | +20.0% | 210 | 117 | 155 | 3600.0 |" in paths["summary.md"].read_text(encoding="utf-8")
    np.testing.assert_allclose(pd.read_csv(paths["memory.csv"])["growth_vs_first"], [0.0, 0.2])
    assert "Memory curve" in paths["report.html"].read_text(encoding="utf-8")


def test_cached_pyannote_timing_and_repeats_are_said_in_every_report(tmp_path):
    """A pyannote run taken from the reference cache is marked "cached" with its date in summary.md and
    report.html; repeated MLX runs go to timing_runs.csv and the summary says medians of how many."""
    from harness.compare import stage_runs, timing_summary

    date = "2026-01-02T03:04:05+00:00"
    runs = stage_runs(EVIL, "pyannote", "pyannote", dict.fromkeys(STAGES, 2.0), 900.0, 0, cached=date)
    runs += [run for r in range(5) for run in stage_runs(EVIL, "float32", "mlx", dict.fromkeys(STAGES, 1.0 + r / 10),
                                                         400.0, r)]
    timing = timing_summary(runs, 30.0, warmup_runs=1)
    meta = {**_meta(), "repeats": 5, "reference": {EVIL: {"cached": date}}}
    pipeline = [row for row in _pipeline() if row.variant in ("pyannote", "float32")]
    paths = write_reports(tmp_path, _layers(), pipeline, timing, meta, _diarizations(), runs=runs)
    summary = paths["summary.md"].read_text(encoding="utf-8")
    assert f"| 2.000 (cached) | {2 / 1.2:.2f}× |" in summary  # pyannote / the MLX median (1.2 s)
    assert f"MLX medians of 5 interleaved timed runs; pyannote's run of 1 of 1 file(s) taken from the reference " \
           f"cache (measured {date}" in summary
    page = paths["report.html"].read_text(encoding="utf-8")
    assert f"taken from the reference cache (measured {date}" in page and f"<td>{date}</td>" in page
    written = pd.read_csv(paths["timing_runs.csv"])
    assert len(written) == 6 * len(STAGES) and sorted(written["repeat"].unique()) == [0, 1, 2, 3, 4]
