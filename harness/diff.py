"""`python -m harness diff BASE HEAD`: what a change did to parity, size, memory and speed, base → head.

BASE and HEAD are report directories written by `harness compare`, or git revisions whose reports
this command builds (each checked out with `git worktree add` into a temporary directory and
compared there with the same `--compare-args`, base first). It writes `diff.md` and a
self-contained `diff.html` into `--out`:

1. parity changes, never treated as noise: the verdict, every pass/fail decision, DER (against
   pyannote, the reference and exact mode) and speaker count that differ, in that order;
2. layers whose relative L2 error moved by more than `LAYER_FACTOR` either way;
3. rows added or removed (files or variants in one report only);
4. per file and variant: DER vs pyannote, worst layer, embedding cosine, speakers, size, peak memory;
5. every stage's time, base → head, with a verdict from the timed runs of each side
   (`timing_runs.csv`, `compare --repeat N`): "slower" or "faster" when a two-sided Mann-Whitney U
   test gives p < `ALPHA`, the 95 % bootstrap confidence interval of the ratio of medians excludes 1
   and the ratio is beyond `--factor` (default 1.10, as `asv compare`); else "not significant";
   "too few repeats" below `MIN_REPEATS` runs on either side (then nothing is claimed); "same cached
   run" when both reports took pyannote's timing from the same reference-cache entry.

Exit status: 1 when a parity target newly fails (a decision goes to fail, a new row fails, or
the verdict goes from PASS to FAIL) or when an MLX stage taking at least `GATED_SECONDS` is
significantly slower by more than `--max-slowdown` (default 1.2x; `inf` turns the speed gate off),
2 on bad input, else 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report import CSS, DASH, _cos, _e, _md, _md_table, _na, _pct, _sci
from mlx_diar.errors import MlxDiarError, OptionError
from mlx_diar.fsutil import atomic_write, writable_dir

MIN_REPEATS = 5  # timed runs per side before a speed verdict is given (5 vs 5: smallest two-sided p 0.008)
ALPHA = 0.05
FACTOR = 1.10  # smallest ratio of medians called a change (asv compare's default factor)
MAX_SLOWDOWN = 1.2
GATED_SECONDS = 0.01  # stages faster than this on both sides are reported, never gated
LAYER_FACTOR = 2.0  # a layer's relative L2 error moving more than this either way is listed
BOOTSTRAP = 4000
DEFAULT_COMPARE_ARGS = "--repeat 5"
DER_COLUMNS = ("der_vs_pyannote", "der_vs_reference", "der_vs_exact", "jer_vs_pyannote", "jer_vs_reference")
SPEAKER_COLUMNS = ("speakers", "pyannote_speakers", "reference_speakers")


# ---------------------------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class Report:
    """One report directory of `harness compare`, read back."""

    path: Path
    layers: pd.DataFrame
    pipeline: pd.DataFrame
    timing: pd.DataFrame
    runs: pd.DataFrame  # one row per timed run and stage (timing_runs.csv, else timing.csv's medians)
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.path)

    def verdict(self) -> bool | None:
        passed = (self.meta.get("verdict") or {}).get("passed")
        return None if passed is None else bool(passed)


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise OptionError(f"{path}: cannot read it as a report table ({e})") from None


def read_report(path: Path, label: str | None = None) -> Report:
    """A report directory (pipeline.csv, layers.csv, timing.csv, and when written timing_runs.csv and meta.json)."""
    path = Path(path)
    for name in ("pipeline.csv", "layers.csv", "timing.csv"):
        if not (path / name).is_file():
            raise OptionError(f"{path}: not a report directory of `harness compare` (no {name})")
    timing = _csv(path / "timing.csv")
    for column, default in (("repeats", 1), ("cached", "")):
        if column not in timing:  # reports written before `--repeat` and the reference cache
            timing[column] = default
    timing["cached"] = timing["cached"].fillna("").astype(str)
    if (path / "timing_runs.csv").is_file():
        runs = _csv(path / "timing_runs.csv")
        runs["cached"] = runs["cached"].fillna("").astype(str) if "cached" in runs else ""
    else:
        runs = timing.assign(repeat=0)[["file", "variant", "side", "stage", "repeat", "seconds", "peak_rss_mb",
                                        "cached"]]
    meta: dict[str, Any] = {}
    if (path / "meta.json").is_file():
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except ValueError as e:
            raise OptionError(f"{path / 'meta.json'}: not JSON ({e})") from None
    if label:
        meta["label"] = label
    return Report(path=path, layers=_csv(path / "layers.csv"), pipeline=_csv(path / "pipeline.csv"),
                  timing=timing, runs=runs, meta=meta)


def _decision(value: Any) -> bool | None:
    """A `passed` cell as read from CSV: True, False or None (no target)."""
    if _na(value) or value == "":
        return None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return bool(value)


# ---------------------------------------------------------------------------------------------- timing
@dataclasses.dataclass(frozen=True)
class SpeedChange:
    """base → head of one timing row: medians, ratio (head / base), its bootstrap CI, p-value, verdict."""

    base: float
    head: float
    n_base: int
    n_head: int
    ratio: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    verdict: str = "not significant"


def speed_change(base: np.ndarray, head: np.ndarray, factor: float = FACTOR, seed: int = 0) -> SpeedChange:
    """Mann-Whitney U and a bootstrap CI of the ratio of medians, as `asv compare` and pyperf judge a change."""
    from scipy.stats import mannwhitneyu

    base, head = np.asarray(base, dtype=float), np.asarray(head, dtype=float)
    out = SpeedChange(float(np.median(base)) if base.size else math.nan,
                      float(np.median(head)) if head.size else math.nan, int(base.size), int(head.size))
    if min(base.size, head.size) < MIN_REPEATS:
        return dataclasses.replace(out, ratio=out.head / out.base if out.base else math.nan,
                                   verdict=f"too few repeats (n={base.size}/{head.size}; need {MIN_REPEATS})")
    if out.base <= 0 or out.head <= 0:
        return dataclasses.replace(out, verdict="not measured")
    rng = np.random.default_rng(seed)
    ratios = (np.median(rng.choice(head, (BOOTSTRAP, head.size)), axis=1)
              / np.maximum(np.median(rng.choice(base, (BOOTSTRAP, base.size)), axis=1), 1e-12))
    low, high = (float(v) for v in np.percentile(ratios, [2.5, 97.5]))
    p = float(mannwhitneyu(head, base, alternative="two-sided").pvalue)
    ratio = out.head / out.base
    significant = p < ALPHA and (low > 1 or high < 1) and (ratio >= factor or ratio <= 1 / factor)
    verdict = ("slower" if ratio > 1 else "faster") if significant else "not significant"
    return dataclasses.replace(out, ratio=ratio, low=low, high=high, p=p, verdict=verdict)


def _samples(report: Report, key: tuple[str, str, str]) -> tuple[np.ndarray, str]:
    """The seconds of every timed run of (file, variant, stage), and the date of a cached measurement ("")."""
    runs = report.runs
    rows = runs[(runs["file"].astype(str) == key[0]) & (runs["variant"].astype(str) == key[1])
                & (runs["stage"] == key[2])]
    return rows["seconds"].to_numpy(dtype=float), next((str(c) for c in rows["cached"] if str(c)), "")


# ---------------------------------------------------------------------------------------------- diff
@dataclasses.dataclass
class Diff:
    """Everything `harness diff` found, ready for diff.md and diff.html."""

    base: Report
    head: Report
    parity: list[str]  # parity changes, most important first
    newly_failing: list[str]
    layers: list[list[str]]
    added: list[str]
    removed: list[str]
    rows: list[list[str]]  # per file and variant
    timing: list[tuple[tuple[str, str, str], SpeedChange, bool]]  # (file, variant, stage), change, gated
    slowdowns: list[str]  # gated slowdowns beyond --max-slowdown
    notes: list[str]

    @property
    def exit_status(self) -> int:
        return 1 if self.newly_failing or self.slowdowns else 0


def _same(a: Any, b: Any) -> bool:
    if _na(a) and _na(b):
        return True
    if _na(a) or _na(b):
        return False
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _word(decision: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "no target"}[decision]


def _keyed(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, pd.Series]:
    return {tuple(str(row[c]) for c in columns): row for _, row in frame.iterrows()}


def _parity(base: Report, head: Report) -> tuple[list[str], list[str], list[str], list[str]]:
    """(parity changes, newly failing, added rows, removed rows) over verdict, pipeline rows and layer decisions."""
    changes: list[str] = []
    failing: list[str] = []
    if base.verdict() != head.verdict():
        word = {True: "PASS", False: "FAIL", None: "none"}
        text = f"verdict {word[base.verdict()]} → {word[head.verdict()]}"
        changes.append(text)
        if head.verdict() is False:
            failing.append(text)
    b, h = _keyed(base.pipeline, ["file", "variant"]), _keyed(head.pipeline, ["file", "variant"])
    decisions, values = [], []
    for key in [k for k in h if k in b]:
        old, new = b[key], h[key]
        where = f"{key[0]} {key[1]}"
        was, now = _decision(old.get("passed")), _decision(new.get("passed"))
        if was != now:
            decisions.append(f"{where}: pipeline target {_word(was)} → {_word(now)} ({new.get('target') or old.get('target')})")
            if now is False:
                failing.append(decisions[-1])
        for column in [*DER_COLUMNS, *SPEAKER_COLUMNS]:
            if column in old and column in new and not _same(old[column], new[column]):
                show = _pct if column in DER_COLUMNS else _int
                values.append(f"{where}: {column.replace('_', ' ')} {show(old[column])} → {show(new[column])}")
    added = [f"{k[0]} {k[1]}" for k in h if k not in b]
    removed = [f"{k[0]} {k[1]}" for k in b if k not in h]
    for key in (k for k in h if k not in b):
        if _decision(h[key].get("passed")) is False:
            failing.append(f"{key[0]} {key[1]}: new row, pipeline target MISSED ({h[key].get('target')})")
    lb = _keyed(base.layers, ["file", "variant", "model", "layer"])
    for key, new in _keyed(head.layers, ["file", "variant", "model", "layer"]).items():
        was, now = (_decision(lb[key].get("passed")) if key in lb else None), _decision(new.get("passed"))
        if was != now and (key in lb or now is False):
            text = (f"{key[0]} {key[1]} layer {key[2]}/{key[3]}: target {_word(was)} → {_word(now)} "
                    f"(rel L2 {_sci(lb[key]['rel_l2']) if key in lb else DASH} → {_sci(new['rel_l2'])})")
            decisions.append(text)
            if now is False:
                failing.append(text)
    return changes + decisions + values, failing, added, removed


def _int(value: Any) -> str:
    return DASH if _na(value) else str(int(float(value)))


def _layer_changes(base: Report, head: Report) -> list[list[str]]:
    """Layers whose relative L2 error moved by more than LAYER_FACTOR, the largest move first."""
    b = _keyed(base.layers, ["file", "variant", "model", "layer"])
    out = []
    for key, new in _keyed(head.layers, ["file", "variant", "model", "layer"]).items():
        if key not in b:
            continue
        old, now = float(b[key]["rel_l2"]), float(new["rel_l2"])
        if not (math.isfinite(old) and math.isfinite(now)):
            if not _same(old, now):
                out.append((math.inf, key, old, now, new))
            continue
        ratio = max(now, 1e-12) / max(old, 1e-12)
        if ratio > LAYER_FACTOR or ratio < 1 / LAYER_FACTOR:
            out.append((abs(math.log(ratio)), key, old, now, new))
    out.sort(key=lambda t: -t[0])
    return [[k[0], k[1], f"{k[2]}/{k[3]}", f"{_sci(old)} → {_sci(now)}",
             f"{max(now, 1e-12) / max(old, 1e-12):.3g}x" if math.isfinite(old) and math.isfinite(now) else DASH,
             _word(_decision(row.get("passed")))] for _, k, old, now, row in out]


def _arrow(old: str, new: str) -> str:
    return f"= {new}" if old == new else f"{old} → {new}"


def _file_variant_rows(base: Report, head: Report) -> list[list[str]]:
    b, h = _keyed(base.pipeline, ["file", "variant"]), _keyed(head.pipeline, ["file", "variant"])
    rows = []
    for key in [k for k in h if k in b]:
        old, new = b[key], h[key]

        def worst(report: Report) -> str:
            layers = report.layers
            own = layers[(layers["file"].astype(str) == key[0]) & (layers["variant"].astype(str) == key[1])]
            return _sci(own["rel_l2"].max()) if len(own) else DASH

        def peak(report: Report) -> str:
            t = report.timing
            row = t[(t["file"].astype(str) == key[0]) & (t["variant"].astype(str) == key[1]) & (t["stage"] == "total")]
            return f"{float(row['peak_rss_mb'].iloc[0]):.0f}" if len(row) and not _na(row["peak_rss_mb"].iloc[0]) else DASH

        size = (lambda r: DASH if _na(r.get("size_mb")) else f"{float(r['size_mb']):.1f}")
        rows.append([key[0], key[1], _arrow(_pct(old.get("der_vs_pyannote")), _pct(new.get("der_vs_pyannote"))),
                     _arrow(worst(base), worst(head)),
                     _arrow(_cos(old.get("embedding_min_cosine")), _cos(new.get("embedding_min_cosine"))),
                     _arrow(_int(old.get("speakers")), _int(new.get("speakers"))),
                     _arrow(size(old), size(new)), _arrow(peak(base), peak(head))])
    return rows


def _timing(base: Report, head: Report, factor: float, max_slowdown: float
            ) -> tuple[list[tuple[tuple[str, str, str], SpeedChange, bool]], list[str], list[str]]:
    keys = [tuple(str(v) for v in k) for k in head.timing[["file", "variant", "stage"]].drop_duplicates().to_numpy()]
    known = {tuple(str(v) for v in k) for k in base.timing[["file", "variant", "stage"]].to_numpy()}
    sides = dict(zip(head.timing["variant"].astype(str), head.timing["side"].astype(str)))
    out, slowdowns, notes = [], [], []
    for key in (k for k in keys if k in known):
        (b, b_cached), (h, h_cached) = _samples(base, key), _samples(head, key)
        if (b_cached or h_cached) and np.array_equal(b, h):  # one measurement, reused from the reference cache
            change = SpeedChange(float(np.median(b)), float(np.median(h)), b.size, h.size, ratio=1.0,
                                 verdict=f"same cached run ({b_cached or h_cached})")
        else:
            change = speed_change(b, h, factor)
        gated = sides.get(key[1]) == "mlx" and max(change.base, change.head) >= GATED_SECONDS
        if gated and change.verdict == "slower" and change.ratio > max_slowdown:
            slowdowns.append(f"{key[0]} {key[1]} {key[2]}: {change.ratio:.2f}x slower "
                             f"(95 % CI {change.low:.2f}-{change.high:.2f}, p {change.p:.3g}) > --max-slowdown "
                             f"{max_slowdown:g}")
        out.append((key, change, gated))
    if any(c.verdict.startswith("too few") for _, c, _ in out):
        notes.append(f"Speed verdicts need {MIN_REPEATS} timed runs per side (`harness compare --repeat "
                     f"{MIN_REPEATS}`); rows with fewer say so and claim nothing.")
    if base.meta.get("pyannote_loaded") != head.meta.get("pyannote_loaded"):
        notes.append("pyannote was resident in one run only (a fresh reference run in one, cached in the other): "
                     "peak memory is not comparable.")
    return out, slowdowns, notes


def diff_reports(base: Report, head: Report, factor: float = FACTOR, max_slowdown: float = MAX_SLOWDOWN) -> Diff:
    """Compare two reports (see the module's docstring)."""
    parity, failing, added, removed = _parity(base, head)
    timing, slowdowns, notes = _timing(base, head, factor, max_slowdown)
    return Diff(base=base, head=head, parity=parity, newly_failing=failing, layers=_layer_changes(base, head),
                added=added, removed=removed, rows=_file_variant_rows(base, head), timing=timing,
                slowdowns=slowdowns, notes=notes)


# ---------------------------------------------------------------------------------------------- output
def headline(d: Diff) -> str:
    counts = {}
    for _, change, _ in d.timing:
        word = change.verdict.split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    speed = ", ".join(f"{n} {word}" for word, n in sorted(counts.items())) or "no timing rows in common"
    status = "FAIL" if d.exit_status else "OK"
    reasons = ([f"{len(d.newly_failing)} parity target(s) newly missed"] if d.newly_failing else []) + (
        [f"{len(d.slowdowns)} slowdown(s) beyond --max-slowdown"] if d.slowdowns else [])
    return (f"{status}: {len(d.parity)} parity change(s), {len(d.layers)} layer error change(s) > {LAYER_FACTOR:g}x; "
            f"timing rows: {speed}" + (f" ({'; '.join(reasons)})" if reasons else ""))


def _timing_cells(key: tuple[str, str, str], change: SpeedChange, gated: bool) -> list[str]:
    ci = DASH if math.isnan(change.low) else f"{change.low:.2f}-{change.high:.2f}"
    return [*key, f"{change.base:.3f}", f"{change.head:.3f}",
            DASH if math.isnan(change.ratio) else f"{change.ratio:.2f}x", ci,
            DASH if math.isnan(change.p) else f"{change.p:.3g}", f"{change.n_base}/{change.n_head}",
            change.verdict + (" (not gated: under 10 ms)" if key[1] != "pyannote" and not gated else "")]


TIMING_HEADER = ["file", "variant", "stage", "base s (median)", "head s (median)", "head / base",
                 "95 % CI", "p (Mann-Whitney)", "runs", "verdict"]
LAYER_HEADER = ["file", "variant", "layer", "rel L2 base → head", "change", "target now"]
ROW_HEADER = ["file", "variant", "DER vs pyannote", "worst layer rel L2", "emb. cosine (min)", "speakers",
              "size MB", "peak RSS MB"]


def sections(d: Diff) -> list[tuple[str, list[str] | tuple[list[str], list[list[str]]]]]:
    """The diff as (title, list items or (header, rows)) in reading order; both outputs render these."""
    timing = sorted(d.timing, key=lambda t: (t[1].verdict not in ("slower", "faster"), t[0]))
    parity = [f"❌ {p}" if p in d.newly_failing else p for p in d.parity]
    parity += [f"❌ {f}" for f in d.newly_failing if f not in d.parity]  # new rows that fail
    return [
        ("Parity changes (never noise; ❌ newly failing)", parity or ["none: every DER, speaker count and decision "
                                                                    "is unchanged"]),
        *([("Slowdowns beyond --max-slowdown", d.slowdowns)] if d.slowdowns else []),
        (f"Layer errors that moved more than {LAYER_FACTOR:g}x", (LAYER_HEADER, d.layers) if d.layers else ["none"]),
        ("Rows added or removed", [f"added: {r}" for r in d.added] + [f"removed: {r}" for r in d.removed] or ["none"]),
        ("Per file and variant (base → head)", (ROW_HEADER, d.rows)),
        ("Time per stage (changes first)", (TIMING_HEADER, [_timing_cells(*t) for t in timing])),
        *([("Notes", d.notes)] if d.notes else []),
    ]


def _title(d: Diff) -> str:
    return f"harness diff: {d.base.label} → {d.head.label}"


def markdown(d: Diff) -> str:
    lines = [f"## {'❌' if d.exit_status else '✅'} {_md(headline(d))}", "",
             f"_{_md(_title(d))}; speed verdict: Mann-Whitney U p < {ALPHA:g}, 95 % bootstrap CI of the ratio of "
             f"medians excluding 1 and a change of at least {(FACTOR - 1):.0%}_", ""]
    for title, content in sections(d):
        lines.append(f"### {title}")
        if isinstance(content, tuple):
            header, rows = content
            lines += _md_table(header, [[_md(c) for c in row] for row in rows])
        else:
            lines += [f"- {_md(item)}" for item in content]
        lines.append("")
    return "\n".join(lines)


def html_page(d: Diff) -> str:
    def cell(text: str) -> str:
        cls = ' class="bad"' if text.startswith(("slower", "MISSED")) else ' class="ok"' if text.startswith("faster") else ""
        return f"<td{cls}>{_e(text)}</td>"

    body = [f"<h1>{_e(_title(d))}</h1>",
            f'<div class="verdict {"fail" if d.exit_status else "pass"}" id="verdict">{_e(headline(d))}</div>']
    for title, content in sections(d):
        body.append(f"<h2>{_e(title)}</h2>")
        if isinstance(content, tuple):
            header, rows = content
            body.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in header)
                        + "</tr></thead><tbody>" + "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>"
                                                           for row in rows) + "</tbody></table></div>")
        else:
            body.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in content) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(_title(d))}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_diff(d: Diff, out: Path) -> dict[str, Path]:
    """diff.md and diff.html into `out`, each atomically."""
    return {name: atomic_write(out / name, text) for name, text in (("diff.md", markdown(d)),
                                                                     ("diff.html", html_page(d)))}


