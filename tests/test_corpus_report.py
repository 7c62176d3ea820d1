"""Corpus report (harness.corpus_report): rates accumulated like pyannote.metrics, groups, worst files first."""

from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline

from harness import corpus_report
from harness.metrics import Accumulator, components, corpus_rates, score


def random_annotation(rng: np.random.Generator, uri: str, speakers: int, duration: float) -> Annotation:
    annotation = Annotation(uri=uri)
    for k in range(12):
        start = float(rng.uniform(0, duration - 1))
        annotation[Segment(start, min(duration, start + float(rng.uniform(0.3, 3.0)))), k] = f"s{rng.integers(speakers)}"
    return annotation


@pytest.fixture(scope="module")
def files():
    """(uri, reference, hypothesis, uem, duration) for 6 files of different lengths and speaker counts."""
    rng = np.random.default_rng(0)
    out = []
    for k, (duration, speakers) in enumerate([(20, 2), (45, 3), (25, 2), (200, 4), (60, 3), (15, 2)]):
        uem = Timeline([Segment(0, duration)])
        out.append((f"f{k}", random_annotation(rng, f"f{k}", speakers, duration),
                    random_annotation(rng, f"f{k}", speakers + 1, duration), uem, duration))
    return out


def records(files) -> list[dict]:
    """Records as `harness.corpus.CompareTask` makes them: one MLX side scored against reference and pyannote."""
    out = []
    for uri, reference, hypothesis, uem, duration in files:
        sides = {"pyannote": {"seconds": duration / 2, "speakers": len(reference.labels()),
                              "vs_reference": components(reference, reference, uem)},
                 "float32": {"seconds": duration / 4, "speakers": len(hypothesis.labels()),
                             "vs_reference": components(reference, hypothesis, uem),
                             "vs_pyannote": components(reference, hypothesis, uem)}}
        out.append({"uri": uri, "status": "done", "duration_s": duration,
                    "result": {"sides": sides, "reference_speakers": len(reference.labels())}})
    out.append({"uri": "broken", "status": "failed", "error": "AudioError: broken.wav: cannot decode", "result": None})
    return out


def test_corpus_rates_equal_an_accumulating_pyannote_metric(files) -> None:
    accumulator = Accumulator()
    for _, reference, hypothesis, uem, _ in files:
        accumulator.add(reference, hypothesis, uem)
    rates = corpus_rates([components(r, h, u) for _, r, h, u, _ in files])
    assert rates["der"] == pytest.approx(accumulator.result()["der"], abs=1e-12)
    assert rates["jer"] == pytest.approx(accumulator.result()["jer"], abs=1e-12)
    per_file = [score(r, h, u)["der"] for _, r, h, u, _ in files]
    assert abs(rates["der"] - np.mean(per_file)) > 1e-3  # not the mean of per-file DERs
    assert rates["missed"] + rates["false_alarm"] + rates["confusion"] == pytest.approx(rates["der"])


def test_overall_groups_and_worst_files_first(files) -> None:
    recs = records(files)
    overall = {row["side"]: row for row in corpus_report.overall_rows(recs)}
    assert list(overall) == ["pyannote", "float32"]
    assert overall["pyannote"]["der_vs_reference"] == 0.0
    assert overall["float32"]["files"] == 6
    assert overall["float32"]["rtf"] == pytest.approx(0.25) and overall["float32"]["audio_h_per_h"] == pytest.approx(4)
    by_speakers = corpus_report.grouped_rows(recs, "reference_speakers")
    assert sorted({row["reference_speakers"] for row in by_speakers}) == sorted(
        {len(r.labels()) for _, r, _, _, _ in files})
    by_duration = {row["duration"] for row in corpus_report.grouped_rows(recs, "duration")}
    assert by_duration == {"< 30 s", "30 s - 2 min", "2 - 10 min"}
    ranked = [row for row in corpus_report.file_rows(recs) if row["side"] == "float32"]
    ders = [row["der_vs_reference"] for row in ranked]
    assert ders == sorted(ders, reverse=True)
    text = corpus_report.corpus_markdown(recs, "run line")
    assert "## Failed recordings (1)" in text and "`broken`: AudioError" in text
    assert text.index(f"| {ranked[0]['file']} |") < text.index(f"| {ranked[-1]['file']} |")


def test_a_fast_mode_side_gets_its_corpus_der_against_exact_mode(files) -> None:
    recs = records(files)
    for (uri, reference, hypothesis, uem, duration), record in zip(files, recs):
        record["result"]["sides"]["float32-sparse"] = {
            "seconds": duration / 8, "speakers": len(reference.labels()),
            "vs_reference": components(reference, reference, uem), "vs_pyannote": components(reference, reference, uem),
            "vs_exact": components(hypothesis, reference, uem)}
    overall = {row["side"]: row for row in corpus_report.overall_rows(recs)}
    expected = corpus_rates([components(h, r, u) for _, r, h, u, _ in files])["der"]
    assert overall["float32-sparse"]["der_vs_exact"] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(overall["float32"]["der_vs_exact"]) and "der_vs_exact" not in overall["pyannote"]
    rows = {row["variant"]: row for row in corpus_report.corpus_pipeline_rows(recs)}
    assert rows["float32-sparse"]["der_vs_exact"] == pytest.approx(expected, abs=1e-12)
    assert "der_vs_exact" in corpus_report.corpus_markdown(recs, "run line")
