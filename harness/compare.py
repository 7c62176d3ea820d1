"""`python -m harness compare`: MLX vs pyannote.audio on identical 16 kHz input, per layer, per file, per variant.

For every variant (dtype, optional quantization) it measures layer-by-layer errors on the
exact inputs the reference recorded, the pipeline's DER/JER against the reference RTTM and
against pyannote's own output, wall-clock per stage and peak memory of both sides; then it
writes layers.csv, pipeline.csv, timing.csv, summary.md and report.html, and with `--check`
exits non-zero when a parity target of `harness.targets` (docs/parity.md) is missed.

Stages: `collect_audio` (inputs checked before any inference) > `open_session` (models
loaded and warmed once) > `compare_recording` per file (typed rows of `harness.rows`) >
`corpus_rows` > `harness.report.write_reports`. A corpus (`--dataset`, `--manifest`, `--protocol`,
`--workers`, `--ray`) runs `compare_recording` as an executor task (`CompareTask`, one session per
worker, `mlx_diar.runtime.executor`): resumable per-recording records under `--out`, then the same
reports and `corpus.md` (`compare_corpus`, docs/corpus.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import targets
from harness.memory import PeakRSS, memory_curve
from harness.metrics import embedding_min_cosine, min_cosine, segmentation_agreement
from harness.refcache import Reference
from harness.rows import Diarizations, LayerRow, PipelineRow, TimingRow, TimingRun
from mlx_diar.runtime.audio import SAMPLE_RATE, AudioWarning, rttm_uri
from mlx_diar.runtime.corpus import CorpusEntry
from mlx_diar.errors import ArgumentParser, MlxDiarError, OptionError, bounded_number, warnings_as_lines
from mlx_diar.runtime.executor import RecordingTask, fingerprint, record_name
from mlx_diar.fsutil import writable_dir
from mlx_diar.runtime.pipeline import COMPUTE, EMBEDDING_MODES, KERNELS, STAGES
from mlx_diar.conversion.variant import Variant as ConversionVariant
from mlx_diar.provenance import package_versions

if TYPE_CHECKING:
    from reference.runner import ReferenceRun

WARMUP_SECONDS = 10.0
MAX_REPEAT = 100


@dataclasses.dataclass(frozen=True)
class Variant:
    """One MLX conversion to compare: a dtype and precision policy, optionally with quantized weights,
    run in an embedding mode (a fast mode is judged against the same conversion in exact mode)."""

    dtype: str
    quantize: int | None = None
    group_size: int = 64
    precision: str = "default"  # or "pure": every block in `dtype` (reported, never gated)
    embedding_mode: str = "exact"  # or a fast mode of `mlx_diar.runtime.pipeline.EMBEDDING_MODES`

    @property
    def conversion(self) -> "ConversionVariant":
        """The conversion this variant runs (shared by every embedding mode)."""
        return ConversionVariant(self.dtype, self.quantize, self.group_size, self.precision)

    @property
    def model_name(self) -> str:
        """The conversion's name (shared by every embedding mode), as mlx-diar's cache and model cards name it."""
        return self.conversion.name

    @property
    def name(self) -> str:
        return self.model_name + ("" if self.embedding_mode == "exact" else f"-{self.embedding_mode}")

    @property
    def fast(self) -> bool:
        """Whether this runs a fast (not exact) embedding mode."""
        return self.embedding_mode != "exact"

    @property
    def exact(self) -> "Variant":
        """The same conversion in exact mode."""
        return dataclasses.replace(self, embedding_mode="exact")

    @classmethod
    def parse(cls, name: str) -> "Variant":
        """The variant called `name` (its `name`: `float32`, `bfloat16-pure`, `float32-q8g64`, `float16-sparse`)."""
        modes = "|".join(m for m in EMBEDDING_MODES if m != "exact")
        match = re.fullmatch(rf"(float32|float16|bfloat16)(-pure)?(?:-q(4|8)g(32|64|128))?(?:-({modes}))?", name)
        if match is None or (match[1] == "float32" and match[2]):
            raise OptionError(f"--variant {name}: expected DTYPE[-pure][-qBITSgGROUP][-MODE] (DTYPE float32, "
                              f"float16 or bfloat16; -pure for a reduced DTYPE; BITS 4 or 8; GROUP 32, 64 or 128; "
                              f"MODE {modes.replace('|', ' or ')}), e.g. float32-q8g64")
        return cls(match[1], int(match[3]) if match[3] else None, int(match[4] or 64),
                   "pure" if match[2] else "default", match[5] or "exact")


def chosen_variants(args) -> list[Variant]:
    """The variants of `compare`'s options: `--variant` names, else `--dtype/--quantize/--pure/--embedding-mode`."""
    if args.variant is None:
        return variants(args.dtype, args.quantize, args.q_group_size, args.pure, tuple(args.embedding_mode))
    if args.dtype != "float32" or args.quantize or args.pure or args.embedding_mode != ["exact"]:
        raise OptionError("--variant names the variants: give it without --dtype, --quantize, --pure or "
                          "--embedding-mode")
    chosen = [Variant.parse(name) for name in args.variant]
    names = [v.name for v in chosen]
    for v in chosen:
        if names.count(v.name) > 1:
            raise OptionError(f"--variant {v.name}: given twice")
        if v.fast and v.exact.name not in names:
            raise OptionError(f"--variant {v.name}: a fast mode is judged against its exact mode; "
                              f"add {v.exact.name}")
    return sorted(chosen, key=lambda v: (v.fast, names.index(v.name)))  # exact modes first, as `variants` orders


def variants(dtype: str, quantize: int | None, group_size: int, pure: bool = False,
             fast_modes: tuple[str, ...] = ()) -> list[Variant]:
    """Variants for `--dtype` (one or `all`), each also quantized when `--quantize` is given; with
    `pure`, also the naive all-reduced variant of each reduced dtype; each dtype also in every
    embedding mode of `fast_modes` (after its exact-mode variant, which it is judged against)."""
    dtypes = ["float32", "float16", "bfloat16"] if dtype == "all" else [dtype]
    out = [Variant(d) for d in dtypes]
    out += [Variant(d, embedding_mode=mode) for d in dtypes for mode in fast_modes if mode != "exact"]
    if pure:
        out += [Variant(d, precision="pure") for d in dtypes if d != "float32"]
    if quantize:
        out += [Variant(d, quantize, group_size) for d in dtypes]
    return out


