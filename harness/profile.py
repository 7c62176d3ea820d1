"""Per-layer timing of both models, MLX vs torch, on the same batch with the same thread count, and
the host synchronisations of the MLX pipeline's neural stages.

`python -m harness profile [--batch 8] [--rounds 3] [--threads N] [--kernels auto|mlx]` prints, per
model, one row per pyannote sub-module: torch ms, MLX ms, ratio (torch / MLX: > 1 means MLX is
faster), on the chosen kernel route (`mlx_diar.models.kernels`: "mlx" times the MLX layers a GPU
runs). It states the BLAS MLX uses, the thread count of each side and the cores each side actually
kept busy (process CPU time / wall time over the timed rounds). `--syncs` adds, per stage
(segmentation, embeddings) of the pipeline on the bundled sample, the host synchronisations per
batch of chunks and the bytes crossing between host and device (`harness.syncs`).

A layer's time is the time from the end of the previous named layer to its own end, on both
sides, so the functional ops between modules (ReLU, abs...) are counted in the same row. On the
MLX side every named output is evaluated as soon as it is produced (through the models'
``capture`` dict), so lazy evaluation cannot shift work between rows; MLX-only sub-layers
(e.g. each LSTM layer, torch's LSTM being one module) are listed under the row that holds them.
On the CPU in float32 the segmentation model's rows are its NumPy forward in this process
(`PyanNet.numpy_forward`); a last line times it over the pipeline's CPU lanes.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import mlx_diar  # noqa: F401  (first: loads OpenBLAS before anything imports mlx)
from mlx_diar.errors import ArgumentParser


@dataclass
class Profile:
    """Per-layer seconds (best of rounds) of one side, plus whole-model time and cores busy."""

    layers: dict[str, float] = field(default_factory=dict)
    total: float = float("inf")
    cores_busy: float = 0.0


class _MLXMarks(dict):
    """A ``capture`` dict that evaluates each output as it is stored and timestamps it."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[str, float]] = [("", time.perf_counter())]

    def __setitem__(self, name: str, value: Any) -> None:
        import mlx.core as mx

        mx.eval(value)
        self.marks.append((name, time.perf_counter()))
        super().__setitem__(name, value)  # the models read some captures back


def _durations(marks: list[tuple[str, float]], keep: set[str]) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Marks -> seconds per kept name (time since the previous kept mark); other names -> their holder."""
    out: dict[str, float] = {}
    held: dict[str, list[str]] = {}
    pending: list[str] = []
    last = marks[0][1]
    for name, t in marks[1:]:
        if name in keep:
            out[name] = out.get(name, 0.0) + t - last
            last = t
            held[name] = pending
            pending = []
        else:
            pending.append(name)
    return out, held


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: min(r[k] for r in runs if k in r) for k in runs[0]}


def _timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Best wall seconds over `rounds`, and process CPU time / wall time over all rounds."""
    best, cpu0, wall0 = float("inf"), time.process_time(), time.perf_counter()
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best, (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def torch_profile(model: Any, x: Any, names: list[str], rounds: int, start_marks: dict[str, str]) -> Profile:
    """Forward hooks on the named sub-modules of a torch model (``start_marks``: pre-hook name -> mark name)."""
    import torch

    marks: list[tuple[str, float]] = []
    handles = []
    modules = dict(model.named_modules())
    for name in names:
        if name in modules:
            handles.append(modules[name].register_forward_hook(
                lambda m, i, o, name=name: marks.append((name, time.perf_counter()))))
    for module, mark in start_marks.items():
        handles.append(modules[module].register_forward_pre_hook(
            lambda m, i, mark=mark: marks.append((mark, time.perf_counter()))))
    keep = set(names) & (set(modules) | set(start_marks.values()))
    runs = []
    with torch.inference_mode():
        model(x)
        for _ in range(rounds):
            marks.clear()
            marks.append(("", time.perf_counter()))
            model(x)
            runs.append(_durations(marks, keep)[0])
        for h in handles:
            h.remove()
        total, busy = _timed(lambda: model(x), rounds)
    return Profile(_best(runs), total, busy)


def mlx_profile(model: Any, x: Any, rounds: int, keep: set[str]) -> tuple[Profile, dict[str, list[str]]]:
    """Time every captured layer of an MLX model; names outside ``keep`` are folded into the next kept one."""
    import mlx.core as mx

    mx.eval(model(x))
    runs, held = [], {}
    for _ in range(rounds):
        marks = _MLXMarks()
        model(x, capture=marks)
        durations, held = _durations(marks.marks, keep)
        runs.append(durations)
    total, busy = _timed(lambda: mx.eval(model(x)), rounds)
    return Profile(_best(runs), total, busy), held


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:9.1f}"


