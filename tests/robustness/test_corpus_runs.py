"""Corpus runs survive what a hostile corpus holds (issue 23, items 2, 4, 5, 6; manifests; protocols).

Uris too long for a file name, a symlink where a result goes, outputs that are inputs, inputs
changed or outputs deleted between runs, an unreachable Ray cluster, a manifest that never ends,
a protocol whose scored region is negative. The mechanics run on a cheap task; the command line
(`python -m mlx_diar diarize`) is driven where the refusal must come before any model is loaded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import mlx_diar.__main__ as cli
from mlx_diar.errors import OptionError
from mlx_diar.fsutil import STEM_BYTES
from mlx_diar.runtime import corpus
from mlx_diar.runtime.corpus import CorpusEntry, from_dataset, from_manifest
from mlx_diar.runtime.executor import RecordingTask, load_records, probe_ray, record_name, run_corpus

RTTM = "SPEAKER {uri} 1 0.500 1.000 <NA> <NA> A <NA> <NA>\n"


class EchoTask(RecordingTask):
    """Writes `<record name>.rttm` at the output's root (as diarize does) with the audio's length and, when
    it reads references, the reference's first line; counts the recordings it ran."""

    fingerprint = "echo-1"

    def __init__(self, reads_reference: bool = True) -> None:
        self.reads_reference = reads_reference
        self.ran: list[str] = []

    def outputs(self, entry: CorpusEntry) -> list[str]:
        return [f"{record_name(entry.uri)}.rttm"]

    def __call__(self, entry: CorpusEntry) -> dict:
        self.ran.append(entry.uri)
        reference = entry.rttm.read_text().splitlines()[0] if self.reads_reference and entry.rttm else ""
        return {"duration_s": sf.info(str(entry.audio)).duration,
                "files": {self.outputs(entry)[0]: f"{sf.info(str(entry.audio)).frames} {reference}\n"}}


def _wav(path: Path, seconds: float = 1.0, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000, subtype="FLOAT")
    return path


def _dataset(folder: Path, count: int = 3) -> list[CorpusEntry]:
    for k in range(count):
        _wav(folder / f"f{k}.wav", seed=k)
        (folder / f"f{k}.rttm").write_text(RTTM.format(uri=f"f{k}"))
        (folder / f"f{k}.uem").write_text(f"f{k} 1 0.0 1.0\n")
    return from_dataset(folder)


def _run(task: RecordingTask, entries: list[CorpusEntry], out: Path):
    return run_corpus(task, entries, out, workers=1, progress=False)


# ---------------------------------------------------------------------------------------------- names
def test_uris_too_long_for_a_file_name_get_a_short_unique_name(tmp_path) -> None:
    cjk, long_a, long_b = "会" * 28, "u" * 300, "u" * 299 + "v"  # the first is 252 bytes percent-encoded
    audio = _wav(tmp_path / "a.wav")
    manifest = tmp_path / "corpus.jsonl"
    manifest.write_text("".join(json.dumps({"audio": "a.wav", "uri": uri}) + "\n" for uri in (cjk, long_a, long_b,
                                                                                             "short")))
    entries = from_manifest(manifest)
    summary = _run(EchoTask(), entries, tmp_path / "out")
    assert (summary.done, summary.failed) == (4, 0)
    names = [p.name for p in (tmp_path / "out").iterdir() if p.is_file()]
    assert len(names) == 4 and max(len(os.fsencode(n)) for n in names) <= STEM_BYTES + len(".rttm")
    assert len({record_name(u) for u in (cjk, long_a, long_b)}) == 3  # distinct, though they share a beginning
    assert record_name(long_a) == record_name(long_a) and record_name("short") == "short"
    assert set(load_records(tmp_path / "out")) == {cjk, long_a, long_b, "short"}
    assert _run(EchoTask(), entries, tmp_path / "out").skipped == 4  # and a rerun finds them
    assert audio.is_file()


def test_a_symlink_where_a_result_goes_fails_that_recording_only(tmp_path) -> None:
    entries = _dataset(tmp_path / "data")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.txt"
    out.mkdir()
    elsewhere.write_text("keep\n")
    (out / "f1.rttm").symlink_to(elsewhere)
    for _ in range(2):  # and every rerun: that recording again, the others skipped
        summary = _run(EchoTask(), entries, out)
        assert summary.failed == 1 and summary.done + summary.skipped == 2
        record = load_records(out)["f1"]
        assert record["status"] == "failed" and "is a symlink; refusing to replace it" in record["error"]
    assert (out / "f1.rttm").is_symlink() and elsewhere.read_text() == "keep\n"


