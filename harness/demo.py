"""`make demo`: pyannote's pipeline (offline fixture) on the bundled sample, with turns and DER."""

from __future__ import annotations

from mlx_diar.audio import load_audio


def demo() -> int:
    """Run the reference pipeline on pyannote's sample.wav and score it against sample.rttm."""
    from harness.fixtures import fixture_dir, sample_audio
    from harness.metrics import load_rttm, score, uem_for
    from reference.runner import load_pipeline, run_reference

    wav, rttm = sample_audio()
    root = fixture_dir()
    print(f"pipeline: {root} (segmentation real; embedding and PLDA seeded, see FIXTURE.md)")
    waveform = load_audio(wav)
    run = run_reference(load_pipeline(root), waveform, uri="sample", record_layers=False)
    for turn, _, speaker in run.diarization.itertracks(yield_label=True):
        print(f"{speaker}: {turn.start:6.2f}s - {turn.end:6.2f}s")
    reference = next(iter(load_rttm(rttm).values()))
    metrics = score(reference, run.diarization, uem_for(run.meta["duration"]))
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in run.meta["timings"].items())
    print(f"DER {metrics['der']:.2%} (missed {metrics['missed']:.2%}, false alarm {metrics['false_alarm']:.2%}, "
          f"confusion {metrics['confusion']:.2%}), JER {metrics['jer']:.2%} against {rttm.name}")
    print(f"timings: {timings}")
    return 0