# ---------------------------------------------------------------------------------------------- inputs
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
        return len(self.waveform) / SAMPLE_RATE


def audio_paths(audio: list[Path] | None, dataset: Path | None) -> list[Path]:
    """The files of `--audio` or `--dataset` (default: pyannote's bundled sample)."""
    from harness.paths import sample_audio

    if dataset is not None:
        from mlx_diar.runtime.corpus import from_dataset

        return [entry.audio for entry in from_dataset(dataset)]
    return [Path(p) for p in audio] if audio else [Path(sample_audio()[0])]


def load_item(path: Path) -> AudioItem:
    """One file with the same-named `.rttm` (reference) and `.uem` (scored regions) beside it, all checked."""
    from harness.metrics import load_uem, reference_for, uem_for
    from mlx_diar.runtime.audio import load_audio

    item = AudioItem(path=path, uri=rttm_uri(path.stem), waveform=load_audio(path))
    rttm, uem = path.with_suffix(".rttm"), path.with_suffix(".uem")
    if rttm.is_file():
        item.reference = reference_for(rttm, path.stem)
    item.uem = load_uem(uem, path.stem) if uem.is_file() else uem_for(item.duration)
    return item


def collect_audio(audio: list[Path] | None, dataset: Path | None) -> list[AudioItem]:
    """Every file to compare, loaded and checked (raises `MlxDiarError` naming the file) before any inference."""
    paths = audio_paths(audio, dataset)
    seen: dict[str, Path] = {}
    for path in paths:
        uri = rttm_uri(path.stem)
        if uri in seen:
            raise OptionError(f"{path}: same name as {seen[uri]}; each file's name is its uri in the reports")
        seen[uri] = path
    return [load_item(path) for path in paths]



# ---------------------------------------------------------------------------------------------- models
def source_fingerprint(root: Path) -> str:
    """sha256 over the pipeline's config and every checkpoint/PLDA file (names the model cache)."""
    from mlx_diar.conversion.checkpoint import sha256sum

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".bin", ".npz")):
        digest.update(f"{path.relative_to(root)}:{sha256sum(path)}".encode())
    return digest.hexdigest()


def model_cache_key(fingerprint: str, variant: Variant) -> str:
    """Source fingerprint + variant + on-disk format + converter version (`mlx_diar.conversion.hub.cache_key`):
    a new sanitize or layout never reuses a stale conversion."""
    from mlx_diar.conversion.hub import cache_key

    return cache_key(fingerprint, variant.conversion)


def converted_model(root: Path, fingerprint: str, variant: Variant) -> Path:
    """The MLX conversion of `root` for `variant`, cached under `model_cache_key`."""
    from harness.paths import cache_root
    from mlx_diar.conversion.convert import convert_pyannote_model

    target = cache_root() / "models" / model_cache_key(fingerprint, variant)
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
               captured: dict[str, dict[str, np.ndarray]]) -> list[LayerRow]:
    """One row per layer present on both sides, in the MLX forward order."""
    rows = []
    for model, layers in captured.items():
        for depth, (name, mine) in enumerate(layers.items()):
            key = f"layers/{model}/{name}"
            if key not in arrays:
                continue
            reference = arrays[key]
            row = LayerRow(file=file, variant=variant.name, dtype=variant.dtype,
                           quantize=f"q{variant.quantize}g{variant.group_size}" if variant.quantize else "",
                           model=model, layer=name, depth=depth, shape=str(reference.shape))
            if reference.shape != mine.shape:
                row.rel_l2, row.target, row.passed = np.inf, f"shape {reference.shape}", False
                rows.append(row)
                continue
            row = dataclasses.replace(row, **layer_errors(reference, mine))
            if model == "segmentation":
                if name == "activation":
                    row.argmax_agreement = float(np.mean(reference.argmax(-1) == mine.argmax(-1)))
                truth = arrays.get(f"float64/segmentation/{name}")
                if truth is not None and truth.shape == reference.shape:
                    row.f64_err_pyannote = layer_errors(truth, reference)["rel_l2"]
                    row.f64_err_mlx = layer_errors(truth, mine)["rel_l2"]
            row.target, row.passed = layer_target(variant, row)
            rows.append(row)
    return rows


def layer_target(variant: Variant, row: LayerRow) -> tuple[str, bool | None]:
    """The parity target for this layer and whether it is met (None when the variant has none)."""
    if variant.dtype != "float32" or variant.quantize:
        return "", None
    if row.model == "segmentation":
        if np.isnan(row.f64_err_mlx):  # a bundle without pyannote's float64 layers
            bound, error, against = targets.LAYER_REL_L2_F32, row.rel_l2, "pyannote"
        else:
            bound, error, against = targets.segmentation_f32_bound(row.f64_err_pyannote), row.f64_err_mlx, "float64"
        ok = error <= bound
        if row.layer == "activation":
            ok = ok and row.argmax_agreement >= targets.SEGMENTATION_ARGMAX_AGREEMENT_F32
            return f"rel L2 vs {against} {error:.1e} <= {bound:.1e}, argmax 100%", bool(ok)
        return f"rel L2 vs {against} {error:.1e} <= {bound:.1e}", bool(ok)
    if row.model == "embedding" and row.layer in ("embedding", "resnet.seg_1"):
        ok = row.cosine >= targets.EMBEDDING_COSINE_F32 and row.rel_l2 <= targets.LAYER_REL_L2_F32
        return f"rel L2 <= {targets.LAYER_REL_L2_F32:g}, cosine >= {targets.EMBEDDING_COSINE_F32}", bool(ok)
    return f"rel L2 <= {targets.LAYER_REL_L2_F32:g}", bool(row.rel_l2 <= targets.LAYER_REL_L2_F32)


