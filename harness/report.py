"""Parity reports: the measured frames as CSV, a pull-request-sized `summary.md` and a self-contained
`report.html` (inline CSS, plots as base64 PNG, every text from data HTML-escaped, no network).

The report layer judges nothing: pass/fail comes from the frames' `passed` columns and `meta["verdict"]`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.memory import curve_frame, curve_table
from harness.rows import Diarizations, LayerRow, PipelineRow, TimingRow, TimingRun, to_frame
from mlx_diar.fsutil import atomic_write
from mlx_diar.runtime.pipeline import STAGES

PASS_COLOUR = "#1a7f37"  # verdict banner; the browser test looks for these exact colours
FAIL_COLOUR = "#cf222e"
FAILURES_IN_SUMMARY = 10
FAILURES_ON_SCREEN = 3  # above the <details> of summary.md
REL_L2_FLOOR = 1e-12  # an exact match is drawn here on the log-scale layer plot
DASH = "–"


def write_reports(out_dir: Path, layers: Sequence[LayerRow], pipeline: Sequence[PipelineRow],
                  timing: Sequence[TimingRow], meta: dict, diarizations: dict[str, Diarizations],
                  sensitivity: pd.DataFrame | None = None, memory: Sequence[dict] | None = None,
                  runs: Sequence[TimingRun] | None = None) -> dict[str, Path]:
    """Write layers/pipeline/timing CSV, summary.md and report.html into `out_dir`; {file name: path}.

    Each file is written atomically (`mlx_diar.fsutil.atomic_write`): a report is complete or absent.
    With a non-empty `sensitivity` frame (`harness.sensitivity`), also sensitivity.csv, its table in
    summary.md and its plot in report.html; with `memory` rows (`harness.memory.memory_curve`),
    memory.csv and the memory curve in both reports; with `runs`, every timed run per stage in
    timing_runs.csv (what `harness diff` tests).
    """
    out_dir = Path(out_dir)
    frames = to_frame(layers, LayerRow), to_frame(pipeline, PipelineRow), to_frame(timing, TimingRow)
    sensitivity = sensitivity if sensitivity is not None and len(sensitivity) else None
    curve = curve_frame(memory) if memory else None
    contents = {
        "layers.csv": frames[0].to_csv(index=False),
        "pipeline.csv": frames[1].to_csv(index=False),
        "timing.csv": frames[2].to_csv(index=False),
        **({"sensitivity.csv": sensitivity.to_csv(index=False)} if sensitivity is not None else {}),
        **({"memory.csv": curve.to_csv(index=False)} if curve is not None else {}),
        **({"timing_runs.csv": to_frame(runs, TimingRun).to_csv(index=False)} if runs else {}),
        "summary.md": summary_markdown(*frames, meta, sensitivity, curve),
        "report.html": report_html(*frames, meta, diarizations, sensitivity, curve),
    }
    return {name: atomic_write(out_dir / name, text) for name, text in contents.items()}


# ---------------------------------------------------------------------------------------------
# formatting


def _na(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _sci(value: Any) -> str:
    return DASH if _na(value) else f"{float(value):.1e}"


def _pct(value: Any) -> str:
    return DASH if _na(value) else f"{100 * float(value):.2f} %"


def _cos(value: Any) -> str:
    return DASH if _na(value) else f"{float(value):.7f}"


def _secs(value: Any) -> str:
    return DASH if _na(value) else f"{float(value):.3f}"


def _ratio(value: Any) -> str:
    return DASH if _na(value) else f"{float(value):.2f}×"


def _mb(value: Any) -> str:
    return DASH if _na(value) else f"{float(value):.0f}"


def _mb1(value: Any) -> str:
    return DASH if _na(value) else f"{float(value):.1f}"


def _int(value: Any) -> str:
    return DASH if _na(value) else str(int(value))


FORMATS: dict[str, Callable[[Any], str]] = {
    "max_abs_err": _sci, "rel_l2": _sci, "cosine": _cos, "argmax_agreement": _pct,
    "duration_s": _secs, "speakers": _int, "reference_speakers": _int,
    "der_vs_reference": _pct, "jer_vs_reference": _pct, "der_vs_pyannote": _pct, "jer_vs_pyannote": _pct,
    "der_vs_exact": _pct,
    "segmentation_frame_agreement": _pct, "segmentation_frame_agreement_decided": _pct, "embedding_min_cosine": _cos,
    "embedding_min_cosine_own_masks": _cos,
    "seconds": _secs, "rtf": _secs, "speed_ratio": _ratio, "peak_rss_mb": _mb,
    "depth": _int, "warmup_runs": _int, "repeats": _int,
}


def _all_passed(values: Iterable[Any]) -> bool | None:
    """False if any checked value failed, True if every checked one passed, None if none was checked."""
    checked = [bool(v) for v in values if not _na(v)]
    return all(checked) if checked else None


def _md(text: Any) -> str:
    """Text from data, safe inside a GitHub markdown table cell."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _md_pass(value: bool | None) -> str:
    return DASH if value is None else ("✅" if value else "❌")


