"""Speed benchmarks (run with `pytest --benchmark`): pyannote reference side on 10 s of the sample."""

from __future__ import annotations


def test_reference_pipeline_10s(benchmark, reference_pipeline, sample_10s) -> None:
    from reference.runner import run_reference

    run = benchmark.pedantic(run_reference, args=(reference_pipeline, sample_10s),
                             kwargs={"record_layers": False}, rounds=2, warmup_rounds=1)
    assert run.meta["timings"]["total"] > 0