# ---------------------------------------------------------------------------------------------- pipeline
def pipeline_target(variant: Variant, row: PipelineRow) -> tuple[str, bool | None]:
    """The pipeline target for this variant, and whether it is met (None when the variant has none).
    A fast embedding mode is judged by its DER against the same conversion in exact mode."""
    if variant.fast:
        return (f"DER vs exact mode <= {100 * targets.PIPELINE_DER_FAST:.1f} pt",
                bool(row.der_vs_exact <= targets.PIPELINE_DER_FAST))
    der = row.der_vs_pyannote
    if variant.dtype == "float32" and not variant.quantize:
        der = row.der_vs_pyannote_ties_resolved  # a tie split by float32 rounding is no parity failure
        ok = (der <= targets.PIPELINE_DER_F32
              and row.segmentation_frame_agreement_decided >= targets.SEGMENTATION_ARGMAX_AGREEMENT_F32
              and row.embedding_min_cosine >= targets.EMBEDDING_COSINE_F32)
        return (f"DER vs pyannote = {targets.PIPELINE_DER_F32:.0%} (tie frames as pyannote decides them), "
                f"argmax 100% (decided frames), cosine >= {targets.EMBEDDING_COSINE_F32}"), bool(ok)
    target = targets.precision_target(variant.dtype, variant.precision, variant.quantize)
    if target is None:
        return "", None
    ok = (der <= target.der and row.segmentation_frame_agreement >= target.frames
          and row.embedding_min_cosine >= target.cosine and row.speakers == row.pyannote_speakers)
    return (f"DER vs pyannote <= {100 * target.der:.1f} pt, frames >= {target.frames:.1%}, "
            f"cosine >= {target.cosine}, speakers equal"), bool(ok)


# ---------------------------------------------------------------------------------------------- run
def machine_info(device: str) -> dict[str, Any]:
    from mlx_diar.cpu.blas import active_blas

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else float("nan")
    import mlx.core as mx

    from mlx_diar.models.kernels import tf32_products

    tf32 = tf32_products(mx.gpu if device == "gpu" else mx.cpu)
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory, 1),
            "device": f"mlx {device}", "blas": active_blas(),
            "float32_products": (f"TF32 (MLX_ENABLE_TF32={os.environ.get('MLX_ENABLE_TF32')})" if tf32
                                 else "float32")}



def git_short_hash() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "nogit"
    except (OSError, subprocess.TimeoutExpired):
        return "nogit"


def checkpoint_meta(resolved, fixture: bool) -> dict[str, Any]:
    from mlx_diar.conversion.checkpoint import sha256sum

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
    "The PLDA is not pyannote's: it is estimated from the same kind of synthetic speakers (docs/fixture.md).",
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


SILENT = Progress(quiet=True, total=0)


def stage_runs(file: str, variant: str, side: str, timings: dict[str, float], peak_mb: float, repeat: int,
               cached: str = "") -> list[TimingRun]:
    """One timed run's seconds per stage (every stage of `STAGES`, 0 where the run had none)."""
    return [TimingRun(file=file, variant=variant, side=side, stage=stage, repeat=repeat,
                      seconds=float(timings.get(stage, 0.0)), peak_rss_mb=peak_mb, cached=cached) for stage in STAGES]


def timing_summary(runs: list[TimingRun], duration: float, warmup_runs: int) -> list[TimingRow]:
    """One row per (variant, stage) of one file: the median over its timed runs; an MLX row's speed ratio
    is pyannote's median over its own."""
    groups: dict[tuple[str, str, str], list[TimingRun]] = {}
    for run in runs:
        groups.setdefault((run.variant, run.side, run.stage), []).append(run)
    median = {key: float(np.median([r.seconds for r in group])) for key, group in groups.items()}
    rows = []
    for (variant, side, stage), group in groups.items():
        seconds, baseline = median[variant, side, stage], median.get(("pyannote", "pyannote", stage), np.nan)
        rows.append(TimingRow(file=group[0].file, variant=variant, side=side, stage=stage, seconds=seconds,
                              rtf=seconds / duration if duration else np.nan,
                              speed_ratio=baseline / seconds if side == "mlx" and seconds > 0 else np.nan,
                              peak_rss_mb=float(np.median([r.peak_rss_mb for r in group])),
                              warmup_runs=warmup_runs, repeats=len(group), cached=group[0].cached))
    return rows


@dataclasses.dataclass
class Session:
    """Everything loaded once per process: one warmed MLX pipeline per variant and, when a file's reference run
    is not cached (`harness.refcache`), pyannote's pipeline (loaded and warmed on first use)."""

    resolved: Any  # mlx_diar.conversion.sources.PipelineSource
    fixture: bool
    fingerprint: str
    mlx: dict[Variant, Any]  # {variant: mlx_diar SpeakerDiarizationPipeline}
    warmup: np.ndarray | None = None  # the warm-up audio; None: no warm-up run (first-run timings)
    fresh_reference: bool = False  # rerun pyannote even when its run is cached
    cache: bool = True  # use and fill the reference cache (corpus runs keep their own resumable records)
    log: Any = None  # where the reference cache says why it did not use an entry
    _pyannote: Any = None

    def meta(self) -> dict[str, Any]:
        return {"checkpoint": checkpoint_meta(self.resolved, self.fixture), "fixture": self.fixture,
                "fingerprint": self.fingerprint, "pyannote_loaded": self._pyannote is not None}

    @property
    def pyannote(self):
        """pyannote.audio's SpeakerDiarization (the offline fixture or `--checkpoint`), loaded and warmed once."""
        if self._pyannote is None:
            from reference.runner import load_pipeline, run_reference

            self._pyannote = load_pipeline(self.resolved.root)
            if self.warmup is not None:
                run_reference(self._pyannote, self.warmup, record_layers=False)
        return self._pyannote

    def reference(self, item: AudioItem, layer_items: int) -> Reference:
        """pyannote's run of `item`: from the reference cache when an entry matches (unless `fresh_reference`),
        else measured now and cached."""
        from harness import refcache
        from reference.runner import run_reference

        key = refcache.reference_key(self.fingerprint, item.waveform, item.uri, layer_items,
                                     warmup=self.warmup is not None) if self.cache else {}
        cached = None if self.fresh_reference or not self.cache else refcache.load(key, self.log)
        if cached is not None:
            return cached
        pipeline = self.pyannote
        with PeakRSS() as rss:
            run = run_reference(pipeline, item.waveform, uri=item.uri, layer_items=layer_items)
        reference = Reference(run=run, peak_mb=rss.peak_mb)
        if self.cache:
            refcache.store(key, reference)
        return reference


