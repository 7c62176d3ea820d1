"""`harness compare --dataset` through the executor: records, reports, corpus DER like pyannote.metrics, resume."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness import compare


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, str]:
    """Two synthetic two-speaker conversations compared in this process: (dataset, out, stdout)."""
    from harness.corpus import make_corpus

    dataset = tmp_path_factory.mktemp("dataset")
    make_corpus(dataset, 2, seed=7, speakers=(2,))
    out = tmp_path_factory.mktemp("out") / "r"
    assert compare.main(["--dataset", str(dataset), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    return dataset, out, (out / "corpus.md").read_text()


def test_reports_and_records(run) -> None:
    dataset, out, corpus_md = run
    assert {"corpus.md", "pipeline.csv", "layers.csv", "timing.csv", "summary.md", "report.html", "meta.json",
            "records", "rttm"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "records").iterdir()) == ["synth000.json", "synth001.json"]
    assert {p.name for p in (out / "rttm").iterdir()} == {f"synth00{k}.{side}.rttm" for k in (0, 1)
                                                          for side in ("reference", "pyannote", "float32")}
    assert "2 done, 0 skipped (finished before), 0 failed" in corpus_md and "## By duration" in corpus_md


def test_corpus_rows_equal_an_accumulating_pyannote_metric(run) -> None:
    """The (all) rows come from summed components; pyannote.metrics on the written RTTMs gives the same."""
    from harness.metrics import Accumulator, load_rttm, uem_for

    _, out, _ = run
    pipeline = pd.read_csv(out / "pipeline.csv")
    corpus = pipeline[pipeline.file == "(all)"].set_index("variant")
    for side in ("pyannote", "float32"):
        versus_reference, versus_pyannote = Accumulator(), Accumulator()
        for uri in ("synth000", "synth001"):
            read = {name: load_rttm(out / "rttm" / f"{uri}.{name}.rttm")[uri]
                    for name in ("reference", "pyannote", side)}
            duration = pipeline[(pipeline.file == uri) & (pipeline.variant == side)].duration_s.item()
            uem = uem_for(duration)  # no .uem in the dataset: the whole file is scored
            versus_reference.add(read["reference"], read[side], uem)
            versus_pyannote.add(read["pyannote"], read[side], uem)
        assert corpus.loc[side, "der_vs_reference"] == pytest.approx(versus_reference.result()["der"], abs=1e-3)
        assert corpus.loc[side, "jer_vs_reference"] == pytest.approx(versus_reference.result()["jer"], abs=1e-3)
        if side != "pyannote":
            assert corpus.loc[side, "der_vs_pyannote"] == pytest.approx(versus_pyannote.result()["der"], abs=1e-3)


def test_rerun_skips_finished_recordings(run, capsys) -> None:
    dataset, out, _ = run
    before = (out / "records" / "synth000.json").read_text()
    assert compare.main(["--dataset", str(dataset), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "0 done, 2 skipped (finished before), 0 failed" in capsys.readouterr().out
    assert (out / "records" / "synth000.json").read_text() == before