def _paired_pyannote(frame: pd.DataFrame, file: Any, variant: Any) -> pd.Series | None:
    """The pyannote row run alongside MLX `variant` on `file`, else the file's first pyannote row."""
    rows = frame[(frame["side"] == "pyannote") & (frame["file"] == file)]
    same = rows[rows["variant"] == variant]
    rows = same if len(same) else rows
    return rows.iloc[0] if len(rows) else None


def _get(row: pd.Series | None, column: str) -> Any:
    return None if row is None else row.get(column)


def _machine_line(machine: dict) -> str:
    parts = [str(machine[k]) for k in ("platform", "cpu") if machine.get(k)]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("memory_gb"):
        parts.append(f"{float(machine['memory_gb']):.0f} GB")
    if machine.get("device"):
        parts.append(f"MLX {machine['device']}")
    parts.append(f"BLAS {machine.get('blas') or 'unknown'}")
    if machine.get("float32_products"):
        parts.append(f"float32 products in {machine['float32_products']}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# summary.md


def _weights(entry: dict) -> str:
    """How a checkpoint file's weights were made: its `weights` label, else "seeded"."""
    return str(entry.get("weights") or "seeded")


def summary_markdown(layers: pd.DataFrame, pipeline: pd.DataFrame, timing: pd.DataFrame, meta: dict,
                     sensitivity: pd.DataFrame | None = None, memory: pd.DataFrame | None = None) -> str:
    """The report a reviewer opens first (a pull-request comment or a CI job summary): one screen with the
    verdict, the variants table, the three worst layers and the speed ratios; every table behind `<details>`."""
    from harness import sensitivity as precision_report

    verdict = meta.get("verdict", {})
    files = meta.get("checkpoint", {}).get("files", [])
    shas = ", ".join(f"{_md(f.get('role', '?'))} `{str(f.get('sha256', ''))[:12]}`"
                     + ("" if f.get("real") else f" ({_md(_weights(f))})") for f in files)
    seeded = [_md(f.get("role", "?")) for f in files if not f.get("real")]
    failures = list(meta.get("failures", []))
    lines = [
        f"## {_md_pass(bool(verdict.get('passed')))} {_md(verdict.get('text', 'no verdict'))}",
        "",
        f"Checkpoint {_md(meta.get('checkpoint', {}).get('source', '?'))} ({shas}); "
        f"seeded or estimated, not trained: {', '.join(seeded) or 'none'}; {_md(_machine_line(meta.get('machine', {})))}",
        "",
        *_md_table(["variant", "pass", "DER vs pyannote (worst file)", "seg. frames equal (min)",
                    "emb. cosine (min)", "speakers equal", "worst layer: rel L2", "size MB", "params quantized"],
                   _variant_rows(layers, pipeline)),
        "",
        "**Worst layers** (failing first, then gated, by relative L2 error): "
        + ("; ".join(_worst_layers(layers)) or "none compared") + ".",
        "",
        "**Speed** (pyannote s ÷ MLX s, whole pipeline; per stage below):",
        "",
        *_md_table(["file", "pyannote s", *(_md(v) for v in _mlx_variants(timing))], _speed_ratio_rows(timing)),
        "",
        f"_{_md(_timing_note(meta))}_",
        "",
        *(f"_{_md(note)}_\n" for note in _notes(meta, timing)),
    ]
    if failures:
        lines += [f"**Failures** ({len(failures)}):", *(f"- {_md(f)}" for f in failures[:FAILURES_ON_SCREEN]), ""]
    details = [
        "### Layers",
        *_md_table(["variant", "layers", "worst layer", "rel L2", "max abs err", "min cosine",
                    "seg. argmax agreement", "pass"], _layer_rows(layers)),
        "",
        "### Pipeline",
        *_md_table(["file", "variant", "DER MLX vs pyannote", *(["DER vs exact mode"] if _has_fast(pipeline) else []),
                    "DER vs ref pyannote / MLX", "JER MLX vs pyannote", "JER vs ref pyannote / MLX",
                    "speakers ref / pyannote / MLX", "emb. cosine own masks (not gated)", "target", "pass"],
                   _pipeline_rows(pipeline)),
        "",
        "### Speed & memory",
        *_md_table(["file", "variant", "total s pyannote / MLX", "RTF pyannote / MLX", "speed-up",
                    "peak RSS MB pyannote / MLX", "timed runs"], _speed_rows(timing)),
        "",
    ]
    stages = [s for s in STAGES[:-1] if s in set(timing["stage"])]
    if stages:
        details += ["Per-stage speed-up (pyannote s ÷ MLX s):", "",
                    *_md_table(["file", "variant", *stages], _stage_rows(timing, stages)), ""]
    if memory is not None:
        details += ["### Memory curve (MLX side alone, float32, synthetic conversations, a fresh process each)", "",
                    curve_table(memory), ""]
    if sensitivity is not None:
        details += precision_report.markdown(sensitivity)
    if len(failures) > FAILURES_ON_SCREEN:
        details += ["### Failures", *(f"- {_md(f)}" for f in failures[:FAILURES_IN_SUMMARY])]
        if len(failures) > FAILURES_IN_SUMMARY:
            details.append(f"- … and {len(failures) - FAILURES_IN_SUMMARY} more (report.html lists all)")
        details.append("")
    lines += ["<details><summary>Every table: layers, pipeline, speed &amp; memory, per stage</summary>", "",
              *details, "</details>", "",
              f"Plots and full tables: `report.html`; every timed run: `timing_runs.csv`. "
              f"Created {_md(meta.get('created', '?'))}."]
    return "\n".join(lines) + "\n"


def _notes(meta: dict, timing: pd.DataFrame) -> list[str]:
    """The meta's notes on reduced or quantized variants, when the report has one."""
    reduced = any(not str(v).startswith("float32") or "-q" in str(v) for v in _mlx_variants(timing))
    return list(meta.get("notes", [])) if reduced else []


def _timing_note(meta: dict) -> str:
    """How the timings were taken: warm-up, repeats, and pyannote's run measured now or taken from the cache."""
    parts = [str(meta["warmup"])] if meta.get("warmup") else []
    repeats = int(meta.get("repeats") or 1)
    parts.append(f"MLX medians of {repeats} interleaved timed runs" if repeats > 1 else "one timed run per side")
    cached = {uri: r.get("cached") for uri, r in (meta.get("reference") or {}).items() if r.get("cached")}
    if cached:
        dates = sorted(set(cached.values()))
        parts.append(f"pyannote's run of {len(cached)} of {len(meta['reference'])} file(s) taken from the reference "
                     f"cache (measured {', '.join(dates)}; --fresh-reference reruns it)")
    elif meta.get("reference"):
        parts.append("pyannote measured in this run")
    return "; ".join(parts)


def _mlx_variants(timing: pd.DataFrame) -> list[Any]:
    return list(timing.loc[timing["side"] == "mlx", "variant"].unique())


def _speed_ratio_rows(timing: pd.DataFrame) -> list[list[str]]:
    """Per file: pyannote's total seconds, then each MLX variant's whole-pipeline speed ratio."""
    totals = timing[timing["stage"] == "total"]
    rows = []
    for file, g in totals.groupby("file", sort=False):
        p = g[g["side"] == "pyannote"]
        seconds = _secs(p["seconds"].iloc[0]) if len(p) else DASH
        if len(p) and str(p["cached"].iloc[0] if "cached" in p else ""):
            seconds += " (cached)"
        ratio = g[g["side"] == "mlx"].set_index("variant")["speed_ratio"]
        rows.append([_md(file), seconds, *(_ratio(ratio.get(v)) for v in _mlx_variants(timing))])
    return rows


def _variant_rows(layers: pd.DataFrame, pipeline: pd.DataFrame) -> list[list[str]]:
    """Per MLX variant, worst file: verdict, DER, frames, cosine, speakers, worst layer, size, share quantized."""
    mlx = pipeline[(pipeline["side"] == "mlx") & (pipeline["file"] != "(all)")]
    rows = []
    for variant, g in mlx.groupby("variant", sort=False):
        own = layers[layers["variant"] == variant]
        worst = own.loc[own["rel_l2"].idxmax()] if own["rel_l2"].notna().any() else None
        layer = DASH if worst is None else f"{_md(worst['model'])}/{_md(worst['layer'])}: {_sci(worst['rel_l2'])}"
        checked = _all_passed([*g["passed"], *own["passed"]])
        speakers = g[["speakers", "pyannote_speakers"]].dropna()
        rows.append([_md(variant), "reported" if checked is None else _md_pass(checked),
                     _der_cell(g), _pct(g["segmentation_frame_agreement"].min()),
                     _cos(g["embedding_min_cosine"].min()),
                     DASH if speakers.empty else ("yes" if (speakers.iloc[:, 0] == speakers.iloc[:, 1]).all() else "NO"),
                     layer, _mb1(g["size_mb"].iloc[0]), _pct(g["quantized_share"].iloc[0])])
    return rows


def _der_cell(rows: pd.DataFrame) -> str:
    """The worst DER vs pyannote; where float32 rounding split tie frames, also the DER with those frames
    decided as pyannote decides them (what the float32 gate holds to 0)."""
    cell = _pct(rows["der_vs_pyannote"].max())
    ties = rows["tie_frames_flipped"].fillna(0) if "tie_frames_flipped" in rows else pd.Series(dtype=float)
    if ties.gt(0).any():
        cell += (f" ({_pct(rows['der_vs_pyannote_ties_resolved'].max())} with {int(ties.sum())} tie frame(s) "
                 "as pyannote decides them)")
    return cell


def _worst_layers(layers: pd.DataFrame, count: int = 3) -> list[str]:
    """The `count` layers to look at first: failing ones, then gated ones, then the rest, by relative L2 error."""
    if not len(layers):
        return []
    rank = layers.assign(_failed=layers["passed"].map(lambda v: not _na(v) and not bool(v)),
                         _gated=layers["passed"].map(lambda v: not _na(v)))
    rank = rank.sort_values(["_failed", "_gated", "rel_l2"], ascending=False, kind="stable", na_position="last")
    many_files = layers["file"].nunique() > 1
    out = []
    for _, row in rank.head(count).iterrows():
        where = f"{_md(row['variant'])} {_md(row['model'])}/{_md(row['layer'])}" + (
            f" ({_md(row['file'])})" if many_files else "")
        out.append(f"{where} {_sci(row['rel_l2'])} {_md_pass(None if _na(row['passed']) else bool(row['passed']))}")
    return out


def _layer_rows(layers: pd.DataFrame) -> list[list[str]]:
    many_files = layers["file"].nunique() > 1
    rows = []
    for variant, g in layers.groupby("variant", sort=False):
        worst = g.loc[g["rel_l2"].idxmax()] if g["rel_l2"].notna().any() else None
        name = DASH if worst is None else f"{worst['model']}/{worst['layer']}" + (
            f" ({worst['file']})" if many_files else "")
        rows.append([_md(variant), str(len(g[["model", "layer"]].drop_duplicates())), _md(name),
                     _sci(_get(worst, "rel_l2")), _sci(_get(worst, "max_abs_err")), _cos(g["cosine"].min()),
                     _pct(g["argmax_agreement"].min()), _md_pass(_all_passed(g["passed"]))])
    return rows


def _has_fast(pipeline: pd.DataFrame) -> bool:
    """Whether a fast embedding mode was run (its rows have a DER against exact mode)."""
    return bool(pipeline["der_vs_exact"].notna().any())


def _pipeline_rows(pipeline: pd.DataFrame) -> list[list[str]]:
    rows = []
    fast = _has_fast(pipeline)
    for _, m in pipeline[pipeline["side"] == "mlx"].iterrows():
        p = _paired_pyannote(pipeline, m["file"], m["variant"])
        rows.append([
            _md(m["file"]), _md(m["variant"]), _pct(m["der_vs_pyannote"]), *([_pct(m["der_vs_exact"])] if fast else []),
            f"{_pct(_get(p, 'der_vs_reference'))} / {_pct(m['der_vs_reference'])}",
            _pct(m["jer_vs_pyannote"]),
            f"{_pct(_get(p, 'jer_vs_reference'))} / {_pct(m['jer_vs_reference'])}",
            f"{_int(m['reference_speakers'])} / {_int(_get(p, 'speakers'))} / {_int(m['speakers'])}",
            _cos(m["embedding_min_cosine_own_masks"]), _md(m["target"]) if not _na(m["target"]) else DASH,
            _md_pass(_all_passed([m["passed"], _get(p, "passed")])),
        ])
    return rows


def _speed_rows(timing: pd.DataFrame) -> list[list[str]]:
    totals = timing[timing["stage"] == "total"]
    rows = []
    for _, m in totals[totals["side"] == "mlx"].iterrows():
        p = _paired_pyannote(totals, m["file"], m["variant"])
        rows.append([
            _md(m["file"]), _md(m["variant"]), f"{_secs(_get(p, 'seconds'))} / {_secs(m['seconds'])}",
            f"{_secs(_get(p, 'rtf'))} / {_secs(m['rtf'])}", _ratio(m["speed_ratio"]),
            f"{_mb(_get(p, 'peak_rss_mb'))} / {_mb(m['peak_rss_mb'])}",
            f"{_int(_get(p, 'repeats'))}{' (cached)' if _get(p, 'cached') else ''} / {_int(m.get('repeats'))}",
        ])
    return rows


def _stage_rows(timing: pd.DataFrame, stages: list[str]) -> list[list[str]]:
    mlx = timing[timing["side"] == "mlx"]
    ratios = mlx.pivot_table(index=["file", "variant"], columns="stage", values="speed_ratio", sort=False)
    return [[_md(file), _md(variant), *(_ratio(row.get(s)) for s in stages)]
            for (file, variant), row in ratios.iterrows()]


# ---------------------------------------------------------------------------------------------
# report.html

CSS = f"""
body{{font:14px/1.45 system-ui,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff;
     max-width:1240px;margin:0 auto;padding:12px 24px 48px}}
h1{{margin:8px 0}} h2{{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}}
.verdict{{color:#fff;font-size:22px;font-weight:600;padding:22px 24px;border-radius:8px;margin:12px 0;
          overflow-wrap:anywhere}}
.verdict.pass{{background:{PASS_COLOUR}}} .verdict.fail{{background:{FAIL_COLOUR}}}
.seeded{{background:#fff8c5;border:1px solid #d4a72c;border-radius:8px;padding:8px 16px;margin:12px 0}}
.meta{{display:flex;flex-wrap:wrap;gap:8px 32px;align-items:flex-start}}
.scroll{{overflow-x:auto;max-width:100%}}
table{{border-collapse:collapse;font-size:12px;margin:8px 0}}
th,td{{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top}}
th{{background:#f6f8fa}} td.num{{text-align:right;font-variant-numeric:tabular-nums}}
td.ok{{background:#dafbe1}} td.bad{{background:#ffebe9;font-weight:600}}
code{{font-size:12px;overflow-wrap:anywhere}} img{{max-width:100%;height:auto;display:block;margin:8px 0}}
.small{{color:#59636e;font-size:12px}}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def report_html(layers: pd.DataFrame, pipeline: pd.DataFrame, timing: pd.DataFrame, meta: dict,
                diarizations: dict[str, Diarizations], sensitivity: pd.DataFrame | None = None,
                memory: pd.DataFrame | None = None) -> str:
    """The whole report as one HTML document with no external resources."""
    import matplotlib

    from harness import sensitivity as precision_report

    verdict = meta.get("verdict", {})
    ok = bool(verdict.get("passed"))
    title = meta.get("title", "mlx-diar parity report")
    with matplotlib.rc_context({"font.size": 9}):
        layer_plots = [_img(_layer_plot(layers[layers["model"] == m], str(m)), f"relative L2 error per layer: {m}")
                       for m in layers["model"].unique()]
        timelines = [_img(_timeline_plot(file, entry), f"diarization timeline: {file}")
                     for file, entry in diarizations.items()]
        timing_plots = [_img(_timing_plot(timing[timing["file"] == f], str(f)), f"time per stage: {f}")
                        for f in timing["file"].unique()]
        sensitivity_html = [] if sensitivity is None else [
            "<h2>Precision sensitivity</h2>",
            '<p class="small">Each block alone reduced / alone kept float32 (4-bit: alone 4-bit / alone 8-bit); '
            "whole MLX pipeline scored against pyannote float32, worst file.</p>",
            _img(precision_report.plot(sensitivity), "precision sensitivity per block"),
            _frame_html(precision_report.worst(sensitivity))]
    failures = meta.get("failures", [])
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<div class="verdict {"pass" if ok else "fail"}" id="verdict">{_e(verdict.get("text", "no verdict"))}</div>',
        _header_html(meta),
        "<h2>1. Layers</h2>",
        '<p class="small">Relative L2 error of every named layer against pyannote, in forward order '
        "(worst file per layer; an exact match is drawn at 1e-12).</p>",
        *layer_plots,
        _frame_html(layers),
        "<h2>2. Pipeline</h2>",
        _frame_html(pipeline),
        *timelines,
        "<h2>3. Speed &amp; memory</h2>",
        f'<p class="small">{_e(_timing_note(meta))}</p>',
        *(f'<p class="small">{_e(note)}</p>' for note in _notes(meta, timing)),
        *timing_plots,
        _frame_html(timing),
        *([] if memory is None else ["<h3>Memory curve</h3>",
                                     '<p class="small">Peak resident memory (VmHWM) of the MLX pipeline alone, '
                                     "float32, on synthetic conversations, a fresh process per length.</p>",
                                     _frame_html(memory)]),
        *sensitivity_html,
        "<h2>4. Failures</h2>",
        "<ol>" + "".join(f"<li>{_e(f)}</li>" for f in failures) + "</ol>" if failures else "<p>None.</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _header_html(meta: dict) -> str:
    machine = meta.get("machine", {})
    checkpoint = meta.get("checkpoint", {})
    machine_rows = [(k, machine.get(k)) for k in ("platform", "cpu", "cores", "memory_gb", "device", "blas",
                                                  "float32_products")]
    run_rows = [("created", meta.get("created")), ("command", meta.get("command")),
                ("checkpoint", checkpoint.get("source"))]
    ckpt = pd.DataFrame([{"role": f.get("role"), "path": f.get("path"), "sha256": f.get("sha256"),
                          "weights": "real" if f.get("real") else _weights(f).upper()}
                         for f in checkpoint.get("files", [])])
    seeded = meta.get("seeded_parts", [])
    note = ('<div class="seeded"><strong>Seeded or estimated, not trained:</strong><ul>'
            + "".join(f"<li>{_e(s)}</li>" for s in seeded) + "</ul></div>") if seeded else ""
    return (
        '<div class="meta">'
        + _kv_html("Machine", machine_rows) + _kv_html("Versions", list(meta.get("versions", {}).items()))
        + _kv_html("Run", run_rows) + "</div>"
        + "<h3>Checkpoint</h3>" + (_frame_html(ckpt) if len(ckpt) else "<p>No checkpoint files recorded.</p>")
        + note
    )


def _kv_html(title: str, rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(DASH if _na(v) else v)}</code></td></tr>"
                    for k, v in rows)
    return f"<div><h3>{_e(title)}</h3><table>{cells}</table></div>"


def _frame_html(frame: pd.DataFrame) -> str:
    """A frame as an HTML table: known columns formatted, `passed` coloured, every cell escaped."""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record):
            if column == "passed":
                cls, text = ("", DASH) if _na(value) else (("ok", "PASS") if bool(value) else ("bad", "FAIL"))
            elif column in FORMATS:
                cls, text = "num", FORMATS[column](value)
            else:
                cls, text = "", "" if _na(value) else str(value)
            cells.append(f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _mpl(text: Any) -> str:
    """Text from data as a literal matplotlib label: `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _layer_plot(layers: pd.DataFrame, model: str) -> Any:
    """Relative L2 error by layer (forward order) on a log scale, one line per variant."""
    from matplotlib.figure import Figure

    names = list(layers.groupby("layer", sort=False)["depth"].min().sort_values(kind="stable").index)
    worst = layers.groupby(["variant", "layer"], sort=False)["rel_l2"].max()
    fig = Figure(figsize=(max(6.0, 2.0 + 0.32 * len(names)), 3.8))
    ax = fig.add_subplot()
    for variant in layers["variant"].unique():
        y = worst[variant].reindex(names).to_numpy(dtype=float)
        ax.plot(range(len(names)), np.maximum(y, REL_L2_FLOOR), marker="o", markersize=3, label=_mpl(variant))
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [_mpl(n) for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("relative L2 error")
    ax.set_title(_mpl(model))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _timeline_plot(file: Any, entry: Diarizations) -> Any:
    """Reference, pyannote and every MLX variant as rows; each speaker a coloured lane within its row."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = [("reference", entry.reference)] if entry.reference is not None else []
    rows += [("pyannote", entry.pyannote)]
    rows += [(f"mlx {variant}", ann) for variant, ann in entry.mlx.items()]
    labels = sorted({label for _, ann in rows for label in ann.labels()}, key=str)
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    colours = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    fig = Figure(figsize=(11.0, 1.2 + 0.55 * len(rows)))
    ax = fig.add_subplot()
    for r, (_, ann) in enumerate(rows):
        speakers = sorted(ann.labels(), key=str)
        lane = 0.8 / max(len(speakers), 1)
        for k, speaker in enumerate(speakers):
            spans = [(s.start, s.duration) for s in ann.label_timeline(speaker)]
            ax.broken_barh(spans, (r - 0.4 + k * lane, 0.9 * lane), facecolors=colours[speaker])
    ax.set_yticks(range(len(rows)), [_mpl(name) for name, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, float(entry.duration or ax.get_xlim()[1]))
    ax.set_xlabel("time (s)")
    ax.set_title(_mpl(file))
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=colours[label], label=_mpl(label)) for label in labels],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


def _timing_plot(timing: pd.DataFrame, file: str) -> Any:
    """Seconds per stage (log scale): pyannote (mean of its runs) next to each MLX variant."""
    from matplotlib import ticker
    from matplotlib.figure import Figure

    stages = [s for s in STAGES if s in set(timing["stage"])]
    series = [("pyannote", timing[timing["side"] == "pyannote"].groupby("stage")["seconds"].mean())]
    mlx = timing[timing["side"] == "mlx"]
    series += [(f"mlx {v}", g.groupby("stage")["seconds"].mean()) for v, g in mlx.groupby("variant", sort=False)]
    fig = Figure(figsize=(9.0, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(len(stages))
    for i, (name, seconds) in enumerate(series):
        ax.bar(x - 0.4 + (i + 0.5) * width, seconds.reindex(stages).to_numpy(dtype=float), width, label=_mpl(name))
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks(x, stages)
    ax.set_ylabel("seconds")
    ax.set_title(_mpl(file))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