def table(title: str, torch_side: Profile, mlx_side: Profile, held: dict[str, list[str]]) -> str:
    """Markdown table: layer, torch ms, MLX ms, torch / MLX."""
    lines = [f"### {title}", "", "| layer | torch ms | MLX ms | torch / MLX |", "|---|---:|---:|---:|"]
    for name, mlx_s in mlx_side.layers.items():
        torch_s = torch_side.layers.get(name)
        ratio = f"{torch_s / mlx_s:.2f}" if torch_s and mlx_s > 0 else "-"
        inner = f" (MLX: {', '.join(held[name])})" if held.get(name) else ""
        lines.append(f"| {name}{inner} | {_ms(torch_s)} | {_ms(mlx_s)} | {ratio} |")
    lines.append(f"| **sum of layers** | {_ms(sum(torch_side.layers.values()))} | "
                 f"{_ms(sum(mlx_side.layers.values()))} | "
                 f"{sum(torch_side.layers.values()) / sum(mlx_side.layers.values()):.2f} |")
    lines.append(f"| **whole model, no hooks** | {_ms(torch_side.total)} | {_ms(mlx_side.total)} | "
                 f"{torch_side.total / mlx_side.total:.2f} |")
    lines.append(f"| cores busy (CPU time / wall) | {torch_side.cores_busy:.2f} | {mlx_side.cores_busy:.2f} | |")
    return "\n".join(lines)


def openblas_threads() -> int | None:
    """Threads of the OpenBLAS loaded into this process, if any."""
    for name in ("openblas_get_num_threads", "openblas_get_num_threads64_"):
        try:
            return int(getattr(ctypes.CDLL(None), name)())
        except AttributeError:
            continue
    return None


def header(threads: int, batch: int, rounds: int) -> str:
    """Machine, BLAS, thread counts and batch of this profile."""
    import platform

    import mlx.core as mx
    import torch

    from mlx_diar.cpu.blas import active_blas
    from mlx_diar.models import kernels

    return "\n".join([
        f"machine: {platform.machine()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} "
        "(other processes share the CPU: ratios within this run are what count)",
        f"MLX {mx.__version__}, BLAS: {active_blas()}, OpenBLAS threads: {openblas_threads()}",
        f"torch {torch.__version__}, intra-op threads: {torch.get_num_threads()} (requested {threads}), "
        f"BLAS: {'MKL' if torch.backends.mkl.is_available() else 'other'}",
        f"batch: {batch} x 10 s chunks of the bundled sample, best of {rounds} rounds, float32; "
        f"kernels: {kernels.current_route()} (CPU accelerations {'on' if kernels.accelerated() else 'off'})",
    ])


def lanes_line(forward: Any, chunks: np.ndarray, rounds: int, torch_total: float) -> str:
    """The segmentation model's NumPy forward over the pipeline's CPU lanes (`mlx_diar.cpu.lanes`):
    best of rounds, after one call that lets the helpers load."""
    from mlx_diar.cpu.lanes import SegmentationLanes
    from mlx_diar.runtime.pipeline import cpu_lanes

    lanes = SegmentationLanes(forward, cpu_lanes())
    try:
        lanes(chunks)
        best, _ = _timed(lambda: lanes(chunks), rounds)
        count = lanes.lanes
    finally:
        lanes.close()
    return (f"Whole segmentation model over the pipeline's CPU lanes ({count}: this process and "
            f"{count - 1} helper process(es), one BLAS thread each): {1000 * best:.1f} ms, "
            f"torch / MLX {torch_total / best:.2f}")


