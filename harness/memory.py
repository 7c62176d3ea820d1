"""Peak resident memory: of a block of code (`PeakRSS`), and of the MLX pipeline alone on long files (`memory_curve`)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlx_diar.cpu.lanes import peak_rss_mb

if TYPE_CHECKING:
    import pandas as pd


def _rss_mb(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (FileNotFoundError, ProcessLookupError):  # a child that just exited
        return 0.0


def _children() -> list[int]:
    """This process's child processes (the MLX pipeline's segmentation helpers), Linux."""
    pids = []
    for path in Path("/proc/self/task").glob("*/children"):
        try:
            pids += [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:  # a thread that just ended
            continue
    return pids


def _tree_rss_mb() -> float:
    """Resident memory of this process and its children (helpers hold their own copies)."""
    return _rss_mb() + sum(_rss_mb(pid) for pid in _children())


class PeakRSS:
    """Context manager: `peak_mb` is the highest resident set size seen while inside, of this
    process and its child processes together.

    On Linux a thread samples /proc/<pid>/statm every `interval` seconds; elsewhere this
    process's lifetime maximum from getrusage is reported.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _tree_rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        if sys.platform.startswith("linux"):
            self.peak_mb = _tree_rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, _tree_rss_mb())
        else:
            self.peak_mb = peak_rss_mb()


# ------------------------------------------------------------------------------------------ curve
def long_conversation(minutes: float, seed: int = 0) -> np.ndarray:
    """`minutes` of synthetic conversation, generated cheaply: one minute of three held-out voices
    (`harness.synth.make_conversation`) tiled, each tile with its own gain (+-3 dB)."""
    from harness.synth import TEST_VOICES, make_conversation

    base, _ = make_conversation(TEST_VOICES[:3], seed=seed, duration=60.0)
    rng = np.random.default_rng(seed)
    num_samples = round(minutes * 60 * 16000)
    tiles = -(-num_samples // base.shape[0])
    gains = (10 ** (rng.uniform(-3, 3, tiles) / 20)).astype(np.float32)
    out = np.empty(tiles * base.shape[0], np.float32)
    for k, gain in enumerate(gains):
        np.multiply(base, gain, out=out[k * base.shape[0]:(k + 1) * base.shape[0]])
    return out[:num_samples]


def _child(model: str, audio: str, embedding_mode: str) -> None:
    """Run in a fresh process: the MLX pipeline on `audio`, then print its peak RSS as JSON."""
    import json

    import mlx_diar  # noqa: F401  (BLAS before mlx)
    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    baseline = peak_rss_mb()
    pipeline = SpeakerDiarizationPipeline(model_path=model, params={"embedding_mode": embedding_mode})
    loaded = peak_rss_mb()
    start = time.perf_counter()
    with PeakRSS() as together:
        output = pipeline(audio)
    seconds = time.perf_counter() - start
    lanes = pipeline.segmentation_lanes
    helpers = lanes.helper_peaks_mb() if lanes else []
    own = peak_rss_mb()
    # peak_mb: the helpers' peaks added to this process's, an upper bound (they need not coincide);
    # sampled_mb: the largest sum of their resident sizes seen every 5 ms
    print(json.dumps({"peak_mb": own + sum(helpers), "process_mb": own, "helpers_mb": helpers,
                      "sampled_mb": together.peak_mb,
                      "imports_mb": baseline, "loaded_mb": loaded, "seconds": seconds,
                      "speakers": len(output.speaker_diarization.labels()), "timings": output.timings}))


def mlx_peak_rss(model: Path, audio: Path, embedding_mode: str = "exact") -> dict:
    """Peak resident memory (MB, VmHWM on Linux) of the MLX pipeline alone on `audio`, in a subprocess."""
    import json
    import subprocess

    code = f"from harness.memory import _child; _child({str(model)!r}, {str(audio)!r}, {embedding_mode!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"MLX pipeline failed on {audio}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_curve(minutes: list[float], embedding_mode: str = "exact", workdir: Path | None = None) -> list[dict]:
    """Peak RSS of the MLX side, float32, on `minutes` of synthetic conversation each."""
    import tempfile

    import soundfile as sf

    from harness.fixtures import fixture_dir
    from mlx_diar.conversion.convert import convert_pyannote_model

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        model = convert_pyannote_model(fixture_dir(), Path(tmp) / "float32", "full", "float32")
        for m in minutes:
            wav = Path(tmp) / f"synth-{m:g}min.wav"
            sf.write(wav, long_conversation(m), 16000, subtype="FLOAT")
            rows.append({"minutes": m, "embedding_mode": embedding_mode, **mlx_peak_rss(model, wav, embedding_mode)})
            wav.unlink()
    return rows


def curve_frame(rows: list[dict]) -> pd.DataFrame:
    """`memory_curve`'s rows as a table: minutes, mode, peak MB (this process and its segmentation
    helpers), growth over the first (shortest) file, the helpers' share, MB after imports and after
    model load, MLX seconds."""
    import pandas as pd

    frame = pd.DataFrame([{**{k: row[k] for k in ("minutes", "embedding_mode", "peak_mb", "imports_mb", "loaded_mb",
                                                  "seconds")},
                           "helpers_mb": sum(row.get("helpers_mb", []))} for row in rows])
    frame.insert(3, "growth_vs_first", frame["peak_mb"] / frame["peak_mb"].iloc[0] - 1)
    return frame


def curve_table(frame: pd.DataFrame) -> str:
    """Markdown of a `curve_frame`."""
    lines = ["| minutes | mode | peak RSS MB | growth vs first | of which helper processes MB | after imports MB | "
             "after model load MB | MLX seconds |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in frame.itertuples():
        lines.append(f"| {r.minutes:g} | {r.embedding_mode} | {r.peak_mb:.0f} | {r.growth_vs_first:+.1%} | "
                     f"{r.helpers_mb:.0f} | {r.imports_mb:.0f} | {r.loaded_mb:.0f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The peak-RSS curve of the MLX pipeline alone (float32) on synthetic conversations of several lengths."""
    from mlx_diar.errors import ArgumentParser
    from mlx_diar.runtime.pipeline import EMBEDDING_MODES

    parser = ArgumentParser(prog="python -m harness memory", description=main.__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    parser.add_argument("--embedding-mode", choices=EMBEDDING_MODES, default="exact")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    table = curve_table(curve_frame(memory_curve(args.minutes, args.embedding_mode)))
    print(table)
    if args.out is not None:
        from mlx_diar.fsutil import atomic_write

        atomic_write(args.out, table + "\n")
    return 0
