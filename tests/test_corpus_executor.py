"""The corpus executor (mlx_diar.runtime.executor): backends, per-recording commits, resume, fault isolation.

The mechanics run on a cheap task (reads the audio, optionally waits or crashes its worker); the
real MLX diarization of a synthetic corpus runs in a process pool and on a local Ray cluster of
two simulated nodes, and must give the same RTTMs as in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_diar.runtime.corpus import CorpusEntry, from_dataset
from mlx_diar.runtime.executor import RecordingTask, load_records, run_corpus


class ReadTask(RecordingTask):
    """Reads the audio (a NaN sample fails it); `crash` kills the worker process on that uri."""

    def __init__(self, delay: float = 0.0, crash: str | None = None, version: str = "1") -> None:
        self.delay, self.crash, self.fingerprint = delay, crash, f"read-{version}"
        self.threads = None

    def setup(self, threads: int | None) -> None:
        self.threads = threads

    def __call__(self, entry: CorpusEntry) -> dict:
        from mlx_diar.runtime.audio import load_audio

        if entry.uri == self.crash:
            os._exit(3)
        waveform = load_audio(entry.audio)
        time.sleep(self.delay)
        return {"duration_s": len(waveform) / 16000, "threads": self.threads,
                "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                "files": {f"out/{entry.uri}.txt": f"{entry.uri} {len(waveform)}\n"}}


def tone_corpus(folder: Path, count: int, poison: str | None = None) -> list[CorpusEntry]:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        x = np.sin(np.arange(16000 + 1600 * k) * 0.05).astype(np.float32)
        if f"f{k}" == poison:
            x[100] = np.nan
        sf.write(folder / f"f{k}.wav", x, 16000, subtype="FLOAT")
    return from_dataset(folder)


def test_in_process_commits_each_recording_and_isolates_a_poisoned_one(tmp_path: Path) -> None:
    entries = tone_corpus(tmp_path / "audio", 4, poison="f2")
    summary = run_corpus(ReadTask(), entries, tmp_path / "out", workers=1, progress=False)
    assert (summary.done, summary.failed, summary.skipped, summary.backend) == (3, 1, 0, "in-process")
    records = load_records(tmp_path / "out")
    assert records["f2"]["status"] == "failed" and "NaN" in records["f2"]["error"]
    assert "\n" not in records["f2"]["error"]
    assert records["f1"]["status"] == "done" and records["f1"]["files"] == ["out/f1.txt"]
    assert (tmp_path / "out" / "out" / "f1.txt").read_text() == "f1 17600\n"
    assert summary.audio_s == pytest.approx((16000 + 17600 + 20800) / 16000)


def test_rerun_skips_finished_retries_failed_and_redoes_on_a_new_fingerprint(tmp_path: Path) -> None:
    entries = tone_corpus(tmp_path / "audio", 3, poison="f1")
    out = tmp_path / "out"
    run_corpus(ReadTask(), entries, out, workers=1, progress=False)
    first = load_records(out)
    again = run_corpus(ReadTask(), entries, out, workers=1, progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 1, 2)  # the failed one is tried again
    assert load_records(out)["f0"]["finished"] == first["f0"]["finished"]
    assert run_corpus(ReadTask(), entries, out, workers=1, progress=False, redo=True).skipped == 0
    changed = run_corpus(ReadTask(version="2"), entries, out, workers=1, progress=False)
    assert (changed.done, changed.skipped) == (2, 0)
    assert {r["fingerprint"] for r in load_records(out).values()} == {"read-2"}


def test_pool_splits_threads_and_survives_a_dead_worker(tmp_path: Path) -> None:
    entries = tone_corpus(tmp_path / "audio", 6)
    summary = run_corpus(ReadTask(delay=0.2, crash="f3"), entries, tmp_path / "out", workers=2, threads=1,
                         progress=False)
    assert (summary.backend, summary.workers, summary.done, summary.failed) == ("process pool", 2, 5, 1)
    records = load_records(tmp_path / "out")
    assert records["f3"]["error"] == "worker process died (exit code 3)"
    done = [r for r in records.values() if r["status"] == "done"]
    assert {r["result"]["threads"] for r in done} == {1}
    assert {r["result"]["blas_threads"] for r in done} == {"1"}  # set before the worker imported anything
    assert len({r["worker"] for r in done}) >= 2  # two workers, and a replacement for the dead one


# Ctrl-C as in a terminal: a test runner started in the background by a non-interactive shell
# passes SIGINT on ignored, and Python then installs no KeyboardInterrupt handler in the driver
RUN_SCRIPT = """
import signal
import sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
from mlx_diar.runtime.corpus import from_dataset
from mlx_diar.runtime.executor import run_corpus
from tests.test_corpus_executor import ReadTask
summary = run_corpus(ReadTask(delay=float(sys.argv[3])), from_dataset(sys.argv[1]), sys.argv[2],
                     workers=int(sys.argv[4]), progress=False)
