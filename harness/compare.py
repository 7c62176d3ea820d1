"""`python -m harness compare`: MLX vs pyannote.audio on identical 16 kHz input, per layer, per file, per variant.

For every variant (dtype, optional quantization) it measures layer-by-layer errors on the
exact inputs the reference recorded, the pipeline's DER/JER against the reference RTTM and
against pyannote's own output, wall-clock per stage and peak memory of both sides; then it
writes layers.csv, pipeline.csv, timing.csv, summary.md and report.html, and with `--check`
exits non-zero when a parity target of shared/ARCHITECTURE.md §5 (harness.targets) is missed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness import targets
from harness.memory import PeakRSS

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
STAGES = ("segmentation", "speaker_counting", "embeddings", "clustering", "reconstruction", "total")
WARMUP_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One MLX conversion to compare: a dtype and precision policy, optionally with quantized weights."""

    dtype: str
    quantize: int | None = None
    group_size: int = 64
    precision: str = "default"  # or "pure": every block in `dtype` (reported, never gated)

    @property
    def name(self) -> str:
        pure = "-pure" if self.precision == "pure" and self.dtype != "float32" else ""
        return self.dtype + pure + (f"-q{self.quantize}g{self.group_size}" if self.quantize else "")


def variants(dtype: str, quantize: int | None, group_size: int, pure: bool = False) -> list[Variant]:
    """Variants for `--dtype` (one or `all`), each also quantized when `--quantize` is given; with
    `pure`, also the naive all-reduced variant of each reduced dtype."""
    dtypes = ["float32", "float16", "bfloat16"] if dtype == "all" else [dtype]
    out = [Variant(d) for d in dtypes]
    if pure:
        out += [Variant(d, precision="pure") for d in dtypes if d != "float32"]
    if quantize:
        out += [Variant(d, quantize, group_size) for d in dtypes]
    return out


@dataclasses.dataclass
class AudioItem:
    """One file to compare: its 16 kHz waveform and, when available, reference RTTM and UEM."""

    path: Path
    uri: str
    waveform: np.ndarray
    reference: Any = None  # pyannote.core.Annotation
    uem: Any = None  # pyannote.core.Timeline

    @property
    def duration(self) -> float:
        return len(self.waveform) / 16000


def collect_audio(audio: list[Path] | None, dataset: Path | None) -> list[AudioItem]:
    """The files of `--audio` or `--dataset` (default: pyannote's bundled sample with its RTTM)."""
    from harness.fixtures import sample_audio
    from harness.metrics import load_rttm, load_uem, uem_for
    from mlx_diar.audio import load_audio

    if dataset is not None:
        if not dataset.is_dir():
            raise SystemExit(f"error: --dataset {dataset}: not a directory")
        paths = sorted(p for p in dataset.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not paths:
            raise SystemExit(f"error: --dataset {dataset}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    elif audio:
        paths = list(audio)
    else:
        paths = [sample_audio()[0]]
    items = []
    for path in paths:
        waveform = load_audio(path)
        item = AudioItem(path=Path(path), uri=Path(path).stem, waveform=waveform)
        rttm = Path(path).with_suffix(".rttm")
        if rttm.is_file():
            annotations = load_rttm(rttm)
            item.reference = annotations.get(item.uri) or next(iter(annotations.values()))
        uem = Path(path).with_suffix(".uem")
        item.uem = load_uem(uem, item.uri) if uem.is_file() else uem_for(item.duration)
        items.append(item)
    return items


def source_fingerprint(root: Path) -> str:
    """sha256 over the pipeline's config and every checkpoint/PLDA file (names the model cache)."""
    from mlx_diar.checkpoint import sha256sum

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".bin", ".npz")):
        digest.update(f"{path.relative_to(root)}:{sha256sum(path)}".encode())
    return digest.hexdigest()