def open_session(checkpoint: str | None, variant_list: list[Variant], device: str, warmup: np.ndarray | None,
                 progress: Progress | None = None, fresh_reference: bool = False, log: Any = None,
                 cache: bool = True, kernels: str = "auto", compute: str = "native") -> Session:
    """Convert + load every variant, one warm-up run each on `warmup`'s first WARMUP_SECONDS (excluded;
    None: none), all of it on a GPU, where MLX compiles kernels per batch shape at first use (NVRTC on
    CUDA: 78 s for a first model run on an H200) and a clip's batches miss the full files' shapes;
    pyannote is loaded by the first file whose reference run is not cached. Each variant runs on the
    kernel route `kernels` and computes as `compute` says (native: the numerics the parity gates measure).

    Every model stays resident during every measured run, so each side's peak RSS includes the other's
    models (pyannote's only when it was loaded: `meta["reference"]` says).
    """
    from harness.fixtures import fixture_dir
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline
    from mlx_diar.conversion.sources import resolve_pipeline

    step = (progress or SILENT).step
    fixture = checkpoint is None
    resolved = resolve_pipeline(fixture_dir() if fixture else checkpoint)
    fingerprint = source_fingerprint(resolved.root)
    clip = None if warmup is None else warmup[: int(WARMUP_SECONDS * SAMPLE_RATE)]
    mlx = {}
    for variant in variant_list:
        step(f"converting {variant.name}")
        pipeline = SpeakerDiarizationPipeline(model_path=converted_model(resolved.root, fingerprint, variant),
                                              device=device, params={"embedding_mode": variant.embedding_mode},
                                              kernels=kernels, compute=compute)
        if warmup is not None:
            pipeline.apply(warmup if device == "gpu" else clip)
        mlx[variant] = pipeline
    return Session(resolved=resolved, fixture=fixture, fingerprint=fingerprint, mlx=mlx, warmup=clip,
                   fresh_reference=fresh_reference, log=log, cache=cache)


@dataclasses.dataclass
class RecordingResult:
    """Everything measured on one recording: the report rows and the diarizations (scored again per corpus)."""

    uri: str
    layers: list[LayerRow]
    pipeline: list[PipelineRow]
    timing: list[TimingRow]
    diarizations: Diarizations
    uem: Any  # pyannote.core.Timeline
    runs: list[TimingRun] = dataclasses.field(default_factory=list)  # every timed run, per stage
    reference: dict[str, str] = dataclasses.field(default_factory=dict)  # {"cached": date or ""}


def _speakers(annotation) -> float:
    return np.nan if annotation is None else len(annotation.labels())


def pyannote_row(item: AudioItem, ref: ReferenceRun) -> PipelineRow:
    """pyannote's pipeline row on one file (its DER against the reference RTTM)."""
    from harness.metrics import score

    row = PipelineRow(file=item.uri, variant="pyannote", side="pyannote", duration_s=item.duration,
                      speakers=_speakers(ref.diarization), reference_speakers=_speakers(item.reference))
    if item.reference is not None:
        s = score(item.reference, ref.diarization, item.uem)
        row.der_vs_reference, row.jer_vs_reference = s["der"], s["jer"]
    return row


def timed_apply(item: AudioItem, pipeline) -> tuple[Any, float]:
    """One timed MLX run on `item`, every stage kept (each repeat alike): (its output, peak resident memory MB)."""
    with PeakRSS() as rss:
        out = pipeline.apply(item.waveform, uri=item.uri, keep_stages=True)
    return out, rss.peak_mb


def resolve_ties(pipeline, waveform: np.ndarray, uri: str, scores: Any, reference: np.ndarray,
                 **kwargs: Any) -> tuple[int, Any]:
    """(tie frames flipped, the MLX output with those frames decided as pyannote decides them, or None
    without such a frame). A frame whose top-2 margin in pyannote's scores `reference` is below
    `targets.SEGMENTATION_TIE_MARGIN` is decided by float32 rounding, differently by any two float32
    implementations (or CPUs); where the two sides split such a tie, the MLX pipeline runs again from its
    own `scores` with pyannote's at those frames, so that the float32 gate (DER 0) still holds every other
    stage to pyannote's output exactly. `kwargs` go to `apply` (speaker counts, keep_stages)."""
    from harness.metrics import flipped_ties

    ties = flipped_ties(scores.data, reference)
    if not ties.any():
        return 0, None
    resolved = np.where(ties[..., None], reference, scores.data).astype(scores.data.dtype)
    return int(ties.sum()), pipeline.apply(waveform, uri=uri, scores=type(scores)(resolved, scores.sliding_window),
                                           **kwargs)


def der_with_ties_resolved(pipeline, item: AudioItem, scores: Any, ref: ReferenceRun,
                           der: float) -> tuple[int, float]:
    """(tie frames flipped, DER vs pyannote once they take pyannote's decision: `resolve_ties`)."""
    from harness.metrics import score

    ties, out = resolve_ties(pipeline, item.waveform, item.uri, scores, ref.arrays["segmentation_scores"])
    return (0, der) if out is None else (ties, score(ref.diarization, out.speaker_diarization, item.uem)["der"])