# ---------------------------------------------------------------------------------------------- revisions
def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def is_revision(name: str) -> bool:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def build_report(revision: str, compare_args: list[str], out: Path, work: Path) -> Path:
    """`harness compare COMPARE_ARGS --out OUT` run in a temporary `git worktree` of `revision`; returns OUT."""
    tree = work / f"tree-{len(list(work.iterdir()))}"
    added = _git("worktree", "add", "--detach", str(tree), revision)
    if added.returncode != 0:
        raise OptionError(f"{revision}: git worktree add failed: {added.stderr.strip()[-300:]}")
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "harness", "compare", *compare_args, "--out", str(out.resolve())]
        print(f"harness diff: {revision}: {shlex.join(command[1:])}", file=sys.stderr, flush=True)
        done = subprocess.run(command, cwd=tree, env=env)
        if not (out / "pipeline.csv").is_file():
            raise OptionError(f"{revision}: harness compare wrote no report (exit status {done.returncode})")
    finally:
        _git("worktree", "remove", "--force", str(tree))
    return out


def resolve(name: str, role: str, compare_args: list[str], out: Path, work: Path) -> Report:
    """`name` as a report: a report directory as it is, a git revision built into OUT/ROLE."""
    path = Path(name)
    if path.is_dir():
        return read_report(path)
    if not is_revision(name):
        raise OptionError(f"{name}: neither a report directory nor a git revision")
    return read_report(build_report(name, compare_args, out / role, work), label=f"{name} ({role})")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness diff", description=__doc__.split("\n")[0])
    parser.add_argument("base", help="report directory of `harness compare`, or a git revision to build one from")
    parser.add_argument("head", help="report directory, or a git revision")
    parser.add_argument("--out", type=Path, default=None, help="folder for diff.md and diff.html "
                                                               "(default reports/diff-<UTC time>)")
    parser.add_argument("--compare-args", default=DEFAULT_COMPARE_ARGS,
                        help=f"arguments of `harness compare` for a revision (default: {DEFAULT_COMPARE_ARGS!r})")
    parser.add_argument("--factor", type=float, default=FACTOR,
                        help=f"smallest ratio of medians called faster/slower (default {FACTOR})")
    parser.add_argument("--max-slowdown", type=float, default=MAX_SLOWDOWN,
                        help=f"exit 1 when an MLX stage is significantly slower by more than this "
                             f"(default {MAX_SLOWDOWN}; inf: never)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        if not args.factor >= 1 or not args.max_slowdown >= 1:
            raise OptionError("--factor and --max-slowdown are ratios of at least 1")
        out = args.out or Path("reports") / f"diff-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
        writable_dir(out, f"--out {out}", "the diff ")
        compare_args = shlex.split(args.compare_args)
        with tempfile.TemporaryDirectory(prefix="mlx-diar-diff-") as tmp:
            base = resolve(args.base, "base", compare_args, out, Path(tmp))
            head = resolve(args.head, "head", compare_args, out, Path(tmp))
        d = diff_reports(base, head, args.factor, args.max_slowdown)
        paths = write_diff(d, out)
    except MlxDiarError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(headline(d))
    for line in d.newly_failing + d.slowdowns:
        print(f"  {line}")
    print(paths["diff.md"])
    return d.exit_status
