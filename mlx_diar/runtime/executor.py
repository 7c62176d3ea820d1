"""Run one task per recording over a corpus: in this process, in a local process pool, or on a Ray cluster.

The task (`RecordingTask`) is a picklable object: `setup(threads)` loads its models once per
worker, `__call__(entry)` processes one recording and returns a JSON-able result
(`{"duration_s": ..., "rows": ..., "files": {relative path: text}}`). The driver writes each
recording's files and then its record (`records/<uri>.json`, the commit point) atomically under
the output folder as soon as the recording finishes, so that:

- a rerun skips recordings whose record is done with the same task fingerprint and the same input
  contents (audio, and reference RTTM and UEM for a task that reads them; sha256 of each) and
  whose files are all still there (unless `redo`);
- a recording that fails becomes a record with its error and the run goes on; so does one whose
  output file would replace a symlink or a non-regular file;
- no output may be an input of the run (symlinks resolved): refused before anything runs;
- Ctrl-C (or a killed run) leaves every finished recording usable.

Each worker is told how many threads it may use (BLAS/OpenMP environment set before its
imports, and `setup(threads)` for libraries such as torch) so that workers do not oversubscribe
the cores.
"""

from __future__ import annotations

import dataclasses
import functools
import datetime as dt
import json
import os
import signal
import socket
import sys
import time
import traceback
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mlx_diar.cpu.blas import thread_environment
from mlx_diar.runtime.audio import AudioWarning
from mlx_diar.runtime.corpus import CorpusEntry
from mlx_diar.errors import MlxDiarError, OptionError, warnings_as_lines
from mlx_diar.fsutil import atomic_write, check_output_file, file_stem

RECORDS = "records"


class RecordingTask:
    """What to do with each recording. Subclasses set `fingerprint` and implement `setup` and `__call__`.

    `fingerprint` names everything a finished record depends on (model, variant, parameters):
    a record made with another fingerprint is redone. `reads_reference`: whether results depend on
    the reference RTTM and UEM (their contents then join each record's input fingerprint).
    """

    fingerprint: str = ""
    reads_reference: bool = True

    def outputs(self, entry: CorpusEntry) -> list[str]:
        """The files (relative to the output folder) a recording will write, when known before it runs:
        checked up front against the inputs. Files not declared here are checked when committed."""
        return []

    def setup(self, threads: int | None) -> None:
        """Load models once per worker; `threads` is this worker's share of the cores (None: all)."""

    def __call__(self, entry: CorpusEntry) -> dict[str, Any]:
        raise NotImplementedError


@dataclasses.dataclass
class RunSummary:
    """What a corpus run did: records of every recording (finished before or now), counts and timings."""

    records: list[dict[str, Any]]
    done: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    workers: int = 1
    backend: str = "in-process"

    @property
    def audio_s(self) -> float:
        """Seconds of audio processed in this run (skipped recordings excluded)."""
        return sum(r.get("duration_s") or 0.0 for r in self.records if r.get("ran_now"))

    @property
    def exit_status(self) -> int:
        """130 after Ctrl-C, else the number of failed recordings (at most 100), 0 when all are done."""
        return 130 if self.interrupted else min(self.failed, 100)

    def line(self) -> str:
        """One line: counts, audio processed, wall-clock, real-time factor and throughput."""
        rate = f", {self.audio_s / self.wall_s:.2f} audio h/h" if self.wall_s and self.audio_s else ""
        rtf = f", RTF {self.wall_s / self.audio_s:.3f}" if self.audio_s else ""
        stop = " (interrupted)" if self.interrupted else ""
        return (f"{self.done} done, {self.skipped} skipped (finished before), {self.failed} failed{stop}; "
                f"{self.audio_s / 60:.1f} min of audio in {self.wall_s:.1f} s with {self.workers} worker(s) "
                f"[{self.backend}]{rtf}{rate}")


def fingerprint(parts: Any, files: list[Path] = ()) -> str:
    """sha256 over JSON-able `parts` and the contents of `files`: what a finished record depends on."""
    import hashlib

    from mlx_diar.conversion.checkpoint import sha256sum

    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in files):
        digest.update(f"{path.name}:{sha256sum(path)}".encode())
    return digest.hexdigest()[:16]


def record_name(uri: str) -> str:
    """A file-name stem for `uri` (uris may hold '/' or other characters a file name cannot), percent-encoded
    and, when that is too long for a file name, shortened with a hash (`fsutil.file_stem`)."""
    return file_stem(urllib.parse.quote(uri, safe="") or "%20")