def run_mlx(item: AudioItem, variant: Variant, pipeline, ref: ReferenceRun, exact: Any = None
            ) -> tuple[Any, PipelineRow, list[LayerRow], list[TimingRun]]:
    """One MLX variant on one file against pyannote's run `ref`: (diarization, pipeline row, layers, timed run).

    A fast embedding mode is also scored against `exact` (the same conversion's exact-mode diarization);
    its layers and embeddings are the exact variant's, so they are not compared again."""
    from harness.metrics import score
    from harness.sensitivity import footprint

    out, peak_mb = timed_apply(item, pipeline)
    hypothesis = out.speaker_diarization
    versus = score(ref.diarization, hypothesis, item.uem)
    row = PipelineRow(file=item.uri, variant=variant.name, side="mlx", duration_s=item.duration,
                      speakers=_speakers(hypothesis), reference_speakers=_speakers(item.reference),
                      pyannote_speakers=_speakers(ref.diarization), **footprint(pipeline.models.path),
                      der_vs_pyannote=versus["der"], jer_vs_pyannote=versus["jer"],
                      segmentation_frame_agreement=1.0, segmentation_frame_agreement_decided=1.0)
    if variant.fast and exact is not None:
        row.der_vs_exact = score(exact, hypothesis, item.uem)["der"]
    row.tie_frames_flipped, row.der_vs_pyannote_ties_resolved = 0, row.der_vs_pyannote
    if "embeddings" in out.stages:  # else no speech: the run stopped after speaker counting
        row.segmentation_frame_agreement, row.segmentation_frame_agreement_decided = segmentation_agreement(
            out.stages["segmentation_scores"].data, ref.arrays["segmentation_scores"])
        row.tie_frames_flipped, row.der_vs_pyannote_ties_resolved = der_with_ties_resolved(
            pipeline, item, out.stages["segmentation_scores"], ref, row.der_vs_pyannote)
        if "embeddings" in ref.arrays and not variant.fast:
            row.embedding_min_cosine_own_masks = min_cosine(out.stages["embeddings"], ref.arrays["embeddings"])
            row.embedding_min_cosine = embedding_min_cosine(pipeline, item.waveform, ref.arrays, out.stages)
    if item.reference is not None:
        s = score(item.reference, hypothesis, item.uem)
        row.der_vs_reference, row.jer_vs_reference = s["der"], s["jer"]
    row.target, row.passed = pipeline_target(variant, row)
    layers = [] if variant.fast else layer_rows(item.uri, variant, ref.arrays, mlx_layers(pipeline.models, ref.arrays))
    runs = stage_runs(item.uri, variant.name, "mlx", out.timings, peak_mb, repeat=0)
    return hypothesis, row, layers, runs


def compare_recording(item: AudioItem, session: Session, layer_items: int = 1, progress: Progress | None = None,
                      repeat: int = 1, reference: Reference | None = None) -> RecordingResult:
    """One recording: pyannote's run (`reference`, else the session's: cached or measured), then every MLX
    variant of `session` against it, `repeat` times, interleaved (variant after variant, repeat after repeat);
    the parity rows come from the first repeat, each later one is timed only."""
    step = (progress or SILENT).step
    step(f"pyannote: {item.uri}")
    reference = reference or session.reference(item, layer_items)
    ref = reference.run
    runs = stage_runs(item.uri, "pyannote", "pyannote", ref.meta["timings"], reference.peak_mb, 0, reference.cached)
    result = RecordingResult(uri=item.uri, layers=[], pipeline=[pyannote_row(item, ref)], timing=[], uem=item.uem,
                             diarizations=Diarizations(duration=item.duration, pyannote=ref.diarization,
                                                       reference=item.reference),
                             reference={"cached": reference.cached})
    for r in range(repeat):
        for variant, pipeline in session.mlx.items():
            step(f"mlx {variant.name}: {item.uri}" + (f" (repeat {r + 1}/{repeat})" if repeat > 1 else ""))
            if r:
                out, peak_mb = timed_apply(item, pipeline)
                runs += stage_runs(item.uri, variant.name, "mlx", out.timings, peak_mb, r)
                continue
            exact = result.diarizations.mlx.get(variant.exact.name)
            hypothesis, row, layers, timed = run_mlx(item, variant, pipeline, ref, exact)
            result.diarizations.mlx[variant.name] = hypothesis
            result.pipeline.append(row)
            result.layers += layers
            runs += timed
    result.runs = runs
    result.timing = timing_summary(runs, item.duration, warmup_runs=int(session.warmup is not None))
    return result


def corpus_rows(results: list[RecordingResult], variant_list: list[Variant]) -> list[PipelineRow]:
    """Aggregate rows (file "(all)"): corpus DER/JER accumulated by pyannote.metrics over every recording
    (a fast embedding mode's also against its exact-mode variant)."""
    from harness.metrics import Accumulator

    duration = sum(r.diarizations.duration for r in results)
    rows = []
    for variant in [None, *variant_list]:
        name = "pyannote" if variant is None else variant.name
        row = PipelineRow(file="(all)", variant=name, side="pyannote" if variant is None else "mlx",
                          duration_s=duration)
        versus_reference, versus_pyannote, versus_exact = Accumulator(), Accumulator(), Accumulator()
        fast = variant is not None and variant.fast
        for r in results:
            d = r.diarizations
            hypothesis = d.pyannote if variant is None else d.mlx[name]
            if d.reference is not None:
                versus_reference.add(d.reference, hypothesis, r.uem)
            if variant is not None:
                versus_pyannote.add(d.pyannote, hypothesis, r.uem)
            if fast and variant.exact.name in d.mlx:
                versus_exact.add(d.mlx[variant.exact.name], hypothesis, r.uem)
        if any(r.diarizations.reference is not None for r in results):
            row.der_vs_reference, row.jer_vs_reference = versus_reference.result().values()
        if variant is not None:
            row.der_vs_pyannote, row.jer_vs_pyannote = versus_pyannote.result().values()
        if fast and all(variant.exact.name in r.diarizations.mlx for r in results):
            row.der_vs_exact = versus_exact.result()["der"]
        rows.append(row)
    return rows


@dataclasses.dataclass
class CompareResult:
    """A whole comparison: every report row, each recording's diarizations, provenance."""

    layers: list[LayerRow]
    pipeline: list[PipelineRow]
    timing: list[TimingRow]
    diarizations: dict[str, Diarizations]
    meta: dict[str, Any]
    runs: list[TimingRun] = dataclasses.field(default_factory=list)


def run_compare(checkpoint: str | None, items: list[AudioItem], variant_list: list[Variant], device: str,
                layer_items: int = 1, quiet: bool = False, repeat: int = 1, warmup: bool = True,
                fresh_reference: bool = False, kernels: str = "auto", compute: str = "native") -> CompareResult:
    """Measure every item against every variant (`repeat` timed runs each); corpus rows when there is more
    than one item. Every file's pyannote run comes first (cached or measured), so that pyannote is loaded,
    if at all, before any MLX run is timed."""
    progress = Progress(quiet, total=len(variant_list) * (repeat * len(items) + 1) + len(items) + 1)
    try:
        session = open_session(checkpoint, variant_list, device, items[0].waveform if warmup else None, progress,
                               fresh_reference, log=lambda text: print(text, file=sys.stderr, flush=True),
                               kernels=kernels, compute=compute)
        references = [session.reference(item, layer_items) for item in items]
        results = [compare_recording(item, session, layer_items, progress, repeat, reference)
                   for item, reference in zip(items, references)]
    finally:
        progress.close()
    pipeline = [row for r in results for row in r.pipeline]
    if len(results) > 1:
        pipeline += corpus_rows(results, variant_list)
    meta = {**session.meta(), "repeats": repeat, "reference": {r.uri: r.reference for r in results}}
    return CompareResult(layers=[row for r in results for row in r.layers], pipeline=pipeline,
                         timing=[row for r in results for row in r.timing],
                         diarizations={r.uri: r.diarizations for r in results}, meta=meta,
                         runs=[run for r in results for run in r.runs])