sys.exit(summary.exit_status)
"""


def start_and_stop(audio: Path, out: Path, stop: signal.Signals, workers: int) -> tuple[int, dict]:
    """Run the corpus in a subprocess (1 s per recording), send `stop` once 2 records exist: (exit status, records)."""
    command = [sys.executable, "-c", RUN_SCRIPT, str(audio), str(out), "1.0", str(workers)]
    process = subprocess.Popen(command, cwd=Path(__file__).parents[1], env=os.environ.copy())
    deadline = time.monotonic() + 120
    while len(load_records(out)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(stop)
    return process.wait(), load_records(out)


@pytest.mark.parametrize("stop, workers, status", [(signal.SIGKILL, 1, -9), (signal.SIGINT, 2, 130)],
                         ids=["killed", "ctrl-c-pool"])
def test_a_stopped_run_resumes_without_redoing_finished_recordings(tmp_path: Path, stop, workers: int,
                                                                   status: int) -> None:
    tone_corpus(tmp_path / "audio", 8)
    out = tmp_path / "out"
    code, before = start_and_stop(tmp_path / "audio", out, stop, workers)
    assert code == status
    assert 2 <= len(before) < 8, "the run was not stopped mid-way"
    rerun = [sys.executable, "-c", RUN_SCRIPT, str(tmp_path / "audio"), str(out), "0", "1"]
    assert subprocess.run(rerun, cwd=Path(__file__).parents[1], env=os.environ.copy()).returncode == 0
    after = load_records(out)
    assert len(after) == 8 and all(r["status"] == "done" for r in after.values())
    for uri, record in before.items():
        assert after[uri]["finished"] == record["finished"] and after[uri]["worker"] == record["worker"]
    assert {r["worker"] for r in after.values()} - {r["worker"] for r in before.values()}  # the rest: rerun


# ---------------------------------------------------------------------------------------------- MLX diarization
@pytest.fixture(scope="module")
def synth_corpus(tmp_path_factory) -> list[CorpusEntry]:
    """12 synthetic two-speaker conversations (5-9 s: one segmentation chunk each) and one poisoned file."""
    from harness.corpus import make_corpus

    folder = tmp_path_factory.mktemp("synth")
    paths = make_corpus(folder, 12, speakers=(2,))
    x, sr = sf.read(paths[0], dtype="float32")
    x[sr] = np.nan
    sf.write(folder / "poisoned.wav", x, sr, subtype="FLOAT")
    return from_dataset(folder)


def rttms(out: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(out.glob("*.rttm"))}


@pytest.fixture(scope="module")
def pool_run(mlx_model_dir: Path, synth_corpus, tmp_path_factory) -> Path:
    """The corpus diarized by a pool of two single-threaded worker processes."""
    from mlx_diar.runtime.executor import DiarizeTask

    out = tmp_path_factory.mktemp("pool")
    summary = run_corpus(DiarizeTask(mlx_model_dir), synth_corpus, out, workers=2, threads=1, progress=False)
    assert (summary.backend, summary.workers, summary.done, summary.failed) == ("process pool", 2, 12, 1)
    return out


def test_process_pool_diarizes_the_corpus_and_isolates_the_poisoned_file(pool_run: Path, synth_corpus) -> None:
    from harness.metrics import load_rttm

    records = load_records(pool_run)
    assert "NaN" in records["poisoned"]["error"] and "\n" not in records["poisoned"]["error"]
    assert len({r["worker"] for r in records.values() if r["status"] == "done"}) == 2
    found = rttms(pool_run)
    assert sorted(found) == sorted(e.uri for e in synth_corpus if e.uri != "poisoned")
    for entry in synth_corpus:
        if entry.uri != "poisoned":  # every conversation has two voices; the fixture system finds speech
            assert len(load_rttm(pool_run / f"{entry.uri}.rttm")[entry.uri].labels()) >= 1


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two simulated nodes with one CPU each."""
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason='Ray is the "cluster" extra')
    cluster = cluster_utils.Cluster(initialize_head=True,
                                    head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20})
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    yield cluster
    cluster.shutdown()