def converted_model(root: Path, fingerprint: str, variant: Variant) -> Path:
    """The MLX conversion of `root` for `variant`, cached by source fingerprint + variant."""
    from harness.fixtures import cache_root
    from mlx_diar.convert import CONVERTER_REVISION, convert_pyannote_model

    target = cache_root() / "models" / f"{fingerprint[:16]}-{variant.name}-r{CONVERTER_REVISION}"
    if not (target / "config.json").is_file():
        convert_pyannote_model(root, target, "full", variant.dtype, quantize=variant.quantize,
                               q_group_size=variant.group_size, precision_mode=variant.precision)
    return target


# ---------------------------------------------------------------------------------------------- layers
def layer_errors(reference: np.ndarray, mine: np.ndarray) -> dict[str, float]:
    """max abs error, relative L2 error and cosine similarity of two activations."""
    ref = reference.astype(np.float64).ravel()
    got = mine.astype(np.float64).ravel()
    diff = got - ref
    ref_norm, got_norm = np.linalg.norm(ref), np.linalg.norm(got)
    return {
        "max_abs_err": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_l2": float(np.linalg.norm(diff) / ref_norm) if ref_norm else float(np.linalg.norm(diff)),
        "cosine": float(ref @ got / (ref_norm * got_norm)) if ref_norm and got_norm else float("nan"),
    }


