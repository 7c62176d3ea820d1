"""The CPU segmentation forward over several cores: this process and spawned helper processes.

`NumpyPyanNet` (the float32 CPU forward) spends most of its time in the LSTM recurrence: ~10
small NumPy calls per step, which keep one core busy whatever the BLAS threads, and two threads
of one process only hand the interpreter lock back and forth (measured: no gain). Each helper is
a separate interpreter with single-threaded BLAS that holds the model's weights (~6 MB) and runs
its share of every batch of chunks; this process runs the first share meanwhile, with NumPy's
BLAS held to one thread. Each chunk's scores are the same computation whichever lane runs it
(float32 GEMM rounding may differ with the batch size, ~1e-6).

A helper that dies is dropped and its share recomputed here; helpers stop with `close()`, when
the `SegmentationLanes` is garbage collected or at exit, and by themselves when this process is
gone (their connection closes).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from mlx_diar.cpu.blas import numpy_blas_threads, thread_environment
from mlx_diar.cpu.malloc import release_free_heap
from mlx_diar.cpu.pyannet_numpy import NumpyPyanNet

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB). Linux: VmHWM (getrusage's ru_maxrss carries
    the parent's resident size over fork + exec, so a child's would never read below its parent's)."""
    if sys.platform.startswith("linux"):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _serve(conn: Connection) -> None:
    """Helper process: receive the model, then answer ("forward", waveforms, sincnet_batch) and
    ("peak",) until None or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        model: NumpyPyanNet = conn.recv()
        while (request := conn.recv()) is not None:
            try:
                if request[0] == "peak":
                    conn.send(("ok", peak_rss_mb()))
                else:
                    scores = model(request[1], sincnet_batch=request[2])
                    release_free_heap()  # idle until the next batch: give the heap back meanwhile
                    conn.send(("ok", scores))
            except Exception as e:  # noqa: BLE001 (reported to the parent, which recomputes)
                conn.send(("error", f"{type(e).__name__}: {e}"))
    except (EOFError, OSError):
        return


class _Helper:
    """One helper: a fresh interpreter (`python -m mlx_diar.cpu.lanes FD`) on one end of a socket pair.

    Not a multiprocessing child: those re-run the parent's main script when it has no
    ``if __name__ == "__main__"`` guard, as a user's short script often has not."""

    def __init__(self, model: NumpyPyanNet) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, **thread_environment(1),
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        with theirs:
            self.process = subprocess.Popen([sys.executable, "-m", "mlx_diar.cpu.lanes", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        self.conn = Connection(ours.detach())
        self.conn.send(model)  # loads while this process goes on

    def request(self, *message: Any) -> None:
        self.conn.send(message)

    def answer(self) -> Any:
        kind, payload = self.conn.recv()
        if kind != "ok":
            raise RuntimeError(payload)
        return payload

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


def _stop_all(helpers: list[_Helper]) -> None:
    while helpers:
        helpers.pop().stop()


class SegmentationLanes:
    """Run `model` over batches of chunks on `lanes` cores (this process and lanes - 1 helpers)."""

    def __init__(self, model: NumpyPyanNet, lanes: int) -> None:
        self.model = model
        self.helpers: list[_Helper] = []
        self._lock = threading.Lock()
        self._unanswered: list[_Helper] = []
        for _ in range(lanes - 1):
            try:
                self.helpers.append(_Helper(model))
            except OSError as e:  # no interpreter to start (an embedded Python): fewer lanes
                log.warning("cannot start a segmentation helper process (%s); running in this process", e)
                break
        self._finalizer = weakref.finalize(self, _stop_all, self.helpers)

    @property
    def lanes(self) -> int:
        return 1 + len(self.helpers)

    def __call__(self, waveforms: np.ndarray, sincnet_batch: int = 8) -> np.ndarray:
        """Scores of (batch, samples) waveforms, the batch split over the lanes in order. Calls from
        several threads take turns (each helper answers one request at a time)."""
        with self._lock:
            return self._run(waveforms, sincnet_batch)

    def _run(self, waveforms: np.ndarray, sincnet_batch: int) -> np.ndarray:
        self._drain()
        if not self.helpers or waveforms.shape[0] < 2:
            return self.model(waveforms, sincnet_batch=sincnet_batch)
        shares = np.array_split(waveforms, min(self.lanes, waveforms.shape[0]))
        sent: dict[int, _Helper] = {}
        scores: dict[int, np.ndarray] = {}
        try:
            for k, helper in enumerate(list(self.helpers)[:len(shares) - 1], start=1):
                try:
                    helper.request("forward", shares[k], sincnet_batch)
                    sent[k] = helper
                except OSError as e:
                    self._lost(helper, e)
            with numpy_blas_threads(1):
                scores[0] = self.model(shares[0], sincnet_batch=sincnet_batch)
            for k in list(sent):
                answer = self._receive(sent.pop(k))
                if answer is not None:
                    scores[k] = answer
        finally:  # interrupted (Ctrl-C): the next call first takes these answers out of the way
            self._unanswered = list(sent.values())
        for k in range(len(shares)):  # shares of lost helpers
            if k not in scores:
                scores[k] = self.model(shares[k], sincnet_batch=sincnet_batch)
        return np.concatenate([scores[k] for k in range(len(shares))])

    def _drain(self) -> None:
        """Take the stale answers of an interrupted call out of the helpers' connections."""
        for helper in self._unanswered:
            self._receive(helper)
        self._unanswered = []

    def _receive(self, helper: _Helper) -> np.ndarray | None:
        """The helper's answer, or None when it failed (then it is dropped)."""
        try:
            return helper.answer()
        except (EOFError, OSError, RuntimeError) as e:
            self._lost(helper, e)
            return None

    def _lost(self, helper: _Helper, error: BaseException) -> None:
        log.warning("segmentation helper process %s failed (%s); its chunks run in this process",
                    helper.process.pid, error)
        self._drop(helper)

    def _drop(self, helper: _Helper) -> None:
        self.helpers.remove(helper)
        helper.stop()

    def helper_peaks_mb(self) -> list[float]:
        """Each live helper's peak resident memory (MB), for memory reports."""
        with self._lock:
            return self._peaks()

    def _peaks(self) -> list[float]:
        self._drain()
        peaks = []
        for helper in list(self.helpers):
            try:
                helper.request("peak")
                peak = helper.answer()
            except (EOFError, OSError, RuntimeError):
                self._drop(helper)
                continue
            peaks.append(peak)
        return peaks

    def close(self) -> None:
        """Stop the helpers (also done when this object is collected, or at exit)."""
        self._finalizer()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
