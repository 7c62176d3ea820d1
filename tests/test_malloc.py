"""mlx_diar._malloc: freed activations stay in the heap, so the next chunk's arrays cost no page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")

_PROBE = """
import resource
import mlx_diar  # applies the tuning at import
import mlx.core as mx
from mlx_diar._malloc import tune_malloc

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


def _run(env_extra: dict[str, str]) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env_extra
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


def test_tuned_heap_reuses_freed_blocks() -> None:
    tuned, faults = _run({})
    assert tuned
    assert faults < 500, f"{faults} minor page faults for 5 rounds of 10 x 10 MB temporaries"


def test_opt_out_keeps_glibc_defaults() -> None:
    tuned, faults = _run({"MLX_DIAR_NO_MALLOC_TUNING": "1"})
    assert not tuned
    assert faults > 2000, "expected the freed heap to be trimmed and faulted in again without the tuning"