def mlx_layers(models, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """MLX activations (torch layout) on the exact inputs the reference bundle recorded."""
    import mlx.core as mx

    out: dict[str, dict[str, np.ndarray]] = {}
    if "inputs/segmentation" in arrays:
        capture: dict[str, Any] = {}
        models.segmentation(mx.array(arrays["inputs/segmentation"][:, 0, :]), capture=capture)
        out["segmentation"] = {k: np.array(v.astype(mx.float32)) for k, v in capture.items()}
    if "inputs/embedding" in arrays:
        capture = {}
        weights = arrays.get("inputs/embedding_weights")
        models.embedding(mx.array(arrays["inputs/embedding"][:, 0, :]),
                         weights=None if weights is None else mx.array(weights), capture=capture)
        out["embedding"] = {k: np.array(v.astype(mx.float32)) for k, v in capture.items()}
    return out


def layer_rows(file: str, variant: Variant, arrays: dict[str, np.ndarray],
               captured: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """One row per layer present on both sides, in the MLX forward order."""
    rows = []
    for model, layers in captured.items():
        for depth, (name, mine) in enumerate(layers.items()):
            key = f"layers/{model}/{name}"
            if key not in arrays:
                continue
            reference = arrays[key]
            row: dict[str, Any] = {"file": file, "variant": variant.name, "dtype": variant.dtype,
                                   "quantize": f"q{variant.quantize}g{variant.group_size}" if variant.quantize else "",
                                   "model": model, "layer": name, "depth": depth, "shape": str(reference.shape)}
            if reference.shape != mine.shape:
                row.update(max_abs_err=np.nan, rel_l2=np.inf, cosine=np.nan, argmax_agreement=np.nan,
                           target=f"shape {reference.shape}", passed=False)
                rows.append(row)
                continue
            row.update(layer_errors(reference, mine))
            row["argmax_agreement"] = (float(np.mean(reference.argmax(-1) == mine.argmax(-1)))
                                       if model == "segmentation" and name == "activation" else np.nan)
            row["target"], row["passed"] = layer_target(variant, model, name, row)
            rows.append(row)
    return rows


def layer_target(variant: Variant, model: str, name: str, row: dict[str, Any]) -> tuple[str, Any]:
    """The §5 target for this layer and whether it is met (NA when the variant has none)."""
    if variant.dtype != "float32" or variant.quantize:
        return "", None
    if model == "segmentation" and name == "activation":
        ok = (row["max_abs_err"] <= targets.SEGMENTATION_MAX_ABS_ERR_F32
              and row["argmax_agreement"] >= targets.SEGMENTATION_ARGMAX_AGREEMENT_F32
              and row["rel_l2"] <= targets.LAYER_REL_L2_F32)
        return (f"rel L2 <= {targets.LAYER_REL_L2_F32:g}, max abs <= {targets.SEGMENTATION_MAX_ABS_ERR_F32:g}, "
                f"argmax 100%"), ok
    if model == "embedding" and name in ("embedding", "resnet.seg_1"):
        ok = row["cosine"] >= targets.EMBEDDING_COSINE_F32 and row["rel_l2"] <= targets.LAYER_REL_L2_F32
        return f"rel L2 <= {targets.LAYER_REL_L2_F32:g}, cosine >= {targets.EMBEDDING_COSINE_F32}", ok
    return f"rel L2 <= {targets.LAYER_REL_L2_F32:g}", row["rel_l2"] <= targets.LAYER_REL_L2_F32


# ---------------------------------------------------------------------------------------------- pipeline
def segmentation_agreement(mine: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(agreement on all frames, agreement on frames the float32 reference decides) of the argmax."""
    same = mine.argmax(-1) == reference.argmax(-1)
    top2 = np.sort(reference, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) >= targets.SEGMENTATION_TIE_MARGIN
    return float(np.mean(same)), float(np.mean(same[decided])) if decided.any() else 1.0


def min_cosine(mine: np.ndarray, reference: np.ndarray) -> float:
    """Smallest cosine similarity over (chunk, speaker) embeddings."""
    a, b = mine.reshape(-1, mine.shape[-1]), reference.reshape(-1, reference.shape[-1])
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(np.nanmin(cos))


def pipeline_target(variant: Variant, row: dict[str, Any]) -> tuple[str, Any]:
    """The §5 pipeline target for this variant, and whether it is met (None: reported, not gated)."""
    der = row["der_vs_pyannote"]
    if variant.dtype == "float32" and not variant.quantize:
        ok = (der <= targets.PIPELINE_DER_F32 and row["segmentation_frame_agreement_decided"]
              >= targets.SEGMENTATION_ARGMAX_AGREEMENT_F32 and row["embedding_min_cosine"] >= targets.EMBEDDING_COSINE_F32)
        return (f"DER vs pyannote = {targets.PIPELINE_DER_F32:.0%}, argmax 100% (decided frames), "
                f"cosine >= {targets.EMBEDDING_COSINE_F32}"), ok
    target = targets.precision_target(variant.dtype, variant.precision, variant.quantize)
    if target is None:
        return "", None
    ok = (der <= target.der and row["segmentation_frame_agreement"] >= target.frames
          and row["embedding_min_cosine"] >= target.cosine and row["speakers"] == row["pyannote_speakers"])
    return (f"DER vs pyannote <= {100 * target.der:.1f} pt, frames >= {target.frames:.1%}, "
            f"cosine >= {target.cosine}, speakers equal"), ok


# ---------------------------------------------------------------------------------------------- run
def machine_info(device: str) -> dict[str, Any]:
    from mlx_diar._blas import active_blas

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else float("nan")
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory, 1),
            "device": f"mlx {device}", "blas": active_blas()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("mlx", "mlx-diar", "torch", "pyannote.audio", "numpy", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_short_hash() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "nogit"
    except (OSError, subprocess.TimeoutExpired):
        return "nogit"


def checkpoint_meta(resolved, fixture: bool) -> dict[str, Any]:
    from mlx_diar.checkpoint import sha256sum

    files = [{"role": "segmentation", "path": str(resolved.segmentation), "sha256": sha256sum(resolved.segmentation),
              "real": True},
             {"role": "embedding", "path": str(resolved.embedding), "sha256": sha256sum(resolved.embedding),
              "real": not fixture, "weights": "seeded trunk, estimated output layer" if fixture else "real"}]
    for name in ("xvec_transform.npz", "plda.npz"):
        path = resolved.plda / name
        files.append({"role": f"plda/{name}", "path": str(path), "sha256": sha256sum(path), "real": not fixture,
                      "weights": "estimated from synthetic speakers" if fixture else "real"})
    return {"source": resolved.origin, "files": files}


SEEDED_PARTS = [
    "The embedding model (WeSpeakerResNet34) is not trained: its trunk has seeded random weights and only "
    "its output layer (resnet.seg_1) is estimated from synthetic espeak-ng/Festival speakers; no trained "
    "WeSpeaker weights are reachable offline.",
    "The PLDA is not pyannote's: it is estimated from the same kind of synthetic speakers (FIXTURE.md).",
    "DER against the reference RTTM therefore measures this fixture system, not community-1's quality; "
    "DER of MLX against pyannote measures the port.",
]


class Progress:
    """A rich progress line (stage and file), silent with --quiet or when stderr is not a terminal."""

    def __init__(self, quiet: bool, total: int) -> None:
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(transient=True)
            self.task = self.bar.add_task("starting", total=total)
            self.bar.start()

    def step(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text, advance=1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def timing_rows(file: str, variant: str, side: str, timings: dict[str, float], duration: float,
                peak_mb: float, warmup_runs: int, baseline: dict[str, float] | None) -> list[dict[str, Any]]:
    rows = []
    for stage in STAGES:
        seconds = float(timings.get(stage, 0.0))
        ratio = np.nan
        if baseline is not None and seconds > 0:
            ratio = baseline.get(stage, np.nan) / seconds
        rows.append({"file": file, "variant": variant, "side": side, "stage": stage, "seconds": seconds,
                     "rtf": seconds / duration if duration else np.nan, "speed_ratio": ratio,
                     "peak_rss_mb": peak_mb, "warmup_runs": warmup_runs})
    return rows


def run_compare(checkpoint: str | None, items: list[AudioItem], variant_list: list[Variant], device: str,
                layer_items: int = 1, quiet: bool = False,
                sensitivity: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure everything; returns (frames as lists of rows, meta/annotations)."""
    from harness.fixtures import fixture_dir
    from harness.metrics import Accumulator, score
    from harness.sensitivity import footprint
    from mlx_diar.pipeline import SpeakerDiarizationPipeline
    from mlx_diar.sources import resolve_pipeline
    from reference.runner import load_pipeline, run_reference

    fixture = checkpoint is None
    resolved = resolve_pipeline(fixture_dir() if fixture else checkpoint)
    root = resolved.root
    fingerprint = source_fingerprint(root)
    progress = Progress(quiet, total=len(variant_list) * (len(items) + 1) + len(items) + 1)
    progress.step("loading pyannote.audio")
    reference_pipeline = load_pipeline(root)
    warmup = items[0].waveform[: int(WARMUP_SECONDS * 16000)]
    run_reference(reference_pipeline, warmup, record_layers=False)  # warm-up, excluded

    layers: list[dict] = []
    pipeline_rows: list[dict] = []
    timing: list[dict] = []
    annotations: dict[str, Any] = {}
    references: dict[str, Any] = {}
    for item in items:
        progress.step(f"pyannote: {item.uri}")
        with PeakRSS() as rss:
            ref = run_reference(reference_pipeline, item.waveform, uri=item.uri, layer_items=layer_items)
        references[item.uri] = ref
        annotations[item.uri] = {"duration": item.duration, "reference": item.reference, "pyannote": ref.diarization,
                                 "mlx": {}}
        timing += timing_rows(item.uri, "pyannote", "pyannote", ref.meta["timings"], item.duration, rss.peak_mb, 1, None)
        row = {"file": item.uri, "variant": "pyannote", "side": "pyannote", "duration_s": item.duration,
               "speakers": len(ref.diarization.labels()),
               "reference_speakers": len(item.reference.labels()) if item.reference is not None else np.nan,
               "der_vs_reference": np.nan, "jer_vs_reference": np.nan, "der_vs_pyannote": np.nan,
               "jer_vs_pyannote": np.nan, "segmentation_frame_agreement": np.nan,
               "segmentation_frame_agreement_decided": np.nan, "embedding_min_cosine": np.nan,
               "target": "", "passed": None}
        if item.reference is not None:
            s = score(item.reference, ref.diarization, item.uem)
            row.update(der_vs_reference=s["der"], jer_vs_reference=s["jer"])
        pipeline_rows.append(row)

    corpus = {"pyannote": Accumulator()}
    for item in items:
        if item.reference is not None:
            corpus["pyannote"].add(item.reference, references[item.uri].diarization, item.uem)
    for variant in variant_list:
        progress.step(f"converting {variant.name}")
        model_dir = converted_model(root, fingerprint, variant)
        pipeline = SpeakerDiarizationPipeline(model_path=model_dir, device=device)
        pipeline.apply(warmup)  # warm-up, excluded
        corpus[variant.name], corpus[f"{variant.name}/pyannote"] = Accumulator(), Accumulator()
        for item in items:
            progress.step(f"mlx {variant.name}: {item.uri}")
            ref = references[item.uri]
            with PeakRSS() as rss:
                out = pipeline.apply(item.waveform, uri=item.uri, keep_stages=True)
            annotations[item.uri]["mlx"][variant.name] = out.speaker_diarization
            layers += layer_rows(item.uri, variant, ref.arrays, mlx_layers(pipeline.models, ref.arrays))
            timing += timing_rows(item.uri, variant.name, "mlx", out.timings, item.duration, rss.peak_mb, 1,
                                  ref.meta["timings"])
            versus = score(ref.diarization, out.speaker_diarization, item.uem)
            corpus[f"{variant.name}/pyannote"].add(ref.diarization, out.speaker_diarization, item.uem)
            row = {"file": item.uri, "variant": variant.name, "side": "mlx", "duration_s": item.duration,
                   "speakers": len(out.speaker_diarization.labels()),
                   "pyannote_speakers": len(ref.diarization.labels()), **footprint(model_dir),
                   "reference_speakers": len(item.reference.labels()) if item.reference is not None else np.nan,
                   "der_vs_reference": np.nan, "jer_vs_reference": np.nan,
                   "der_vs_pyannote": versus["der"], "jer_vs_pyannote": versus["jer"]}
            all_frames, decided = (segmentation_agreement(out.stages["segmentation_scores"].data,
                                                          ref.arrays["segmentation_scores"])
                                   if "embeddings" in out.stages else (1.0, 1.0))
            row.update(segmentation_frame_agreement=all_frames, segmentation_frame_agreement_decided=decided,
                       embedding_min_cosine=(min_cosine(out.stages["embeddings"], ref.arrays["embeddings"])
                                             if "embeddings" in out.stages and "embeddings" in ref.arrays else np.nan))
            if item.reference is not None:
                s = score(item.reference, out.speaker_diarization, item.uem)
                row.update(der_vs_reference=s["der"], jer_vs_reference=s["jer"])
                corpus[variant.name].add(item.reference, out.speaker_diarization, item.uem)
            row["target"], row["passed"] = pipeline_target(variant, row)
            pipeline_rows.append(row)
    progress.close()
    sensitivity_rows = []
    if sensitivity:
        from harness.sensitivity import probes, run_map

        sensitivity_rows = run_map(items, references, converted_model(root, fingerprint, Variant("float32")),
                                   probes(), log=lambda text: None if quiet else print(text, file=sys.stderr))
    if len(items) > 1:
        pipeline_rows += corpus_rows(items, variant_list, corpus)
    meta = {"checkpoint": checkpoint_meta(resolved, fixture), "fixture": fixture, "fingerprint": fingerprint}
    return ({"layers": layers, "pipeline": pipeline_rows, "timing": timing, "sensitivity": sensitivity_rows},
            {"meta": meta, "annotations": annotations})


def corpus_rows(items: list[AudioItem], variant_list: list[Variant], corpus: dict[str, Any]) -> list[dict]:
    """Aggregate rows (file "(all)"): corpus DER/JER accumulated by pyannote.metrics."""
    duration = sum(item.duration for item in items)
    has_reference = any(item.reference is not None for item in items)
    rows = []
    for name in ["pyannote"] + [v.name for v in variant_list]:
        row = {"file": "(all)", "variant": name, "side": "pyannote" if name == "pyannote" else "mlx",
               "duration_s": duration, "target": "", "passed": None}
        if has_reference:
            result = corpus[name].result()
            row.update(der_vs_reference=result["der"], jer_vs_reference=result["jer"])
        if name != "pyannote":
            result = corpus[f"{name}/pyannote"].result()
            row.update(der_vs_pyannote=result["der"], jer_vs_pyannote=result["jer"])
        rows.append(row)
    return rows


def first_failure(layers, pipeline) -> list[str]:
    """Human-readable failures, the first one first: layers in forward order, then pipeline checks."""
    failures = []
    failed_layers = layers[layers["passed"] == False] if len(layers) else layers  # noqa: E712 (pandas mask)
    for _, row in failed_layers.sort_values(["file", "variant", "model", "depth"], kind="stable").iterrows():
        failures.append(f"{row['file']} {row['variant']} {row['model']} layer {row['layer']}: rel L2 "
                        f"{row['rel_l2']:.3g}, max abs {row['max_abs_err']:.3g} (target {row['target']})")
    for _, row in pipeline[pipeline["passed"] == False].iterrows():  # noqa: E712
        failures.append(f"{row['file']} {row['variant']}: pipeline target missed ({row['target']}): DER vs pyannote "
                        f"{row['der_vs_pyannote']:.2%}, frames {row['segmentation_frame_agreement']:.4%}, "
                        f"min cosine {row['embedding_min_cosine']:.6f}")
    return failures


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness compare", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="HF id or pipeline directory (default: offline fixture)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--audio", nargs="+", type=Path, default=None, help="audio files (RTTM beside them is used)")
    source.add_argument("--dataset", type=Path, default=None, help="folder of audio + same-named .rttm (+ .uem)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "all"), default="float32")
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=None)
    parser.add_argument("--q-group-size", type=int, choices=(32, 64, 128), default=64)
    parser.add_argument("--pure", action="store_true",
                        help="also the naive variants: every block in the reduced dtype (reported, never gated)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also map each block's precision sensitivity (slow: ~70 pipeline runs per file)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/<time>-<hash>)")
    parser.add_argument("--layer-items", type=int, default=1, help="chunks/items whose layers are compared")
    parser.add_argument("--check", action="store_true", help="exit 1 when a parity target is missed")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import pandas as pd

    from harness.report import write_reports
    from mlx_diar.audio import AudioError
    from mlx_diar.checkpoint import CheckpointError

    try:
        items = collect_audio(args.audio, args.dataset)
        frames, extra = run_compare(args.checkpoint, items,
                                    variants(args.dtype, args.quantize, args.q_group_size, args.pure),
                                    args.device, layer_items=args.layer_items, quiet=args.quiet,
                                    sensitivity=args.sensitivity)
    except (AudioError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    layers = pd.DataFrame(frames["layers"])
    pipeline = pd.DataFrame(frames["pipeline"])
    timing = pd.DataFrame(frames["timing"])
    failures = first_failure(layers, pipeline)
    verdict_text = (f"FAIL: {len(failures)} target(s) missed; first: {failures[0]}" if failures else
                    "PASS: every parity target of ARCHITECTURE.md §5 is met")
    created = dt.datetime.now(dt.timezone.utc)
    out = args.out or Path("reports") / f"{created:%Y%m%d-%H%M%S}-{git_short_hash()}"
    meta = {
        "title": "mlx-diar parity report: MLX vs pyannote.audio",
        "verdict": {"passed": not failures, "text": verdict_text},
        "failures": failures,
        "machine": machine_info(args.device),
        "versions": versions(),
        "checkpoint": extra["meta"]["checkpoint"],
        "seeded_parts": SEEDED_PARTS if extra["meta"]["fixture"] else [],
        "warmup": f"1 warm-up run per side ({WARMUP_SECONDS:g} s of the first file) excluded from timings",
        "created": created.isoformat(timespec="seconds"),
        "command": "python -m harness compare " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    paths = write_reports(out, layers, pipeline, timing, meta, extra["annotations"],
                          pd.DataFrame(frames["sensitivity"]))
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    print(verdict_text)
    print(paths["summary.md"])
    if args.check and failures:
        print(f"check failed: {failures[0]}", file=sys.stderr)
        return 1
    return 0
