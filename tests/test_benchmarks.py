"""Speed benchmarks, run only with `pytest --benchmark`: MLX and pyannote on the same 10 s, same run.

Each MLX benchmark stores the pyannote time of the same work and the speed ratio in
`benchmark.extra_info` (shown with `--benchmark-columns` / saved with `--benchmark-json`).
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.runtime.audio import SAMPLE_RATE


def _best_of(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_reference_pipeline_10s(benchmark, reference_pipeline, sample_10s) -> None:
    from reference.runner import run_reference

    run = benchmark.pedantic(run_reference, args=(reference_pipeline, sample_10s),
                             kwargs={"record_layers": False}, rounds=2, warmup_rounds=1)
    assert run.meta["timings"]["total"] > 0


def test_mlx_pipeline_10s(benchmark, reference_pipeline, mlx_pipeline, sample_10s) -> None:
    from reference.runner import run_reference

    pyannote = _best_of(lambda: run_reference(reference_pipeline, sample_10s, record_layers=False), rounds=2)
    out = benchmark.pedantic(mlx_pipeline.apply, args=(sample_10s,), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(pyannote_s=pyannote, speed_ratio=pyannote / benchmark.stats.stats.min)
    assert out.speaker_diarization is not None


@pytest.mark.parametrize("model", ["segmentation", "embedding"])
def test_mlx_model_batch(benchmark, reference_pipeline, mlx_pipeline, sample, model: str) -> None:
    """One batch of 8 ten-second chunks through each model (mx.eval inside the timed function)."""
    import torch

    waveform, _ = sample
    chunks = np.stack([waveform[i * SAMPLE_RATE: (i + 10) * SAMPLE_RATE] for i in range(8)])
    if model == "segmentation":
        torch_model, mlx_model = reference_pipeline._segmentation.model, mlx_pipeline.models.segmentation
    else:
        torch_model, mlx_model = reference_pipeline._embedding.model_, mlx_pipeline.models.embedding
    x_torch, x_mlx = torch.from_numpy(chunks)[:, None], mx.array(chunks)
    with torch.inference_mode():
        torch_model(x_torch)
        pyannote = _best_of(lambda: torch_model(x_torch))
    benchmark.pedantic(lambda: mx.eval(mlx_model(x_mlx)), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(pyannote_s=pyannote, speed_ratio=pyannote / benchmark.stats.stats.min)


# ------------------------------------------------------------------------------- pipeline ratio table
RATIOS: list[dict] = []  # one row per (clip, variant, stage); printed by conftest.pytest_terminal_summary
BENCH_CLIPS = {"sample-30s": None, "synth-10min": 10.0}  # minutes of harness.memory.long_conversation
STAGES = ("segmentation", "embeddings", "clustering", "total")


@pytest.fixture(scope="module", params=list(BENCH_CLIPS))
def bench_clip(request, sample) -> tuple[str, np.ndarray]:
    if BENCH_CLIPS[request.param] is None:
        return request.param, sample[0]
    from harness.memory import long_conversation

    return request.param, long_conversation(BENCH_CLIPS[request.param])


@pytest.fixture(scope="module")
def pyannote_clip_run(bench_clip, reference_pipeline):
    from reference.runner import run_reference

    name, waveform = bench_clip
    return run_reference(reference_pipeline, waveform, uri=name, record_layers=False)


@pytest.mark.parametrize("mode", ["exact", "sparse", "shared"])
def test_pipeline_stage_ratios(benchmark, bench_clip, pyannote_clip_run, mlx_pipeline, mode: str) -> None:
    """Whole pipeline, MLX (exact or a fast embedding mode) vs pyannote on the same clip, same run."""
    import torch

    from harness.metrics import score, uem_for

    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    name, waveform = bench_clip
    pipeline = SpeakerDiarizationPipeline(models=mlx_pipeline.models, params={"embedding_mode": mode})
    rounds = 2 if BENCH_CLIPS[name] is None else 1
    out = benchmark.pedantic(pipeline.apply, args=(waveform,), kwargs={"uri": name},
                             rounds=rounds, warmup_rounds=1 if rounds > 1 else 0)
    der = score(pyannote_clip_run.diarization, out.speaker_diarization, uem_for(len(waveform) / 16000))["der"]
    reference = pyannote_clip_run.meta["timings"]
    for stage in STAGES:
        mine, theirs = out.timings.get(stage, float("nan")), reference.get(stage, float("nan"))
        RATIOS.append({"clip": name, "variant": f"float32 {mode}", "stage": stage, "pyannote_s": theirs,
                       "mlx_s": mine, "speed_ratio": theirs / mine if mine else float("nan"), "der": der,
                       "threads": f"torch {torch.get_num_threads()}"})
    benchmark.extra_info.update(der_vs_pyannote=der, stages={r["stage"]: r for r in RATIOS[-len(STAGES):]})
    assert out.speaker_diarization is not None


def ratio_table(rows: list[dict]) -> str:
    """Plain-text table of RATIOS (speed ratio = pyannote s / MLX s: > 1 means MLX is faster)."""
    lines = [f"{'clip':<12} {'variant':<16} {'stage':<13} {'pyannote s':>10} {'MLX s':>8} {'ratio':>6} {'DER':>7}"]
    for r in rows:
        lines.append(f"{r['clip']:<12} {r['variant']:<16} {r['stage']:<13} {r['pyannote_s']:>10.2f} "
                     f"{r['mlx_s']:>8.2f} {r['speed_ratio']:>5.2f}x {r['der']:>7.2%}")
    return "\n".join(lines)


# ------------------------------------------------------------------------- variants x kernel routes
VARIANT_ROWS: list[dict] = []  # printed by conftest.pytest_terminal_summary
# name -> (dtype, quantize bits, embedding mode); each loads as users get it (compute="auto": on the
# CPU a reduced or quantized model computes in float32 with its rounded weights)
BENCH_VARIANTS = {"float32 exact": ("float32", None, "exact"), "float32 sparse": ("float32", None, "sparse"),
                  "float16 policy": ("float16", None, "exact"), "bfloat16 policy": ("bfloat16", None, "exact"),
                  "8-bit g64": ("float32", 8, "exact")}
VARIANT_CLIPS = ("sample", "speakrs-test")
VARIANT_ROUNDS = 3


@pytest.mark.parametrize("clip", VARIANT_CLIPS)
def test_variant_speed_on_both_routes(benchmark, clip, sample, reference_pipeline, fixture_root) -> None:
    """Every variant on both kernel routes against pyannote on one clip: VARIANT_ROUNDS interleaved rounds
    (pyannote once, then every variant and route once), medians and spread of each side's stages."""
    import soundfile as sf

    from harness.compare import Variant, converted_model, source_fingerprint
    from harness.metrics import score, uem_for
    from mlx_diar.models.kernels import ROUTES
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline
    from reference.runner import run_reference

    waveform = sample[0] if clip == "sample" else sf.read("tests/data/speakrs/test.wav", dtype="float32")[0]
    fingerprint = source_fingerprint(fixture_root)
    pipelines = {}
    for name, (dtype, bits, mode) in BENCH_VARIANTS.items():
        path = converted_model(fixture_root, fingerprint, Variant(dtype, bits, embedding_mode=mode))
        for route in ROUTES:
            pipelines[name, route] = SpeakerDiarizationPipeline(model_path=path, kernels=route,
                                                                params={"embedding_mode": mode})
            pipelines[name, route].apply(waveform[: 10 * SAMPLE_RATE])  # warm-up: helpers, compiled steps

    runs: dict = {key: [] for key in [("pyannote", ""), *pipelines]}
    outputs = {}

    def interleaved() -> None:
        for _ in range(VARIANT_ROUNDS):
            reference = run_reference(reference_pipeline, waveform, uri=clip, record_layers=False)
            runs["pyannote", ""].append(reference.meta["timings"])
            outputs["pyannote"] = reference.diarization
            for key, pipeline in pipelines.items():
                out = pipeline.apply(waveform, uri=clip)
                runs[key].append(out.timings)
                outputs[key] = out.speaker_diarization

    benchmark.pedantic(interleaved, rounds=1, warmup_rounds=0)
    uem = uem_for(len(waveform) / SAMPLE_RATE)
    theirs = {stage: float(np.median([r[stage] for r in runs["pyannote", ""]])) for stage in STAGES}
    for (name, route), timings in runs.items():
        if name == "pyannote":
            continue
        totals = [r["total"] for r in timings]
        mine = {stage: float(np.median([r.get(stage, np.nan) for r in timings])) for stage in STAGES}
        VARIANT_ROWS.append({"clip": clip, "variant": name, "kernels": route, "pyannote_s": theirs["total"],
                             "mlx_s": mine["total"], "spread": (min(totals), max(totals)),
                             "ratio": theirs["total"] / mine["total"],
                             "vs_float32": float(np.median([r["total"] for r in runs["float32 exact", route]]))
                             / mine["total"],
                             "segmentation_ratio": theirs["segmentation"] / mine["segmentation"],
                             "der": score(outputs["pyannote"], outputs[name, route], uem)["der"]})
    benchmark.extra_info.update(rows=[r for r in VARIANT_ROWS if r["clip"] == clip])


def variant_table(rows: list[dict]) -> str:
    """Plain-text table of VARIANT_ROWS: medians of VARIANT_ROUNDS runs, speed ratios (> 1: faster)."""
    lines = [f"{'clip':<17} {'variant':<16} {'kernels':<7} {'pyannote s':>10} {'MLX s':>7} {'(min-max)':>13} "
             f"{'ratio':>6} {'vs f32':>6} {'seg ratio':>9} {'DER':>7}"]
    for r in rows:
        lines.append(f"{r['clip']:<17} {r['variant']:<16} {r['kernels']:<7} {r['pyannote_s']:>10.2f} "
                     f"{r['mlx_s']:>7.2f} {r['spread'][0]:>6.2f}-{r['spread'][1]:<6.2f} {r['ratio']:>5.2f}x "
                     f"{r['vs_float32']:>5.2f}x {r['segmentation_ratio']:>8.2f}x {r['der']:>7.2%}")
    return "\n".join(lines)
