"""Corpus report of a `harness compare` corpus run: DER/JER accumulated over every file, by group, worst files first.

Reads the per-recording records the executor wrote (`mlx_diar.runtime.executor`); each done record's
result holds, per side ("pyannote" and every MLX variant), its wall-clock seconds and the
pyannote.metrics components of its DER/JER against the reference (and, for MLX, against
pyannote). Corpus rates sum the components over files, as an accumulating pyannote.metrics
object does; they are never averages of per-file rates.
"""

from __future__ import annotations

import math
from typing import Any

from harness.metrics import corpus_rates

DURATION_BUCKETS = ((0, 30, "< 30 s"), (30, 120, "30 s - 2 min"), (120, 600, "2 - 10 min"),
                    (600, 1800, "10 - 30 min"), (1800, math.inf, ">= 30 min"))


def duration_bucket(seconds: float) -> str:
    return next(name for low, high, name in DURATION_BUCKETS if low <= seconds < high)


def done_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "done" and r.get("result")]


def side_names(records: list[dict[str, Any]]) -> list[str]:
    """"pyannote" first, then the MLX variants in the order they were run."""
    names: list[str] = []
    for record in done_records(records):
        names += [n for n in record["result"]["sides"] if n not in names]
    return sorted(names, key=lambda n: n != "pyannote")


def _rates(records: list[dict[str, Any]], side: str, key: str) -> dict[str, float]:
    parts = [r["result"]["sides"][side][key] for r in records
             if side in r["result"]["sides"] and r["result"]["sides"][side].get(key)]
    return corpus_rates(parts) if parts else {"der": math.nan, "jer": math.nan}


def overall_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per side: files, audio hours, corpus DER/JER (vs reference, vs pyannote), RTF and throughput.

    RTF and throughput use the side's own processing seconds summed over files (what one worker
    spends per second of audio); the run's own wall-clock and throughput are in `RunSummary.line`.
    """
    done = done_records(records)
    rows = []
    for side in side_names(done):
        mine = [r for r in done if side in r["result"]["sides"]]
        audio = sum(r["duration_s"] for r in mine)
        seconds = sum(r["result"]["sides"][side]["seconds"] for r in mine)
        versus_reference = _rates(mine, side, "vs_reference")
        row = {"side": side, "files": len(mine), "audio_h": audio / 3600,
               "der_vs_reference": versus_reference["der"], "jer_vs_reference": versus_reference["jer"],
               "missed": versus_reference.get("missed", math.nan),
               "false_alarm": versus_reference.get("false_alarm", math.nan),
               "confusion": versus_reference.get("confusion", math.nan)}
        if side != "pyannote":
            versus_pyannote = _rates(mine, side, "vs_pyannote")
            row.update(der_vs_pyannote=versus_pyannote["der"], jer_vs_pyannote=versus_pyannote["jer"],
                       der_vs_exact=_rates(mine, side, "vs_exact")["der"])
        row.update(processing_s=seconds, rtf=seconds / audio if audio else math.nan,
                   audio_h_per_h=audio / seconds if seconds else math.nan)
        rows.append(row)
    return rows


def grouped_rows(records: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Corpus DER/JER per side within each group: `by` is "reference_speakers" or "duration"."""
    done = done_records(records)
    groups: dict[Any, list[dict[str, Any]]] = {}
    for record in done:
        result = record["result"]
        key = (duration_bucket(record["duration_s"]) if by == "duration" else result.get("reference_speakers"))
        if key is not None:
            groups.setdefault(key, []).append(record)
    order = [name for _, _, name in DURATION_BUCKETS] if by == "duration" else sorted(groups)
    rows = []
    for key in (k for k in order if k in groups):
        members = groups[key]
        for side in side_names(members):
            versus = _rates(members, side, "vs_reference")
            row = {by: key, "side": side, "files": len(members),
                   "audio_h": sum(r["duration_s"] for r in members) / 3600,
                   "der_vs_reference": versus["der"], "jer_vs_reference": versus["jer"]}
            if side != "pyannote":
                row["der_vs_pyannote"] = _rates(members, side, "vs_pyannote")["der"]
            rows.append(row)
    return rows


