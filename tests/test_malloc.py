"""mlx_diar.cpu.malloc: freed activations stay in the heap, so the next chunk's arrays cost no page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlx_diar.cpu import malloc

_PROBE = """
import resource
import mlx_diar  # applies the tuning at import
import mlx.core as mx
from mlx_diar.cpu.malloc import tune_malloc

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

x = mx.random.normal((2_500_000,))  # 10 MB per array, as one chunk's trunk activations
mx.eval(x)

def chunk():  # several live activations, then all freed: the heap top shrinks by ~100 MB
    live = [mx.exp(x) + k for k in range(10)]
    mx.eval(live)

for _ in range(2):
    chunk()
before = faults()
for _ in range(5):
    chunk()
print(tune_malloc(), faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tuned_heap_reuses_freed_blocks() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "MLX_DIAR_NO_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    tuned, faults = out.stdout.split()
    assert tuned == "True"
    assert int(faults) < 500, f"{faults} minor page faults for 5 rounds of 10 x 10 MB temporaries"


class _RecordingLibc:
    """Stands in for ctypes.CDLL(None): records mallopt calls instead of changing this process's heap."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return 1

        self.mallopt = mallopt


@pytest.fixture()
def libc(monkeypatch: pytest.MonkeyPatch) -> _RecordingLibc:
    fake = _RecordingLibc()
    monkeypatch.setattr(malloc, "_TUNED", False)
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(malloc.sys, "platform", "linux")
    monkeypatch.delenv("MLX_DIAR_NO_MALLOC_TUNING", raising=False)
    return fake


def test_tuning_sets_both_thresholds(libc: _RecordingLibc) -> None:
    assert malloc.tune_malloc()
    assert libc.calls == [(malloc.M_MMAP_THRESHOLD, 32 * 2**20), (malloc.M_TRIM_THRESHOLD, 512 * 2**20)]


def test_opt_out_keeps_glibc_defaults(libc: _RecordingLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLX_DIAR_NO_MALLOC_TUNING", "1")
    assert not malloc.tune_malloc()
    assert libc.calls == []


def test_other_platforms_untouched(libc: _RecordingLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert not malloc.tune_malloc()
    assert libc.calls == []


_RELEASE_PROBE = """
import mlx_diar
import mlx.core as mx
from harness.memory import _rss_mb
from mlx_diar.cpu.malloc import release_free_heap

x = mx.random.normal((2_500_000,))
live = [mx.exp(x) + k for k in range(20)]  # 200 MB of 10 MB blocks in the heap
mx.eval(live)
del live
kept = _rss_mb()
release_free_heap()
print(kept - _rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_release_hands_the_kept_heap_back() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "MLX_DIAR_NO_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", _RELEASE_PROBE], capture_output=True, text=True, env=env, check=True)
    assert float(out.stdout.split()[-1]) > 100, "MB returned to the system by release_free_heap"
