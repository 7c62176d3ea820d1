"""Precision-sensitivity map: which model blocks tolerate reduced precision or 4-bit weights.

For each reduced dtype, every precision block (`mlx_diar.conversion.precision.BLOCKS`) is run alone in
that dtype (the rest float32) and alone kept float32 (the rest reduced); for quantization,
every block holding quantizable weights alone at 4 bits (the rest 8) and alone kept at 8 bits
(the rest 4). Each probe runs the whole MLX pipeline and is scored against pyannote float32
on the same file: segmentation max abs log-prob error and frame agreement, embedding min
cosine, DER and speaker count. The default policies (`precision.KEEP_FLOAT32`) and the
blocks a 4-bit model keeps at 8 bits (`quantize.KEEP_8BIT`) were chosen from this map.

    python -m harness sensitivity [--audio FILE ...] [--dtype float16 bfloat16] [--no-quantize] --out DIR
    python -m harness compare --sensitivity ...     (the map in summary.md and report.html)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlx_diar.conversion import precision, quantize

GROUP_SIZE = 64
KINDS = ("alone reduced", "alone float32", "alone 4-bit", "alone 8-bit")


@dataclasses.dataclass(frozen=True)
class Probe:
    """One model configuration of the map: a precision policy and optionally quantized weights."""

    dtype: str  # the reduced dtype, or "q4" for quantization probes
    kind: str  # one of KINDS, or "all" for the whole-model baselines
    role: str | None
    block: str | None
    policy: precision.Policy
    bits: int | None = None
    keep_8bit: dict[str, frozenset[str]] | None = None

    @property
    def label(self) -> str:
        where = f"{self.role}/{self.block}" if self.block else "every block"
        return f"{self.dtype}: {where} {self.kind}"


def _all_blocks(but: tuple[str, str] | None = None) -> dict[str, frozenset[str]]:
    return {role: frozenset(b for b in precision.block_names(role) if (role, b) != but) for role in precision.BLOCKS}


def probes(dtypes: tuple[str, ...] = precision.REDUCED, quantized: bool = True) -> list[Probe]:
    """Every probe of the map, whole-model baselines first."""
    f32 = precision.uniform("float32")
    out = []
    for dtype in dtypes:
        out += [Probe(dtype, "all (pure)", None, None, precision.uniform(dtype)),
                Probe(dtype, "all (default policy)", None, None, precision.policy(dtype))]
        for role in precision.BLOCKS:
            for block in precision.block_names(role):
                out.append(Probe(dtype, "alone reduced", role, block, precision.with_blocks(f32, dtype, {role: {block}})))
                out.append(Probe(dtype, "alone float32", role, block,
                                 precision.with_blocks(precision.uniform(dtype), "float32", {role: {block}})))
    if quantized:
        out += [Probe("q8", "all", None, None, f32, bits=8), Probe("q4", "all", None, None, f32, bits=4)]
        for role in precision.BLOCKS:
            for block in precision.block_names(role):
                out.append(Probe("q4", "alone 4-bit", role, block, f32, bits=4, keep_8bit=_all_blocks((role, block))))
                out.append(Probe("q4", "alone 8-bit", role, block, f32, bits=4,
                                 keep_8bit={role: frozenset({block})}))
    return out


def footprint(model_dir: Path) -> dict[str, float]:
    """Size on disk (MB, weights + config + PLDA) and share of model parameters quantized of a converted model."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    counts = ((config.get("quantization") or {}).get("parameters") or {}).values()
    total = sum(c["total"] for c in counts)
    return {"size_mb": sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file()) / 1e6,
            "quantized_share": sum(c["quantized"] for c in counts) / total if total else 0.0}


def quantize_model(model, role: str, chosen: dict[str, dict[str, Any]]):
    """Quantize a loaded float model in memory exactly as a converted directory would be."""
    from mlx.utils import tree_flatten

    arrays = quantize.quantize_arrays(dict(tree_flatten(model.parameters())), chosen)
    model, arrays = quantize.rebuild(model, chosen, arrays)
    model.load_weights(list(arrays.items()), strict=True)
    return model