def sensitivity_map(items: list[AudioItem], checkpoint: str | None, dtypes: tuple[str, ...] = ("float16", "bfloat16"),
                    quantized: bool = True, out: Path | None = None, log=print) -> list[dict[str, Any]]:
    """`harness.sensitivity.measure` on the fixture (or `checkpoint`) pipeline and its float32 conversion."""
    from harness.fixtures import fixture_dir
    from harness.sensitivity import measure
    from mlx_diar.conversion.sources import resolve_pipeline
    from reference.runner import load_pipeline

    root = resolve_pipeline(fixture_dir() if checkpoint is None else checkpoint).root
    float32_dir = converted_model(root, source_fingerprint(root), Variant("float32"))
    return measure(items, load_pipeline(root), float32_dir, dtypes, quantized, out, log)


def sensitivity_main(argv: list[str] | None = None) -> int:
    """`python -m harness sensitivity`: the map alone, into --out (sensitivity.csv, sensitivity.md)."""
    parser = ArgumentParser(prog="python -m harness sensitivity",
                            description="Precision-sensitivity map of the model blocks (docs/precision.md)")
    parser.add_argument("--checkpoint", default=None, help="HF id or pipeline directory (default: offline fixture)")
    parser.add_argument("--audio", nargs="+", type=Path, default=None, help="audio files (default: the sample)")
    parser.add_argument("--dtype", nargs="+", choices=("float16", "bfloat16"), default=["float16", "bfloat16"])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--no-quantize", action="store_true", help="skip the 4-bit / 8-bit probes")
    only.add_argument("--only-quantize", action="store_true", help="only the 4-bit / 8-bit probes")
    parser.add_argument("--out", type=Path, required=True, help="folder for sensitivity.csv and sensitivity.md")
    args = parser.parse_args(argv)
    out = writable_dir(args.out, f"--out {args.out}", "reports ")
    sensitivity_map(collect_audio(args.audio, None), args.checkpoint, () if args.only_quantize else tuple(args.dtype),
                    not args.no_quantize, out, log=lambda text: print(text, file=sys.stderr, flush=True))
    print(out / "sensitivity.md")
    return 0