def test_audio_warnings_of_a_recording_are_one_line(tmp_path, capsys) -> None:
    from mlx_diar.runtime.audio import load_audio

    class Loads(EchoTask):
        def __call__(self, entry: CorpusEntry) -> dict:
            load_audio(entry.audio)
            return super().__call__(entry)

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    assert _run(Loads(), corpus.from_files([silent]), tmp_path / "out").done == 1
    assert capsys.readouterr().err == f"warning: {silent}: the audio is silent: no speech can be found in it\n"


# ---------------------------------------------------------------------------------------------- outputs = inputs
def test_rttm_dir_equal_to_the_dataset_is_refused_before_anything_runs(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    _dataset(data)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    assert cli.main(["diarize", "--dataset", str(data), "--model", str(tmp_path / "nomodel"),
                     "--rttm-dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {data / 'f0.rttm'}: an output of this run is also one of its inputs ({data / 'f0.wav'});"
                   " choose another output folder\n")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before and not (data / "records").exists()


def test_an_output_reaching_an_input_through_a_symlink_is_refused(tmp_path) -> None:
    entries = _dataset(tmp_path / "data", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f0.rttm").symlink_to(tmp_path / "data/f0.rttm")
    with pytest.raises(OptionError, match="an output of this run is also one of its inputs"):
        _run(EchoTask(), entries, out)
    assert (tmp_path / "data/f0.rttm").read_text() == RTTM.format(uri="f0")


def test_an_undeclared_output_that_is_an_input_fails_its_recording(tmp_path) -> None:
    class Overwriter(EchoTask):
        def outputs(self, entry: CorpusEntry) -> list[str]:
            return []  # like compare: its files are known only when the recording is done

        def __call__(self, entry: CorpusEntry) -> dict:
            return {"duration_s": 1.0, "files": {"f0.rttm": "overwritten\n"}}

    entries = _dataset(tmp_path / "data", 1)
    summary = _run(Overwriter(), entries, tmp_path / "data")
    assert summary.failed == 1 and "is also an input of this run" in load_records(tmp_path / "data")["f0"]["error"]
    assert (tmp_path / "data/f0.rttm").read_text() == RTTM.format(uri="f0")


# ---------------------------------------------------------------------------------------------- resume
def _rewrite_keeping_size_and_time(path: Path, data: bytes) -> None:
    info = path.stat()
    assert len(data) == info.st_size
    path.write_bytes(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.mark.parametrize("change", ["audio", "rttm", "uem", "deleted output", "nothing"])
def test_resume_redoes_what_changed(tmp_path, change) -> None:
    entries = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    _run(EchoTask(), entries, out)
    data = tmp_path / "data"
    if change == "audio":
        x, sr = sf.read(data / "f1.wav", dtype="float32")
        before = (data / "f1.wav").read_bytes()
        sf.write(data / "f1.wav", x[::-1].copy(), sr, subtype="FLOAT")
        _rewrite_keeping_size_and_time(data / "f1.wav", (data / "f1.wav").read_bytes())
        assert (data / "f1.wav").read_bytes() != before
    elif change == "rttm":
        _rewrite_keeping_size_and_time(data / "f1.rttm", RTTM.format(uri="f1").replace(" A ", " B ").encode())
    elif change == "uem":
        _rewrite_keeping_size_and_time(data / "f1.uem", b"f1 1 0.0 0.9\n")
    elif change == "deleted output":
        (out / "f1.rttm").unlink()
    task = EchoTask()
    summary = _run(task, entries, out)
    expected = [] if change == "nothing" else ["f1"]
    assert task.ran == expected and summary.skipped == 3 - len(expected)
    assert (out / "f1.rttm").is_file()
    if change == "rttm":
        assert " B " in (out / "f1.rttm").read_text()


def test_a_task_that_ignores_references_is_not_redone_for_them(tmp_path) -> None:
    entries = _dataset(tmp_path / "data")
    _run(EchoTask(reads_reference=False), entries, tmp_path / "out")
    (tmp_path / "data/f1.rttm").write_text(RTTM.format(uri="f1") * 2)
    task = EchoTask(reads_reference=False)
    assert _run(task, entries, tmp_path / "out").skipped == 3 and task.ran == []


# ---------------------------------------------------------------------------------------------- Ray
def test_an_unreachable_ray_address_fails_at_once_with_one_line(tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    start = time.monotonic()
    code = cli.main(["diarize", str(_wav(tmp_path / "a.wav")), "--model", str(tmp_path / "nomodel"),
                     "--rttm-dir", str(tmp_path / "out"), "--ray", "127.0.0.1:1"])
    assert code == 1 and time.monotonic() - start < 30
    assert capsys.readouterr().err == "error: --ray 127.0.0.1:1: cannot connect (Connection refused)\n"


def test_a_ray_address_that_never_answers_fails_within_the_time_allowed() -> None:
    pytest.importorskip("ray")
    with socket.socket() as silent:  # accepts connections, never speaks Ray
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(OptionError, match=rf"^--ray {address}: no Ray cluster answered within 4 s$"):
            probe_ray(address, timeout=4)
        assert time.monotonic() - start < 15


def _ray_probe_running(parent: int) -> bool:
    """Whether `parent` has a child process running Ray's connect (`executor.probe_ray`)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{parent}\n" in status.read_text() and b"ray.init" in (status.parent / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def test_waiting_for_ray_yields_to_sigterm_at_once(tmp_path) -> None:
    pytest.importorskip("ray")
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to see the command's child process")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        argv = [sys.executable, "-m", "mlx_diar", "diarize", str(_wav(tmp_path / "a.wav")), "--model",
                str(tmp_path / "nomodel"), "--rttm-dir", str(tmp_path / "out"),
                "--ray", f"127.0.0.1:{silent.getsockname()[1]}"]
        process = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not _ray_probe_running(process.pid):  # now the command waits on Ray
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            process.terminate()
            start = time.monotonic()
            process.wait(timeout=10)
            assert time.monotonic() - start < 3 and process.returncode == -signal.SIGTERM
        finally:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------- manifests
def test_a_manifest_that_is_not_a_regular_file_is_refused_unread(tmp_path) -> None:
    fifo = tmp_path / "manifest.jsonl"
    os.mkfifo(fifo)  # no writer: reading it would block forever
    with pytest.raises(OptionError, match=rf"^--manifest {fifo}: not a regular file$"):
        corpus.collect(manifest=fifo)
    try:
        os.mknod(tmp_path / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # the numbers of /dev/zero
    except OSError:
        return  # mknod not permitted here: the FIFO case stands for it
    with pytest.raises(OptionError, match="not a regular file"):
        corpus.collect(manifest=tmp_path / "zero")


def test_manifest_size_and_line_length_are_bounded(tmp_path, monkeypatch) -> None:
    _wav(tmp_path / "a.wav")
    manifest = tmp_path / "corpus.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav"}) + "\n" + json.dumps({"audio": "a" * 70000}) + "\n")
    with pytest.raises(OptionError, match=rf"^{manifest}:2: line longer than 65536 bytes$"):
        corpus.collect(manifest=manifest)
    monkeypatch.setattr(corpus, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(OptionError, match=r"bytes, more than the 1000 allowed; split the corpus"):
        corpus.collect(manifest=manifest)


# ---------------------------------------------------------------------------------------------- protocols
def _protocol(folder: Path, uem: str) -> Path:
    _wav(folder / "a.wav")
    (folder / "test.lst").write_text("a\n")
    (folder / "test.rttm").write_text(RTTM.format(uri="a"))
    (folder / "test.uem").write_text(uem)
    yml = folder / "database.yml"
    yml.write_text(f"Databases:\n  Probe: '{folder}/{{uri}}.wav'\n"
                   "Protocols:\n  Probe:\n    SpeakerDiarization:\n      p:\n        scope: file\n        test:\n"
                   "          uri: test.lst\n          annotation: test.rttm\n          annotated: test.uem\n")
    return yml


def test_a_negative_scored_region_is_refused(tmp_path) -> None:
    pytest.importorskip("pyannote.database")
    yml = _protocol(tmp_path, "a 1 -5.0 -1.0\n")
    with pytest.raises(OptionError, match=r"^Probe\.SpeakerDiarization\.p test a: annotated \(the scored region\) "
                                          r"has segment -5--1 s: nothing could be scored$"):
        corpus.collect(protocol="Probe.SpeakerDiarization.p", database=yml)


def test_a_valid_protocol_loads_without_pyannote_database_notices(tmp_path, monkeypatch) -> None:
    pytest.importorskip("pyannote.database")
    yml = _protocol(tmp_path, "a 1 0.0 1.0\n")
    monkeypatch.chdir(tmp_path)  # ./database.yml is also read by pyannote.database: the protocol is defined twice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries = corpus.collect(protocol="Probe.SpeakerDiarization.p", database=yml)
    assert [e.uri for e in entries] == ["a"] and entries[0].annotated.duration() == 1.0
    assert [str(w.message) for w in caught] == []
