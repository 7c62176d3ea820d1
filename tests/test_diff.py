"""`python -m harness diff`: parity changes first and never noise, speed verdicts from repeated runs
(Mann-Whitney U and a bootstrap CI), rows added or removed, exit status, escaped offline HTML, git revisions."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import diff
from harness.report import _md
from harness.compare import stage_runs, timing_summary
from harness.rows import LayerRow, PipelineRow, TimingRun, to_frame

EVIL = "<b>talk</b> & co"
STAGES = {"segmentation": 1.2, "speaker_counting": 0.001, "embeddings": 12.0, "clustering": 0.02,
          "reconstruction": 0.01, "total": 13.3}


def _pipeline(file: str, variant: str, der: float = 0.0, passed: bool | None = True, speakers: int = 2) -> PipelineRow:
    return PipelineRow(file=file, variant=variant, side="mlx", duration_s=30.0, speakers=speakers, pyannote_speakers=2,
                       size_mb=33.0, der_vs_pyannote=der, embedding_min_cosine=0.9999999, target="DER = 0",
                       passed=passed)


def _layer(file: str, variant: str, rel_l2: float, passed: bool | None = True) -> LayerRow:
    return LayerRow(file=file, variant=variant, dtype="float32", quantize="", model="segmentation", layer="lstm.1",
                    depth=3, shape="(1, 589, 256)", rel_l2=rel_l2, max_abs_err=rel_l2, cosine=1.0, passed=passed)


def _runs(file: str, variant: str, seconds: dict[str, float], repeats: int, seed: int,
          noise: float = 0.03) -> list[TimingRun]:
    """`repeats` timed runs whose stage times scatter by `noise` (relative) around `seconds`."""
    rng = np.random.default_rng(seed)
    side = "pyannote" if variant == "pyannote" else "mlx"
    return [run for r in range(repeats) for run in stage_runs(
        file, variant, side, {s: t * (1 + noise * rng.standard_normal()) for s, t in seconds.items()}, 900.0, r)]


def _write(folder: Path, pipeline: list[PipelineRow], layers: list[LayerRow], runs: list[TimingRun],
           passed: bool = True, old_format: bool = False) -> Path:
    """A report directory as `harness compare` writes it (`old_format`: before --repeat, no timing_runs.csv)."""
    folder.mkdir(parents=True)
    files = dict.fromkeys(run.file for run in runs)
    timing = [row for f in files for row in timing_summary([r for r in runs if r.file == f], 30.0, 1)]
    frames = {"pipeline.csv": to_frame(pipeline, PipelineRow), "layers.csv": to_frame(layers, LayerRow),
              "timing.csv": to_frame(timing, type(timing[0]))}
    if old_format:
        frames["timing.csv"] = frames["timing.csv"].drop(columns=["repeats", "cached"])
    else:
        frames["timing_runs.csv"] = to_frame(runs, TimingRun)
    for name, frame in frames.items():
        frame.to_csv(folder / name, index=False)
    (folder / "meta.json").write_text(json.dumps({"verdict": {"passed": passed, "text": "PASS" if passed else "FAIL"},
                                                  "pyannote_loaded": False}))
    return folder


def _base(tmp_path: Path, repeats: int = 5, **kw) -> Path:
    runs = _runs(EVIL, "pyannote", {s: 4 * t for s, t in STAGES.items()}, 1, 0)
    runs += [run for k, v in enumerate(("float32", "bfloat16")) for run in _runs(EVIL, v, STAGES, repeats, 1 + k)]
    pipeline = [PipelineRow(file=EVIL, variant="pyannote", side="pyannote", duration_s=30.0, speakers=2),
                _pipeline(EVIL, "float32"), _pipeline(EVIL, "bfloat16", der=0.0007, passed=True),
                _pipeline("gone", "float32")]
    layers = [_layer(EVIL, "float32", 2e-6), _layer(EVIL, "bfloat16", 1e-2, passed=None)]
    return _write(tmp_path / "base", pipeline, layers, runs + _runs("gone", "float32", STAGES, repeats, 9), **kw)


def _head(tmp_path: Path, slower: float = 1.0, der: float = 0.0, passed: bool = True, repeats: int = 5) -> Path:
    """float32's embeddings (and so its total) `slower` times slower, its DER `der`; bfloat16 unchanged but
    remeasured; file "gone" dropped and a float16 variant added."""
    runs = _runs(EVIL, "pyannote", {s: 4 * t for s, t in STAGES.items()}, 1, 0)  # the same cached-like run
    slow = {**STAGES, "embeddings": STAGES["embeddings"] * slower,
            "total": STAGES["total"] + STAGES["embeddings"] * (slower - 1)}
    runs += _runs(EVIL, "float32", slow, repeats, 11) + _runs(EVIL, "bfloat16", STAGES, repeats, 12)
    runs += _runs(EVIL, "float16", STAGES, repeats, 13)
    pipeline = [PipelineRow(file=EVIL, variant="pyannote", side="pyannote", duration_s=30.0, speakers=2),
                _pipeline(EVIL, "float32", der=der, passed=passed), _pipeline(EVIL, "bfloat16", der=0.0007),
                _pipeline(EVIL, "float16", der=0.0002)]
    layers = [_layer(EVIL, "float32", 2e-6 if not der else 3e-3, passed=passed), _layer(EVIL, "bfloat16", 1.1e-2, None)]
    return _write(tmp_path / "head", pipeline, layers, runs, passed=passed)


def test_speed_change_verdicts() -> None:
    rng = np.random.default_rng(0)
    base = 10 + 0.3 * rng.standard_normal(5)
    slower = diff.speed_change(base, 13 + 0.3 * rng.standard_normal(5))
    assert slower.verdict == "slower" and 1.2 < slower.ratio < 1.4 and slower.low > 1 and slower.p < 0.05
    assert diff.speed_change(base, 7 + 0.3 * rng.standard_normal(5)).verdict == "faster"
    assert diff.speed_change(base, 10 + 0.3 * rng.standard_normal(5)).verdict == "not significant"
    small = diff.speed_change(base, base * 1.05)  # every run slower, but by less than --factor
    assert small.p < 0.05 and small.verdict == "not significant"
    assert diff.speed_change(base, base * 1.05, factor=1.02).verdict == "slower"
    few = diff.speed_change(base[:4], base[:4] * 2)
    assert few.verdict == "too few repeats (n=4/4; need 5)" and np.isnan(few.p)


def test_a_slowdown_is_flagged_and_the_noise_is_not(tmp_path: Path) -> None:
    d = diff.diff_reports(diff.read_report(_base(tmp_path)), diff.read_report(_head(tmp_path, slower=1.5)))
    verdicts = {key: change.verdict for key, change, _ in d.timing}
    assert verdicts[EVIL, "float32", "embeddings"] == "slower" and verdicts[EVIL, "float32", "total"] == "slower"
    assert all(v == "not significant" for (f, v_, s), v in verdicts.items() if v_ == "bfloat16" and s != "speaker_counting")
    assert verdicts[EVIL, "pyannote", "total"].startswith("same cached run") is False  # measured, not cached
    assert d.exit_status == 1 and len(d.slowdowns) == 2
    assert re.search(r"float32 embeddings: 1\.[45]\dx slower \(95 % CI 1\.\d\d-1\.\d\d, p 0\.00794\)", d.slowdowns[0])
    assert not d.parity and not d.newly_failing
    assert d.added == [f"{EVIL} float16"] and d.removed == ["gone float32"]
    relaxed = diff.diff_reports(diff.read_report(tmp_path / "base"), diff.read_report(tmp_path / "head"),
                                max_slowdown=float("inf"))
    assert relaxed.exit_status == 0 and not relaxed.slowdowns


def test_parity_changes_come_first_and_a_new_failure_fails(tmp_path: Path) -> None:
    d = diff.diff_reports(diff.read_report(_base(tmp_path)),
                          diff.read_report(_head(tmp_path, der=0.012, passed=False)))
    assert d.parity[0] == "verdict PASS → FAIL"
    assert d.parity[1].startswith(f"{EVIL} float32: pipeline target met → MISSED")
    assert any(p.startswith(f"{EVIL} float32 layer segmentation/lstm.1: target met → MISSED") for p in d.parity)
    assert f"{EVIL} float32: der vs pyannote 0.00 % → 1.20 %" in d.parity
    assert d.exit_status == 1 and len(d.newly_failing) == 3
    assert d.layers[0][2] == "segmentation/lstm.1" and d.layers[0][3] == "2.0e-06 → 3.0e-03"
    text = diff.markdown(d)
    order = [text.index(h) for h in ("### Parity changes", "### Layer errors", "### Rows added or removed",
                                     "### Per file and variant", "### Time per stage")]
    assert order == sorted(order) and text.startswith("## ❌ FAIL: 4 parity change(s)")
    listed = text[order[0]:order[1]].splitlines()
    assert listed[1:5] == ["- ❌ verdict PASS → FAIL", f"- ❌ {_md(d.parity[1])}", f"- ❌ {_md(d.parity[2])}",
                           f"- {_md(d.parity[3])}"]  # the DER change: listed, not a failure by itself


def test_no_change_is_ok_and_too_few_repeats_claims_nothing(tmp_path: Path) -> None:
    base = _base(tmp_path, repeats=1, old_format=True)  # a report written before --repeat
    d = diff.diff_reports(diff.read_report(base), diff.read_report(_head(tmp_path, slower=3.0, repeats=1)))
    assert d.exit_status == 0 and not d.parity
    assert {c.verdict for _, c, _ in d.timing} == {"too few repeats (n=1/1; need 5)"}
    assert any("--repeat 5" in note for note in d.notes)


def test_a_pyannote_run_from_the_same_cache_entry_is_not_compared(tmp_path: Path) -> None:
    runs = _runs("a", "pyannote", STAGES, 1, 0)
    for run in runs:
        run.cached = "2026-01-01T00:00:00+00:00"
    pipeline = [PipelineRow(file="a", variant="pyannote", side="pyannote", duration_s=30.0, speakers=2)]
    base, head = (_write(tmp_path / name, pipeline, [], runs) for name in ("b", "h"))
    d = diff.diff_reports(diff.read_report(base), diff.read_report(head))
    assert {c.verdict for _, c, _ in d.timing} == {"same cached run (2026-01-01T00:00:00+00:00)"}


def test_cli_writes_escaped_offline_html_and_markdown(tmp_path: Path, capsys) -> None:
    base, head = _base(tmp_path), _head(tmp_path, slower=1.5)
    assert diff.main([str(base), str(head), "--out", str(tmp_path / "d")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 0 parity change(s)") and "beyond --max-slowdown" in out
    page = (tmp_path / "d" / "diff.html").read_text(encoding="utf-8")
    assert EVIL not in page and "<b>talk" not in page and "&lt;b&gt;talk&lt;/b&gt; &amp; co" in page
    assert not re.search(r"<script|https?://|url\(|@import", page, re.I)
    assert '<td class="bad">slower</td>' in page and 'class="verdict fail"' in page
    md = (tmp_path / "d" / "diff.md").read_text(encoding="utf-8")
    assert "<b>" not in md and "| &lt;b&gt;talk&lt;/b&gt; &amp; co | float32 | embeddings |" in md
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["diff.html", "diff.md"]
    assert diff.main([str(base), str(head), "--out", str(tmp_path / "d2"), "--max-slowdown", "inf"]) == 0


@pytest.mark.parametrize("argv, problem", [
    (["{tmp}/nowhere", "{tmp}/base"], "nowhere: neither a report directory nor a git revision"),
    (["{tmp}", "{tmp}/base"], "not a report directory of `harness compare` (no pipeline.csv)"),
    (["{tmp}/base", "{tmp}/base", "--max-slowdown", "0.5"], "--factor and --max-slowdown are ratios of at least 1"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys, argv: list[str], problem: str) -> None:
    _base(tmp_path)
    assert diff.main([a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and problem in err[0]


FAKE_COMPARE = '''"""A stand-in for `harness compare` at a revision: writes a report whose DER is this revision's."""
import sys
from pathlib import Path

out = Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
der = Path(__file__).with_name("der.txt").read_text().strip()
(out / "pipeline.csv").write_text("file,variant,side,duration_s,der_vs_pyannote,passed\\n"
                                  f"a,float32,mlx,1.0,{der},True\\n")
(out / "layers.csv").write_text("file,variant,model,layer,rel_l2,passed\\n")
(out / "timing.csv").write_text("file,variant,side,stage,seconds,peak_rss_mb\\na,float32,mlx,total,1.0,9\\n")
(out / "args.txt").write_text(" ".join(sys.argv[1:]))
'''


def test_two_git_revisions_are_built_in_worktrees(tmp_path: Path, monkeypatch) -> None:
    """Each revision's own `python -m harness compare` runs in a temporary worktree, with the same arguments."""
    repo = tmp_path / "repo"
    (repo / "harness").mkdir(parents=True)
    (repo / "harness" / "__init__.py").write_text("")
    (repo / "harness" / "__main__.py").write_text(FAKE_COMPARE)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    for der in ("0.0", "0.02"):
        (repo / "harness" / "der.txt").write_text(der)
        git("add", "-A")
        git("commit", "-qm", f"der {der}")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    out = tmp_path / "d"
    code = diff.main(["HEAD~1", "HEAD", "--out", str(out), "--compare-args", "--variant float32 --repeat 5"])
    assert code == 0  # no target newly missed (passed stays True), but the DER change is listed first
    md = (out / "diff.md").read_text()
    assert "a float32: der vs pyannote 0.00 % → 2.00 %" in md and "HEAD~1 (base) → HEAD (head)" in md
    assert (out / "base" / "args.txt").read_text() == f"compare --variant float32 --repeat 5 --out {out / 'base'}"
    assert git("worktree", "list").count("\n") == 0  # the temporary worktrees are gone