def test_ray_cluster_diarizes_the_corpus_like_the_pool(ray_cluster, mlx_model_dir, synth_corpus, pool_run,
                                                      tmp_path: Path) -> None:
    """Same single-threaded workers, same RTTMs, byte for byte; the poisoned file fails alone."""
    from mlx_diar.runtime.executor import DiarizeTask

    summary = run_corpus(DiarizeTask(mlx_model_dir), synth_corpus, tmp_path, ray=ray_cluster.address,
                         progress=False)
    assert (summary.backend, summary.workers, summary.done, summary.failed) == ("ray", 2, 12, 1)
    records = load_records(tmp_path)
    assert "NaN" in records["poisoned"]["error"]
    assert len({r["worker"] for r in records.values() if r["status"] == "done"}) == 2  # one actor per node
    assert rttms(tmp_path) == rttms(pool_run)


def test_corpus_throughput_one_vs_two_workers(benchmark, mlx_model_dir, synth_corpus, tmp_path: Path) -> None:
    """Audio hours per hour of MLX diarization with 1 and 2 workers (models loaded once per worker, included)."""
    from mlx_diar.runtime.executor import DiarizeTask

    entries = [e for e in synth_corpus if e.uri != "poisoned"]
    one = run_corpus(DiarizeTask(mlx_model_dir), entries, tmp_path / "one", workers=1, progress=False)
    two = benchmark.pedantic(run_corpus, args=(DiarizeTask(mlx_model_dir), entries, tmp_path / "two"),
                             kwargs={"workers": 2, "progress": False}, rounds=1, iterations=1)
    throughput = {n: s.audio_s / s.wall_s for n, s in ((1, one), (2, two))}
    benchmark.extra_info.update({"audio_h_per_h_1_worker": round(throughput[1], 2),
                                 "audio_h_per_h_2_workers": round(throughput[2], 2),
                                 "speedup_2_vs_1": round(throughput[2] / throughput[1], 3)})
    print(f"\n1 worker: {one.line()}\n2 workers: {two.line()}\nspeed-up {throughput[2] / throughput[1]:.2f}x")
    assert one.done == two.done == len(entries)


def test_diarize_cli_runs_a_dataset_and_resumes(mlx_model_dir, synth_corpus, tmp_path: Path, capsys) -> None:
    """`python -m mlx_diar diarize --dataset`: RTTMs and records under --rttm-dir; exit status = failed count."""
    import shutil

    from mlx_diar.__main__ import main

    folder = tmp_path / "three"
    folder.mkdir()
    clean = [e for e in synth_corpus if e.uri != "poisoned"][:2]
    for entry in clean + [e for e in synth_corpus if e.uri == "poisoned"]:
        shutil.copy(entry.audio, folder)
    argv = ["diarize", "--dataset", str(folder), "--model", str(mlx_model_dir), "--rttm-dir", str(tmp_path / "out"),
            "--workers", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 done, 0 skipped (finished before), 1 failed" in err and "error: 1 of 3 recordings failed" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.rttm")) == [f"{e.uri}.rttm" for e in clean]
    assert main(argv) == 1
    assert "0 done, 2 skipped (finished before), 1 failed" in capsys.readouterr().err
    assert main(argv[:-2] + ["--workers", "1", "--rttm", str(tmp_path / "all.rttm")]) == 1
    assert "give --rttm-dir DIR (and no --rttm)" in capsys.readouterr().err