def file_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per file and side, worst first: by the first MLX variant's DER vs reference (else vs pyannote)."""
    done = done_records(records)
    sides = side_names(done)
    rows = []
    for record in done:
        result = record["result"]
        for side in sides:
            if side not in result["sides"]:
                continue
            entry = result["sides"][side]
            versus_reference = corpus_rates([entry["vs_reference"]]) if entry.get("vs_reference") else {}
            versus_pyannote = corpus_rates([entry["vs_pyannote"]]) if entry.get("vs_pyannote") else {}
            rows.append({"file": record["uri"], "side": side, "duration_s": record["duration_s"],
                         "reference_speakers": result.get("reference_speakers"), "speakers": entry.get("speakers"),
                         "der_vs_reference": versus_reference.get("der", math.nan),
                         "jer_vs_reference": versus_reference.get("jer", math.nan),
                         "der_vs_pyannote": versus_pyannote.get("der", math.nan),
                         "seconds": entry["seconds"], "rtf": entry["seconds"] / record["duration_s"]})
    mlx = next((s for s in sides if s != "pyannote"), "pyannote")

    def worst_first(uri: str) -> tuple[float, float]:
        row = next((r for r in rows if r["file"] == uri and r["side"] == mlx), {})
        keys = [row.get("der_vs_reference", math.nan), row.get("der_vs_pyannote", math.nan)]
        return tuple(-k if k == k else math.inf for k in keys)

    rank = {uri: i for i, uri in enumerate(sorted({r["file"] for r in rows}, key=worst_first))}
    return sorted(rows, key=lambda r: (rank[r["file"]], sides.index(r["side"])))


def _text(value: Any) -> str:
    """Text for one Markdown line or table cell: whitespace (newlines) folded, `|` escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    def cell(value: Any, column: str) -> str:
        if isinstance(value, float):
            if value != value:
                return "-"
            if column.startswith(("der", "jer", "missed", "false", "confusion")):
                return f"{value:.2%}"
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
        return "-" if value is None else _text(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c), c) for c in columns) + " |" for row in rows]
    return lines


def corpus_markdown(records: list[dict[str, Any]], run_line: str, worst: int = 20) -> str:
    """The corpus summary: overall per side, by reference speakers, by duration, worst files, failures."""
    failed = [r for r in records if r.get("status") != "done"]
    overall = overall_rows(records)
    lines = ["# Corpus summary", "", run_line, "",
             f"{len(done_records(records))} of {len(records)} recordings scored; DER/JER accumulated over the "
             "corpus by pyannote.metrics (collar 0, overlap scored): components summed over files.", "",
             "## Overall", ""]
    lines += _table(overall, ["side", "files", "audio_h", "der_vs_reference", "jer_vs_reference", "missed",
                              "false_alarm", "confusion", "der_vs_pyannote", "jer_vs_pyannote", "der_vs_exact",
                              "processing_s", "rtf", "audio_h_per_h"])
    lines += ["", "RTF and audio h/h: each side's own processing seconds summed over its files (one worker).", ""]
    for by, title in (("reference_speakers", "By number of reference speakers"), ("duration", "By duration")):
        rows = grouped_rows(records, by)
        if rows:
            lines += [f"## {title}", ""]
            lines += _table(rows, [by, "side", "files", "audio_h", "der_vs_reference", "jer_vs_reference",
                                   "der_vs_pyannote"])
            lines.append("")
    files = file_rows(records)
    if files:
        uris = list(dict.fromkeys(r["file"] for r in files))[:worst]
        lines += [f"## Worst files first ({len(uris)} of {len(set(r['file'] for r in files))})", ""]
        lines += _table([r for r in files if r["file"] in uris],
                        ["file", "side", "duration_s", "reference_speakers", "speakers", "der_vs_reference",
                         "jer_vs_reference", "der_vs_pyannote", "seconds", "rtf"])
        lines.append("")
    if failed:
        lines += [f"## Failed recordings ({len(failed)})", ""]
        lines += [f"- `{_text(r['uri'])}`: {_text(r.get('error'))}" for r in failed]
        lines.append("")
    return "\n".join(lines)


def corpus_pipeline_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pipeline.csv's corpus rows (file "(all)") from the summed components, one per side."""
    return [{"file": "(all)", "variant": row["side"], "side": "pyannote" if row["side"] == "pyannote" else "mlx",
             "duration_s": row["audio_h"] * 3600, "der_vs_reference": row["der_vs_reference"],
             "jer_vs_reference": row["jer_vs_reference"], "der_vs_pyannote": row.get("der_vs_pyannote", math.nan),
             "jer_vs_pyannote": row.get("jer_vs_pyannote", math.nan),
             "der_vs_exact": row.get("der_vs_exact", math.nan)} for row in overall_rows(records)]