def run(batch: int, rounds: int, threads: int, models: str) -> str:
    """Profile the offline fixture pipeline's models; returns the Markdown report."""
    import mlx.core as mx
    import torch

    from harness.compare import Variant, converted_model, source_fingerprint
    from harness.fixtures import fixture_dir
    from harness.paths import sample_audio
    from mlx_diar.runtime.audio import load_audio
    from mlx_diar.conversion.model_io import load_model
    from reference.runner import load_pipeline

    torch.set_num_threads(threads)
    root = fixture_dir()
    reference = load_pipeline(root)
    mine = load_model(converted_model(root, source_fingerprint(root), Variant("float32")))
    waveform = load_audio(sample_audio()[0])
    step = max(1, (waveform.shape[0] - 160000) // max(1, batch - 1))
    chunks = np.stack([np.resize(waveform[i * step:], 160000) for i in range(batch)]).astype(np.float32)
    x_torch, x_mlx = torch.from_numpy(chunks)[:, None], mx.array(chunks)
    parts = [header(threads, batch, rounds)]
    if models in ("segmentation", "both"):
        names = ["sincnet.wav_norm1d"] + [f"sincnet.{m}.{k}" for k in range(3) for m in ("conv1d", "pool1d", "norm1d")]
        names += ["sincnet", "lstm"] + [f"linear.{k}" for k in range(len(mine.segmentation.linear))]
        names += ["classifier", "activation"]
        torch_side = torch_profile(reference._segmentation.model, x_torch, names, rounds, {})
        mlx_side, held = mlx_profile(mine.segmentation, x_mlx, rounds, set(names))
        parts.append(table("Segmentation (PyanNet)", torch_side, mlx_side, held))
        forward = mine.segmentation.numpy_forward()
        if forward is not None:
            parts.append(lanes_line(forward, chunks, rounds, torch_side.total))
    if models in ("embedding", "both"):
        names = ["fbank", "resnet.conv1", "resnet.bn1"]
        names += [f"resnet.layer{i}.{j}" for i, n in enumerate(mine.embedding.config.num_blocks, 1) for j in range(n)]
        names += ["resnet.pool", "resnet.seg_1"]
        torch_side = torch_profile(reference._embedding.model_, x_torch, names, rounds, {"resnet": "fbank"})
        mlx_side, held = mlx_profile(mine.embedding, x_mlx, rounds, set(names))
        parts.append(table("Embedding (WeSpeakerResNet34)", torch_side, mlx_side, held))
    return "\n\n".join(parts) + "\n"


def stage_syncs(pipeline: Any, waveform: np.ndarray) -> dict[str, tuple[Any, int]]:
    """stage -> (`harness.syncs.Syncs`, batches) of the pipeline's neural stages on `waveform`:
    segmentation over every chunk, the embedding trunk over every active chunk; counted on a
    second run (the first makes the models' constants and compiled functions)."""
    import math

    from harness.syncs import counting

    stages: dict[str, tuple[Any, int]] = {}
    for _ in range(2):
        batches = [0]
        with counting() as segmentation:
            scores = pipeline.segmentation_scores(waveform)
        binarized = pipeline.binarize_segmentations(pipeline.to_multilabel(scores))
        masks = pipeline.embedding_masks(binarized, True)
        active = np.flatnonzero(masks.any(axis=(1, 2)))
        out = np.empty((masks.shape[0], masks.shape[1], pipeline.models.embedding.config.embed_dim), np.float32)
        with counting() as embeddings:
            pipeline.trunk_embeddings(waveform, binarized.sliding_window, masks, active, out,
                                      progress=lambda done, total: batches.__setitem__(0, batches[0] + 1))
        lanes = pipeline.segmentation_lanes.lanes if pipeline.segmentation_lanes else 1
        per_batch = int(pipeline.params["segmentation_batch_size"]) * lanes
        stages = {"segmentation": (segmentation, math.ceil(len(scores) / per_batch)),
                  "embeddings": (embeddings, batches[0])}
    return stages


def sync_report(kernels: str, seconds: float | None = None, segmentation_batch: int = 8,
                embedding_batch: int = 24) -> str:
    """Markdown table of `stage_syncs` for the float32 fixture pipeline on the bundled sample (its
    first `seconds` when given)."""
    from harness.compare import Variant, converted_model, source_fingerprint
    from harness.fixtures import fixture_dir
    from harness.paths import sample_audio
    from mlx_diar.runtime.audio import SAMPLE_RATE, load_audio
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    root = fixture_dir()
    pipeline = SpeakerDiarizationPipeline(
        model_path=converted_model(root, source_fingerprint(root), Variant("float32")), kernels=kernels,
        params={"segmentation_batch_size": segmentation_batch, "embedding_batch_size": embedding_batch})
    waveform = load_audio(sample_audio()[0])
    if seconds is not None:
        waveform = waveform[: round(seconds * SAMPLE_RATE)]
    lines = [f"### Host synchronisations per batch ({kernels} kernels, float32, bundled sample)", "",
             "| stage | batches | syncs / batch | evaluations | to host | to device | MB to host | MB to device |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for stage, (syncs, count) in stage_syncs(pipeline, waveform).items():
        per = syncs.per(count)
        lines.append(f"| {stage} | {count} | {per['syncs']:.2f} | {per['evaluations']:.2f} | {per['to_host']:.2f} | "
                     f"{per['to_device']:.2f} | {per['to_host_MB']:.2f} | {per['to_device_MB']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from mlx_diar.models import kernels

    parser = ArgumentParser(prog="python -m harness profile", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="10 s chunks per batch (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the best is kept (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads (default: all cores, as MLX/OpenBLAS use)")
    parser.add_argument("--models", choices=("segmentation", "embedding", "both"), default="both")
    parser.add_argument("--kernels", choices=kernels.ROUTES, default="auto",
                        help="kernel route of the MLX side (mlx: the MLX layers only, as a GPU runs them)")
    parser.add_argument("--syncs", action="store_true",
                        help="also count the host synchronisations per batch of the pipeline's neural stages")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    with kernels.route(args.kernels):
        report = run(args.batch, args.rounds, args.threads, args.models)
    if args.syncs:
        report += "\n" + sync_report(args.kernels) + "\n"
    print(report)
    if args.out is not None:
        from mlx_diar.fsutil import atomic_write

        atomic_write(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