def _annotation_digest(annotation: Any, annotated: Any) -> str:
    """sha256 of a protocol's reference (turns and labels) and scored region, as given in memory."""
    import hashlib

    turns = [] if annotation is None else sorted(
        (s.start, s.end, str(label)) for s, _, label in annotation.itertracks(yield_label=True))
    region = [] if annotated is None else [(s.start, s.end) for s in annotated]
    return hashlib.sha256(json.dumps([turns, region]).encode()).hexdigest()


def input_fingerprint(entry: CorpusEntry, reference: bool = True) -> dict[str, str]:
    """sha256 of what a recording's result depends on: its audio and (when `reference`) its RTTM, UEM or
    the protocol's annotation. Content, not size or time: a file rewritten in place is noticed."""
    from mlx_diar.conversion.checkpoint import sha256sum

    def digest(path: Path) -> str:
        try:
            return sha256sum(path)
        except OSError as e:  # the recording fails on its own when it reads the file
            return f"unreadable ({e.strerror or e})"

    digests = {"audio": digest(entry.audio)}
    if reference:
        for kind in ("rttm", "uem"):
            if getattr(entry, kind) is not None:
                digests[kind] = digest(getattr(entry, kind))
        if entry.annotation is not None or entry.annotated is not None:
            digests["protocol"] = _annotation_digest(entry.annotation, entry.annotated)
    return digests


def input_paths(entries: list[CorpusEntry]) -> set[str]:
    """Every file the entries read, symlinks resolved: no output of the run may be one of them."""
    return {os.path.realpath(p) for e in entries for p in (e.audio, e.rttm, e.uem) if p is not None}


def _files_present(out: Path, record: dict[str, Any]) -> bool:
    return all((out / name).is_file() for name in record.get("files") or ())


def load_records(out: Path) -> dict[str, dict[str, Any]]:
    """{uri: record} of the records under `out` (unreadable records are ignored: they are redone)."""
    records = {}
    for path in sorted((Path(out) / RECORDS).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "uri" in record:
            records[record["uri"]] = record
    return records


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for child processes started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, MlxDiarError) and text else f"{type(error).__name__}: {text}".rstrip(": ")