def probe_models(probe: Probe, float32_dir: Path):
    """The float32 conversion loaded, quantized and cast as `probe` says; None if the probe changes nothing."""
    from mlx_diar.conversion.model_io import load_model

    models = load_model(float32_dir)
    for role in precision.BLOCKS:
        model = getattr(models, role)
        if probe.bits:
            chosen = quantize.plan(model, role, probe.bits, GROUP_SIZE, probe.keep_8bit)
            if probe.block and probe.role == role and not any(s["block"] == probe.block for s in chosen.values()):
                return None  # a block without quantizable weights
            model = quantize_model(model, role, chosen)
        precision.apply(model, role, probe.policy)
    return models


def score_run(reference, output, uem, pipeline, waveform) -> dict[str, Any]:
    """A probe's errors on one file against pyannote float32 (the embedding cosine on pyannote's masks)."""
    from harness.metrics import embedding_min_cosine, score, segmentation_agreement

    scores, ref_scores = output.stages["segmentation_scores"].data, reference.arrays["segmentation_scores"]
    frames, _ = segmentation_agreement(scores, ref_scores)
    return {"seg_max_abs_logprob": float(np.abs(scores - ref_scores).max()),
            "seg_frames": frames,
            "emb_min_cosine": embedding_min_cosine(pipeline, waveform, reference.arrays),
            "der_vs_pyannote": score(reference.diarization, output.speaker_diarization, uem)["der"],
            "speakers_equal": len(output.speaker_diarization.labels()) == len(reference.diarization.labels())}


def run_map(items, references: dict[str, Any], float32_dir: Path, probe_list: list[Probe],
            log=print) -> list[dict[str, Any]]:
    """One row per (probe, file)."""
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    rows = []
    for k, probe in enumerate(probe_list):
        models = probe_models(probe, float32_dir)
        if models is None:
            continue
        pipeline = SpeakerDiarizationPipeline(models=models)
        for item in items:
            start = time.perf_counter()
            output = pipeline.apply(item.waveform, uri=item.uri, keep_stages=True)
            row = {"file": item.uri, "dtype": probe.dtype, "kind": probe.kind, "role": probe.role or "",
                   "block": probe.block or "", "seconds": time.perf_counter() - start}
            row.update(score_run(references[item.uri], output, item.uem, pipeline, item.waveform))
            rows.append(row)
        log(f"[{k + 1}/{len(probe_list)}] {probe.label}: DER {row['der_vs_pyannote']:.4%}, "
            f"frames {row['seg_frames']:.4%}, cosine {row['emb_min_cosine']:.6f}")
    return rows


def worst(frame):
    """Per (dtype, kind, role, block): the worst value over files."""
    keys = ["dtype", "kind", "role", "block"]
    return frame.groupby(keys, sort=False).agg(
        seg_max_abs_logprob=("seg_max_abs_logprob", "max"), seg_frames=("seg_frames", "min"),
        emb_min_cosine=("emb_min_cosine", "min"), der_vs_pyannote=("der_vs_pyannote", "max"),
        speakers_equal=("speakers_equal", "all")).reset_index()