def first_failure(layers: list[LayerRow], pipeline: list[PipelineRow]) -> list[str]:
    """Human-readable failures, the first one first: layers in forward order, then pipeline checks."""
    failures = []
    failed = sorted((r for r in layers if r.passed is False), key=lambda r: (r.file, r.variant, r.model, r.depth))
    for row in failed:
        failures.append(f"{row.file} {row.variant} {row.model} layer {row.layer}: rel L2 {row.rel_l2:.3g}, "
                        f"max abs {row.max_abs_err:.3g} (target {row.target})")
    for row in pipeline:
        if row.passed is False:
            ties = (f" ({row.der_vs_pyannote_ties_resolved:.2%} with {row.tie_frames_flipped:.0f} tie frame(s) "
                    "as pyannote decides them)" if row.tie_frames_flipped > 0 else "")
            failures.append(f"{row.file} {row.variant}: pipeline target missed ({row.target}): DER vs pyannote "
                            f"{row.der_vs_pyannote:.2%}{ties}, " + (f"vs exact mode {row.der_vs_exact:.2%}, "
                                                             if row.der_vs_exact == row.der_vs_exact else "")
                            + f"frames {row.segmentation_frame_agreement:.4%}, "
                            f"min cosine {row.embedding_min_cosine:.6f}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m harness compare", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="HF id or pipeline directory (default: offline fixture)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--audio", nargs="+", type=Path, default=None, help="audio files (RTTM beside them is used)")
    source.add_argument("--dataset", type=Path, default=None, help="folder of audio + same-named .rttm (+ .uem)")
    source.add_argument("--manifest", type=Path, default=None, help="JSONL: audio, uri, rttm, uem per line")
    source.add_argument("--protocol", default=None, help="pyannote.database DB.SpeakerDiarization.NAME")
    parser.add_argument("--subset", default="test", help="protocol subset: train, development, test")
    parser.add_argument("--database", type=Path, default=None, help="database.yml for --protocol")
    parser.add_argument("--workers", type=bounded_number(1, integer=True), default=None,
                        help="worker processes (default: cores)")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS", help="run the workers on a Ray cluster")
    parser.add_argument("--threads", type=bounded_number(1, integer=True), default=None,
                        help="threads per worker (default: cores/workers)")
    parser.add_argument("--redo", action="store_true", help="redo recordings finished by an earlier run")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "all"), default="float32")
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=None)
    parser.add_argument("--q-group-size", type=int, choices=(32, 64, 128), default=64)
    parser.add_argument("--pure", action="store_true",
                        help="also the naive variants: every block in the reduced dtype (reported, never gated)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also map each block's precision sensitivity (slow: ~70 pipeline runs per file)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--kernels", choices=KERNELS, default="auto",
                        help="MLX kernel route: auto (CPU accelerations where they apply) or mlx (the MLX layers "
                             "only, as a GPU runs them)")
    parser.add_argument("--compute", choices=COMPUTE, default="native",
                        help="how reduced and quantized variants compute: native (default: their own numerics, "
                             "what a GPU computes and what the targets gate), float32 (weights expanded at load) "
                             "or auto (diarize's default: float32 on the CPU)")
    parser.add_argument("--embedding-mode", nargs="+", choices=EMBEDDING_MODES, default=["exact"],
                        help="also run each dtype in these fast embedding modes, each judged by its DER "
                             "against exact mode (harness/targets.py PIPELINE_DER_FAST)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default reports/<time>-<hash>)")
    parser.add_argument("--variant", nargs="+", default=None, metavar="NAME",
                        help="these variants by name instead of --dtype/--quantize/--pure/--embedding-mode, "
                             "e.g. float32 bfloat16 float32-q8g64 float16-sparse")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="time every MLX variant N times, interleaved (timing_runs.csv; `harness diff` "
                             "needs 5 to call a speed change significant); parity is measured on the first")
    parser.add_argument("--no-warmup", action="store_true",
                        help="no warm-up run before the timed ones (first-run timings, said in the report)")
    parser.add_argument("--fresh-reference", action="store_true",
                        help="run pyannote even when its run of a file is in the reference cache (and replace it)")
    parser.add_argument("--layer-items", type=int, default=1, help="chunks/items whose layers are compared")
    parser.add_argument("--check", action="store_true", help="exit 1 when a parity target is missed")
    parser.add_argument("--memory-curve", type=float, nargs="+", default=None, metavar="MINUTES",
                        help="also measure the MLX side's peak memory on synthetic conversations of these lengths")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    from harness.fixtures import FixtureError

    try:
        with warnings_as_lines(AudioWarning):
            return _compare(args, sys.argv[1:] if argv is None else argv)
    except (MlxDiarError, FixtureError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def compute_notes(device: str, compute: str) -> list[str]:
    """What the reports say of reduced and quantized variants on `device`: on the CPU they save size,
    not compute."""
    if device != "cpu":
        return []
    timed = {"native": "their native numerics (slower than float32 here)",
             "float32": "their weights expanded to float32", "auto": "their weights expanded to float32"}[compute]
    return ["On this device (cpu) a reduced or quantized variant saves size, not compute: MLX's CPU backend "
            "has no fast float16, bfloat16 or quantized kernels, so `diarize` loads such a model with its "
            "weights expanded to float32 by default (`--compute auto`) and runs it at float32's speed. "
            f"Here its timings are of {timed}."]


def report_meta(args, argv: list[str], created: dt.datetime, failures: list[str], checkpoint: dict[str, Any],
                fixture: bool, corpus: bool = False) -> dict[str, Any]:
    """The reports' meta: verdict, machine, versions, checkpoint, warm-up and the command."""
    verdict_text = (f"FAIL: {len(failures)} target(s) missed; first: {failures[0]}" if failures else
                    "PASS: every parity target of harness/targets.py is met")
    source = "pyannote's bundled sample" if corpus else "the first file"
    warmup = f"{source}, first {WARMUP_SECONDS:g} s" + (", all of it for MLX on the GPU" if args.device == "gpu" else "")
    if corpus:
        warmup += ", once per side and worker"
    warmup = ("no warm-up run (--no-warmup): every timing includes first-run costs" if args.no_warmup else
              f"1 warm-up run per side ({warmup}) excluded from timings")
    return {
        "title": "mlx-diar parity report: MLX vs pyannote.audio",
        "verdict": {"passed": not failures, "text": verdict_text},
        "failures": failures,
        "machine": {**machine_info(args.device), "kernels": args.kernels, "compute": args.compute},
        "notes": compute_notes(args.device, args.compute),
        "versions": package_versions(),
        "checkpoint": checkpoint,
        "seeded_parts": SEEDED_PARTS if fixture else [],
        "warmup": warmup,
        "created": created.isoformat(timespec="seconds"),
        "command": "python -m harness compare " + " ".join(argv),
    }


def _compare(args, argv: list[str]) -> int:
    """`main` after parsing: check every input and the output folder, measure, write the reports."""
    import pandas as pd

    from harness.report import write_reports
    from mlx_diar.fsutil import atomic_write

    if args.layer_items < 1:
        raise OptionError(f"--layer-items {args.layer_items}: must be at least 1")
    bad = [m for m in args.memory_curve or () if not 0 < m <= 24 * 60]
    if bad:
        raise OptionError(f"--memory-curve {bad[0]:g}: minutes must be above 0 and at most 1440")
    if not 1 <= args.repeat <= MAX_REPEAT:
        raise OptionError(f"--repeat {args.repeat}: must be 1 to {MAX_REPEAT}")
    variant_list = chosen_variants(args)
    corpus = args.dataset or args.manifest or args.protocol or args.workers or args.ray
    if corpus and (args.repeat > 1 or args.no_warmup or args.fresh_reference):
        raise OptionError("--repeat, --no-warmup and --fresh-reference apply to --audio runs, not to corpus runs "
                          "(which keep their own resumable records, not the reference cache)")
    created = dt.datetime.now(dt.timezone.utc)
    out = args.out or Path("reports") / f"{created:%Y%m%d-%H%M%S}-{git_short_hash()}"
    writable_dir(out, f"--out {out}", "reports ")
    if corpus:
        return compare_corpus(args, argv, created, out, variant_list)
    items = collect_audio(args.audio, args.dataset)
    result = run_compare(args.checkpoint, items, variant_list, args.device, layer_items=args.layer_items,
                         quiet=args.quiet, repeat=args.repeat, warmup=not args.no_warmup,
                         fresh_reference=args.fresh_reference, kernels=args.kernels, compute=args.compute)
    sensitivity = pd.DataFrame(sensitivity_map(items, args.checkpoint, log=None if args.quiet else print)
                               if args.sensitivity else [])
    memory = memory_curve(args.memory_curve, workdir=out) if args.memory_curve else None
    failures = first_failure(result.layers, result.pipeline)
    meta = report_meta(args, argv, created, failures, result.meta["checkpoint"], result.meta["fixture"])
    meta |= {key: result.meta[key] for key in ("repeats", "pyannote_loaded", "reference")}
    paths = write_reports(out, result.layers, result.pipeline, result.timing, meta, result.diarizations,
                          sensitivity, memory, runs=result.runs)
    atomic_write(out / "meta.json", json.dumps(meta, indent=1, default=str))
    print(meta["verdict"]["text"])
    print(paths["summary.md"])
    if args.check and failures:
        print(f"check failed: {failures[0]}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- corpus
def item_for(entry: CorpusEntry):
    """The `harness.compare.AudioItem` of an entry: waveform, reference (RTTM or protocol) and scored region."""
    from harness.metrics import load_uem, named, reference_for, uem_for
    from mlx_diar.runtime.audio import load_audio

    item = AudioItem(path=entry.audio, uri=rttm_uri(entry.uri), waveform=load_audio(entry.audio))
    item.reference = named(entry.annotation, entry.uri) if entry.annotation is not None else (
        reference_for(entry.rttm, entry.uri) if entry.rttm is not None else None)
    if entry.annotated is not None:
        item.uem = entry.annotated
    else:
        item.uem = load_uem(entry.uem, entry.uri) if entry.uem is not None else uem_for(item.duration)
    return item


class CompareTask(RecordingTask):
    """`harness compare` on one recording per call; pyannote.audio and every MLX variant loaded once per worker."""

    def __init__(self, checkpoint: str | None, variant_list: list, device: str, layer_items: int,
                 source_fingerprint: str, kernels: str = "auto", compute: str = "native") -> None:
        self.checkpoint, self.variant_list, self.device = checkpoint, variant_list, device
        self.layer_items, self.kernels, self.compute = layer_items, kernels, compute
        # the source checkpoint and, per variant, its name (dtype, quantization, embedding mode) and its
        # conversion key (format and converter versions)
        self.fingerprint = fingerprint({"task": "compare", "device": device, "layer_items": layer_items,
                                        "kernels": kernels, "compute": compute,
                                        "variants": [v.name for v in variant_list],
                                        "models": [model_cache_key(source_fingerprint, v) for v in variant_list]})
        self.session = None

    def setup(self, threads: int | None) -> None:
        from harness.paths import sample_audio
        from mlx_diar.runtime.audio import load_audio

        if threads:
            import torch

            torch.set_num_threads(threads)
        warmup = load_audio(sample_audio()[0])  # on this worker's machine
        # no reference cache: a corpus keeps its own resumable records, and an entry per recording (~60 MB
        # with layers) would grow with the corpus
        self.session = open_session(self.checkpoint, self.variant_list, self.device, warmup, cache=False,
                                    kernels=self.kernels, compute=self.compute)

    def __call__(self, entry: CorpusEntry) -> dict[str, Any]:
        from harness.metrics import components

        item = item_for(entry)
        result = compare_recording(item, self.session, self.layer_items)
        d = result.diarizations
        seconds = {row.variant: row.seconds for row in result.timing if row.stage == "total"}
        sides: dict[str, Any] = {}
        files = {f"rttm/{record_name(entry.uri)}.pyannote.rttm": d.pyannote.to_rttm()}
        if d.reference is not None:
            files[f"rttm/{record_name(entry.uri)}.reference.rttm"] = d.reference.to_rttm()
        for name, hypothesis in [("pyannote", d.pyannote), *d.mlx.items()]:
            sides[name] = {"seconds": seconds[name], "speakers": len(hypothesis.labels()),
                           "vs_reference": components(d.reference, hypothesis, item.uem) if d.reference else None}
            if name != "pyannote":
                sides[name]["vs_pyannote"] = components(d.pyannote, hypothesis, item.uem)
                files[f"rttm/{record_name(entry.uri)}.{name}.rttm"] = hypothesis.to_rttm()
        for variant in self.variant_list:  # a fast embedding mode against the same conversion's exact mode
            if variant.fast and variant.exact.name in d.mlx:
                sides[variant.name]["vs_exact"] = components(d.mlx[variant.exact.name], d.mlx[variant.name],
                                                             item.uem)
        return {"duration_s": item.duration,
                "reference_speakers": len(d.reference.labels()) if d.reference is not None else None,
                "uem": [[s.start, s.end] for s in item.uem],
                "sides": sides,
                "rows": {"layers": [dataclasses.asdict(r) for r in result.layers],
                         "pipeline": [dataclasses.asdict(r) for r in result.pipeline],
                         "timing": [dataclasses.asdict(r) for r in result.timing]},
                "files": files}


def compare_corpus(args, argv: list[str], created: dt.datetime, out: Path, variant_list: list[Variant]) -> int:
    """`harness compare` on a corpus (`--dataset/--manifest/--protocol`, `--workers`, `--ray`): resumable records
    under `--out`, then the usual reports and `corpus.md` over every done recording.

    Exit status: the number of failed recordings (at most 100), 130 after Ctrl-C, else 1 when
    `--check` finds a missed target, else 0.
    """
    from harness.corpus import records_diarizations, records_rows
    from harness.corpus_report import corpus_markdown
    from harness.fixtures import fixture_dir
    from harness.report import write_reports
    from mlx_diar.runtime import corpus
    from mlx_diar.runtime.executor import run_corpus
    from mlx_diar.fsutil import atomic_write
    from mlx_diar.conversion.sources import resolve_pipeline

    entries = corpus.collect(audio=args.audio, dataset=args.dataset, manifest=args.manifest,
                             protocol=args.protocol, subset=args.subset, database=args.database)
    fixture = args.checkpoint is None
    resolved = resolve_pipeline(fixture_dir() if fixture else args.checkpoint)
    source = source_fingerprint(resolved.root)
    for variant in variant_list:  # converted once here: the workers of this machine share the cache
        converted_model(resolved.root, source, variant)
    task = CompareTask(args.checkpoint, variant_list, args.device, args.layer_items, source, args.kernels,
                       args.compute)
    summary = run_corpus(task, entries, out, workers=args.workers, ray=args.ray, threads=args.threads,
                         redo=args.redo, progress=not args.quiet)
    corpus_md = atomic_write(out / "corpus.md", corpus_markdown(summary.records, summary.line()))
    if any(r["status"] == "done" for r in summary.records):
        rows = records_rows(summary.records)
        failures = first_failure(rows["layers"], rows["pipeline"])
        meta = report_meta(args, argv, created, failures, checkpoint_meta(resolved, fixture), fixture, corpus=True)
        write_reports(out, rows["layers"], rows["pipeline"], rows["timing"], meta,
                      records_diarizations(out, summary.records))
        atomic_write(out / "meta.json", json.dumps(meta, indent=1, default=str))
        print(meta["verdict"]["text"])
    else:
        failures = []
    print(summary.line())
    print(corpus_md)
    if summary.failed:
        print(f"error: {summary.failed} of {len(entries)} recordings failed (see {corpus_md})", file=sys.stderr)
    if summary.interrupted:
        print(f"interrupted: run the same command again to resume ({out}/records)", file=sys.stderr)
    if summary.exit_status:
        return summary.exit_status
    if args.check and failures:
        print(f"check failed: {failures[0]}", file=sys.stderr)
        return 1
    return 0