def run_entry(task: RecordingTask, entry: CorpusEntry) -> dict[str, Any]:
    """Run `task` on one recording; never raises (but on Ctrl-C): a failure is a record with its error."""
    start = time.perf_counter()
    record: dict[str, Any] = {"uri": entry.uri, "audio": str(entry.audio), "fingerprint": task.fingerprint,
                              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        with warnings_as_lines(AudioWarning):  # clipped or silent audio: one line, the recording goes on
            result = task(entry)
        record.update(status="done", error=None, duration_s=result.pop("duration_s", None), result=result)
    except Exception as e:  # fault isolation: any failure of one recording becomes its record
        record.update(status="failed", error=_one_line(e), traceback=traceback.format_exc(limit=-8), result=None)
    record["wall_s"] = time.perf_counter() - start
    return record


def _safe_relative(out: Path, name: str, inputs: set[str] = frozenset()) -> Path:
    """`out/name` for a result file: inside `out` (its folder resolved), not under its records, not a
    symlink, a non-regular file or an input (`fsutil.check_output_file`)."""
    target = out / name
    if not target.parent.resolve().is_relative_to(out.resolve()) or Path(name).parts[0] == RECORDS:
        raise OptionError(f"result file {name!r} would be written outside {out} or over its records")
    return check_output_file(target, inputs)


def record_path(out: Path, uri: str) -> Path:
    """Where the record of `uri` is written under `out`."""
    return out / RECORDS / f"{record_name(uri)}.json"


def commit(out: Path, record: dict[str, Any], inputs: set[str] = frozenset()) -> dict[str, Any]:
    """Write the record's files, then the record itself (the commit point), each atomically.

    A file that may not be written (a symlink, a non-regular file or an input there) fails the
    recording instead: none of its files is written and the record says why."""
    files = (record.get("result") or {}).pop("files", None) or {}
    try:
        targets = {name: _safe_relative(out, name, inputs) for name in files}
    except OptionError as e:
        record.update(status="failed", error=_one_line(e), result=None)
        targets, files = {}, {}
    for name, text in files.items():
        atomic_write(targets[name], text)
    record["files"] = sorted(files)
    record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write(record_path(out, record["uri"]), json.dumps(record, indent=1, default=str))
    return record


# ---------------------------------------------------------------------------------------------- backends
def _in_process(task: RecordingTask, entries: list[CorpusEntry], finish: Callable[[dict], None]) -> None:
    task.setup(None)
    for entry in entries:
        finish(run_entry(task, entry))


def _pool_worker(task: RecordingTask, threads: int, conn) -> None:
    """Worker process: load once, then answer one entry at a time until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C does
    try:
        task.setup(threads)
    except BaseException as e:  # noqa: BLE001 (reported to the driver, which stops the run)
        conn.send(("setup-failed", _one_line(e)))
        return
    try:
        conn.send(("ready", None))
        while (entry := conn.recv()) is not None:
            conn.send(("record", run_entry(task, entry)))
    except (EOFError, BrokenPipeError):
        return  # the driver is gone (killed): what it committed stays, this recording is redone by a rerun


class _PoolWorker:
    def __init__(self, context, task: RecordingTask, threads: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_pool_worker, args=(task, threads, child), daemon=True)
        with _environment(thread_environment(threads)):
            self.process.start()
        child.close()
        self.entry: CorpusEntry | None = None
        self.ready = False

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)


def _pool(task: RecordingTask, entries: list[CorpusEntry], finish: Callable[[dict], None], workers: int,
          threads: int) -> None:
    """A local pool of spawned processes, one recording in flight per worker; a dead worker is replaced."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    pending = list(reversed(entries))
    pool = [_PoolWorker(context, task, threads) for _ in range(min(workers, len(entries)))]
    try:
        while pending or any(w.entry is not None for w in pool):
            for worker in pool:
                if worker.ready and worker.entry is None and pending:
                    worker.entry = pending.pop()
                    worker.conn.send(worker.entry)
            by_handle = {}
            for worker in pool:
                by_handle[worker.conn] = worker
                by_handle[worker.process.sentinel] = worker
            for handle in wait(list(by_handle)):
                worker = by_handle[handle]
                if worker not in pool:
                    continue  # replaced earlier in this round
                alive = True
                while alive and worker.conn.poll():
                    try:
                        kind, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        alive = False
                        break
                    if kind == "setup-failed":
                        raise MlxDiarError(f"worker setup failed: {payload}")
                    if kind == "ready":
                        worker.ready = True
                    else:
                        worker.entry = None
                        finish(payload)
                if alive and worker.process.is_alive():
                    continue
                worker.process.join(timeout=10)
                lost, code = worker.entry, worker.process.exitcode
                if not worker.ready:
                    raise MlxDiarError(f"worker process died while loading its models (exit code {code})")
                worker.stop()
                pool[pool.index(worker)] = _PoolWorker(context, task, threads)
                if lost is not None:
                    finish({"uri": lost.uri, "audio": str(lost.audio), "fingerprint": task.fingerprint,
                            "status": "failed", "error": f"worker process died (exit code {code})",
                            "result": None, "wall_s": None})
    finally:
        for worker in pool:
            if worker.process.is_alive() and worker.entry is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        for worker in pool:
            worker.process.join(timeout=2)
            worker.stop()


class _RayWorker:
    """A Ray actor: the task's models loaded once, then one recording per call."""

    def __init__(self, task: RecordingTask, threads: int) -> None:
        self.task = task
        self.setup_error = None
        try:
            task.setup(threads)
        except Exception as e:  # reported by ready(), which the driver asks first
            self.setup_error = _one_line(e)

    def ready(self) -> str | None:
        return self.setup_error

    def run(self, entry: CorpusEntry) -> dict[str, Any]:
        return run_entry(self.task, entry)


RAY_CONNECT_SECONDS = 30.0
# run in a child process: Ray's own connect, which retries an unreachable cluster for minutes; the alarm
# (default action: terminate) ends the child even if its parent is gone
_RAY_PROBE = ("import signal, sys; signal.alarm(int(float(sys.argv[2])) + 5); import ray; "
              "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); ray.shutdown()")


def probe_ray(address: str, timeout: float = RAY_CONNECT_SECONDS) -> None:
    """OptionError (one line) unless a Ray cluster answers at `address` within `timeout` seconds.

    First a TCP connection to its host:port (a refused or unroutable address answers at once),
    then `ray.init` in a child process killed after `timeout`: this process never waits on Ray's
    retries, and stays responsive to signals meanwhile."""
    import subprocess

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout)).close()
        except OSError as e:
            raise OptionError(f"--ray {address}: cannot connect ({e.strerror or e})") from None
    try:
        result = subprocess.run([sys.executable, "-c", _RAY_PROBE, address, str(timeout)], capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OptionError(f"--ray {address}: no Ray cluster answered within {timeout:g} s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise OptionError(f"--ray {address}: cannot connect ({lines[-1].strip() if lines else result.returncode})")


def ray_connect(address: str, timeout: float = RAY_CONNECT_SECONDS) -> bool:
    """Connect Ray: `auto` joins the running cluster (`ray start --head`) if any, else starts a local one;
    anything else is a cluster address, which must answer within `timeout` seconds (`probe_ray`).
    Returns whether this call initialised Ray."""
    try:
        import ray
    except ImportError:
        raise OptionError('--ray needs Ray: pip install "mlx-diar[cluster]"') from None
    if ray.is_initialized():
        return False
    options = {"logging_level": "ERROR", "log_to_driver": False}
    if address != "auto":
        probe_ray(address, timeout)
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **options)
            except ConnectionError:
                ray.init(**options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise OptionError(f"--ray {address}: cannot connect ({_one_line(e)})") from None
    return True


def _ray(task: RecordingTask, entries: list[CorpusEntry], finish: Callable[[dict], None], workers: int | None,
         threads: int, address: str) -> int:
    """One Ray actor per worker (`threads` CPUs each), one recording in flight per actor; a dead actor is replaced."""
    import ray

    started = ray_connect(address)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    workers = min(workers, len(entries))
    actor_class = ray.remote(_RayWorker).options(
        num_cpus=threads, runtime_env={"env_vars": thread_environment(threads)})
    pending = list(reversed(entries))
    in_flight: dict[Any, tuple[Any, CorpusEntry]] = {}

    def submit(actor) -> None:
        if pending:
            entry = pending.pop()
            in_flight[actor.run.remote(entry)] = (actor, entry)

    actors = [actor_class.remote(task, threads) for _ in range(workers)]
    try:
        errors = [e for e in ray.get([actor.ready.remote() for actor in actors]) if e]
        if errors:
            raise MlxDiarError(f"worker setup failed: {errors[0]}")
        for actor in actors:
            submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor, entry = in_flight.pop(ready[0])
            try:
                finish(ray.get(ready[0]))
            except ray.exceptions.RayActorError as e:
                finish({"uri": entry.uri, "audio": str(entry.audio), "fingerprint": task.fingerprint,
                        "status": "failed", "error": f"Ray worker died ({_one_line(e)})", "result": None,
                        "wall_s": None})
                ray.kill(actor)
                actor = actor_class.remote(task, threads)
                actors.append(actor)
            submit(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return workers


def run_corpus(task: RecordingTask, entries: list[CorpusEntry], out: str | Path, workers: int | None = None,
               ray: str | None = None, threads: int | None = None, redo: bool = False,
               progress: bool = True) -> RunSummary:
    """Run `task` on every entry not finished before; records and files under `out`.

    Backends: `ray` ("auto" or an address) runs Ray actors; else `workers` > 1 a local process
    pool; else this process (the default for one recording). `workers` defaults to the number
    of cores (Ray: cluster CPUs // `threads`); `threads` per worker to cores // workers (Ray: 1).
    A KeyboardInterrupt stops the run; what finished is kept, the summary says `interrupted`.
    """
    out = Path(out)
    inputs = input_paths(entries)
    for entry in entries:
        for path in (record_path(out, entry.uri), *(out / name for name in task.outputs(entry))):
            if os.path.realpath(path) in inputs:
                raise OptionError(f"{path}: an output of this run is also one of its inputs "
                                  f"({entry.origin or entry.audio}); choose another output folder")
    (out / RECORDS).mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    finished = load_records(out)
    digests = {entry.uri: input_fingerprint(entry, task.reads_reference) for entry in entries}
    todo, kept = [], []
    for entry in entries:
        old = finished.get(entry.uri)
        if (not redo and old is not None and old.get("status") == "done" and old.get("fingerprint") ==
                task.fingerprint and old.get("inputs") == digests[entry.uri] and _files_present(out, old)):
            kept.append({**old, "ran_now": False})
        else:
            todo.append(entry)
    if ray is not None:
        backend, threads = "ray", threads or 1
    else:
        workers = min(workers or cores, max(1, len(todo)))
        backend = "process pool" if workers > 1 else "in-process"
        threads = threads or max(1, cores // workers)
    summary = RunSummary(records=kept, skipped=len(kept), workers=workers or 0, backend=backend)
    bar = _ProgressBar(todo) if progress and todo and sys.stderr.isatty() else None

    def finish(record: dict[str, Any]) -> None:
        record["inputs"] = digests[record["uri"]]
        record = commit(out, record, inputs)
        record["ran_now"] = True
        summary.records.append(record)
        if record["status"] == "done":
            summary.done += 1
        else:
            summary.failed += 1
            if bar is None and progress:
                print(f"failed: {record['uri']}: {record['error']}", file=sys.stderr)
        if bar is not None:
            bar.advance(record)

    start = time.perf_counter()
    try:
        if not todo:
            pass
        elif backend == "ray":
            summary.workers = _ray(task, todo, finish, workers, threads, ray)
        elif backend == "process pool":
            _pool(task, todo, finish, workers, threads)
        else:
            _in_process(task, todo, finish)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.wall_s = time.perf_counter() - start
        if bar is not None:
            bar.close()
    order = {entry.uri: i for i, entry in enumerate(entries)}
    summary.records.sort(key=lambda r: order.get(r["uri"], len(order)))
    return summary


class _ProgressBar:
    """A rich progress bar on stderr over the corpus's audio duration, with ETA and failures."""

    def __init__(self, entries: list[CorpusEntry]) -> None:
        from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self.durations = {e.uri: _duration(e.audio) for e in entries}
        self.count, self.failed = 0, 0
        self.total = len(entries)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        self.task = self.bar.add_task(self._text(), total=max(sum(self.durations.values()), 1e-9))
        self.bar.start()

    def _text(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.count}/{self.total} recordings{failed}"

    def advance(self, record: dict[str, Any]) -> None:
        self.count += 1
        self.failed += record["status"] != "done"
        if record["status"] != "done":
            self.bar.console.print(f"failed: {record['uri']}: {record['error']}", highlight=False)
        self.bar.update(self.task, advance=self.durations.get(record["uri"], 0.0), description=self._text())

    def close(self) -> None:
        self.bar.stop()


def _duration(path: Path) -> float:
    """Seconds of audio from the file header (0 when unreadable: that recording will fail on its own)."""
    try:
        import soundfile as sf

        return float(sf.info(str(path)).duration)
    except Exception:  # noqa: BLE001 (only an estimate for the progress bar)
        return 0.0


class DiarizeTask(RecordingTask):
    """`python -m mlx_diar diarize` on a corpus: the MLX pipeline loaded once per worker, one RTTM per recording."""

    reads_reference = False  # a reference RTTM or UEM beside the audio does not change the result

    def __init__(self, model: str | Path, device: str = "cpu", params: dict | None = None,
                 hyper_parameters: dict | None = None, exclusive: bool = False,
                 speakers: dict[str, int | None] | None = None, kernels: str = "auto",
                 compute: str = "auto") -> None:
        """`model`: what `mlx_diar.conversion.hub.resolve_model` accepts, resolved (a pyannote
        pipeline converted) at the first use of `model_dir`: after `run_corpus` has checked the
        outputs, before any worker starts."""
        self.source, self.device = model, device
        self.params, self.hyper_parameters = params or {}, hyper_parameters or {}
        self.exclusive, self.speakers = exclusive, speakers or {}
        self.kernels, self.compute = kernels, compute
        self.pipeline = None

    @functools.cached_property
    def model_dir(self) -> Path:
        from mlx_diar.conversion.hub import resolve_model

        return Path(resolve_model(self.source))

    @functools.cached_property
    def fingerprint(self) -> str:
        files = [p for p in self.model_dir.glob("*") if p.suffix in (".json", ".safetensors")]
        return fingerprint({"task": "diarize", "device": self.device, "params": self.params,
                            "hyper_parameters": self.hyper_parameters, "exclusive": self.exclusive,
                            "speakers": self.speakers, "kernels": self.kernels, "compute": self.compute}, files)

    def outputs(self, entry: CorpusEntry) -> list[str]:
        return [f"{record_name(entry.uri)}.rttm"]

    def setup(self, threads: int | None) -> None:
        from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

        self.pipeline = SpeakerDiarizationPipeline(model_path=self.model_dir, device=self.device, params=self.params,
                                                   hyper_parameters=self.hyper_parameters, kernels=self.kernels,
                                                   compute=self.compute)

    def __call__(self, entry: CorpusEntry) -> dict[str, Any]:
        from mlx_diar.runtime.audio import closing_audio, open_audio, rttm_uri

        waveform = open_audio(entry.audio)
        with closing_audio(waveform):
            output = self.pipeline.apply(waveform, uri=rttm_uri(entry.uri), **self.speakers)
        annotation = output.exclusive_speaker_diarization if self.exclusive else output.speaker_diarization
        return {"duration_s": len(waveform) / 16000, "speakers": len(annotation.labels()),
                "timings": output.timings, "files": {self.outputs(entry)[0]: annotation.to_rttm()}}