def markdown(frame) -> list[str]:
    """The map as markdown tables: one per dtype, a row per block, both probe directions side by side."""
    if frame is None or not len(frame):
        return []
    w = worst(frame)
    lines = ["### Precision sensitivity",
             "Each probe runs the whole MLX pipeline; errors against pyannote float32 (worst file). "
             "Seg. = max abs log-prob error / frames equal; emb. = min cosine.", ""]
    for dtype, g in w.groupby("dtype", sort=False):
        pairs = ("alone 4-bit", "alone 8-bit") if dtype == "q4" else ("alone reduced", "alone float32")
        lines.append(f"**{dtype}**" + (" (4-bit weights; the rest 8-bit / the block 8-bit, rest 4-bit)"
                                       if dtype == "q4" else " (the block alone reduced / the block alone float32)"))
        lines.append("")
        header = ["block"] + [f"{p}: {m}" for p in pairs for m in ("seg.", "emb.", "DER")]
        rows = []
        for _, base in g[g["role"] == ""].iterrows():
            rows.append([f"every block, {base['kind']}", *_cells(base), "", "", ""])
        for (role, block), b in g[g["role"] != ""].groupby(["role", "block"], sort=False):
            cells = []
            for p in pairs:
                r = b[b["kind"] == p]
                cells += _cells(r.iloc[0]) if len(r) else ["–"] * 3
            rows.append([f"{role}/{block}", *cells])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *("| " + " | ".join(r) + " |" for r in rows), ""]
    return lines


def _cells(row) -> list[str]:
    speakers = "" if row["speakers_equal"] else " (speakers differ)"
    return [f"{row['seg_max_abs_logprob']:.2g} / {100 * row['seg_frames']:.2f} %", f"{row['emb_min_cosine']:.5f}",
            f"{100 * row['der_vs_pyannote']:.2f}{speakers}"]


def plot(frame):
    """1 - min cosine and DER per probed block, log scale, one panel per dtype (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    w = worst(frame)
    w = w[w["role"] != ""]
    dtypes = list(w["dtype"].unique())
    fig = Figure(figsize=(11.0, 2.8 * len(dtypes)))
    for i, dtype in enumerate(dtypes):
        ax = fig.add_subplot(len(dtypes), 1, i + 1)
        g = w[w["dtype"] == dtype]
        blocks = list(dict.fromkeys(f"{r}/{b}" for r, b in zip(g["role"], g["block"])))
        x = np.arange(len(blocks))
        kinds = [k for k in KINDS if k in set(g["kind"])]
        for j, kind in enumerate(kinds):
            sub = g[g["kind"] == kind].set_index(g[g["kind"] == kind]["role"] + "/" + g[g["kind"] == kind]["block"])
            sub = sub.reindex(blocks)
            ax.bar(x + (j - 0.5) * 0.2 - 0.1, np.maximum(1 - sub["emb_min_cosine"].to_numpy(float), 1e-9), 0.2,
                   label=f"{kind}: 1 - emb. cosine")
            ax.bar(x + (j - 0.5) * 0.2 + 0.3, np.maximum(sub["der_vs_pyannote"].to_numpy(float), 1e-9), 0.2,
                   label=f"{kind}: DER", hatch="//")
        ax.set_yscale("log")
        ax.set_xticks(x, blocks, rotation=30, ha="right", fontsize=7)
        ax.set_title(str(dtype).replace("$", r"\$"))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def measure(items, reference_pipeline, float32_dir: Path, dtypes: tuple[str, ...] = precision.REDUCED,
            quantized: bool = True, out: Path | None = None, log=print) -> list[dict[str, Any]]:
    """The whole map on `items` (AudioItems): pyannote float32 once per file, then every probe on the
    float32 conversion `float32_dir`. With `out`, sensitivity.csv and sensitivity.md are rewritten after
    each probe (a partial map survives)."""
    import pandas as pd

    from reference.runner import run_reference

    references = {item.uri: run_reference(reference_pipeline, item.waveform, uri=item.uri, record_layers=False)
                  for item in items}
    rows: list[dict[str, Any]] = []
    for probe in probes(dtypes, quantized):
        rows += run_map(items, references, float32_dir, [probe], log=log or (lambda _text: None))
        if out is not None:
            frame = pd.DataFrame(rows)
            frame.to_csv(out / "sensitivity.csv", index=False)
            (out / "sensitivity.md").write_text("\n".join(markdown(frame)) + "\n")
    return rows
