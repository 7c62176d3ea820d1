"""Make MLX's CPU backend use an optimised BLAS on Linux, and report which BLAS is active.

`mlx[cpu]` on Linux bundles a reference BLAS (~40x slower than OpenBLAS for matmul).
Loading OpenBLAS with RTLD_GLOBAL *before* MLX is imported makes MLX resolve its
`cblas_*` symbols to OpenBLAS. This module must therefore be imported before `mlx`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from contextlib import AbstractContextManager, contextmanager
from typing import Iterator

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
_CANDIDATES = ("libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.so")
_LOADED: str | None = None


def preload_blas() -> str | None:
    """Load an optimised BLAS globally (Linux only); returns the library loaded, if any.

    Set ``MLX_DIAR_NO_BLAS_PRELOAD=1`` to keep MLX's bundled BLAS (for comparisons).
    """
    global _LOADED
    if _LOADED or not sys.platform.startswith("linux") or os.environ.get("MLX_DIAR_NO_BLAS_PRELOAD"):
        return _LOADED
    if "mlx.core" in sys.modules:
        return None  # too late: MLX has already bound its BLAS
    names = list(_CANDIDATES)
    found = ctypes.util.find_library("openblas")
    if found:
        names.append(found)
    for name in names:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _LOADED = name
        return name
    return None


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def active_blas() -> str:
    """Name the library that provides ``cblas_sgemm`` to MLX in this process."""
    if sys.platform == "darwin":
        return "Accelerate (macOS)"
    import mlx.core  # noqa: F401  (MLX must be loaded to know what it bound)

    try:
        fn = ctypes.CDLL(None).cblas_sgemm  # global scope: what MLX resolves first
    except AttributeError:
        fn = None
    if fn is None:
        for line in open("/proc/self/maps"):
            path = line.split()[-1]
            if "mlx" in path and "blas" in os.path.basename(path):
                return f"bundled reference BLAS ({path}); install libopenblas0-pthread"
        return "unknown"
    info = _DlInfo()
    libdl = ctypes.CDLL(ctypes.util.find_library("dl") or None)
    if libdl.dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)):
        return os.path.realpath(info.dli_fname.decode())
    return "unknown"


def _openblas_threads_api():
    """(get, set) of the OpenBLAS that MLX uses, or None (another BLAS, or none loaded yet)."""
    lib = ctypes.CDLL(None)
    try:
        return lib.openblas_get_num_threads, lib.openblas_set_num_threads
    except AttributeError:
        return None


def blas_thread_count() -> int | None:
    """Threads MLX's OpenBLAS uses per call (set from OPENBLAS_NUM_THREADS when it loaded), or None."""
    api = _openblas_threads_api()
    return None if api is None else int(api[0]())


# NumPy's bundled OpenBLAS (scipy-openblas wheels) under its own symbol names, then a plain OpenBLAS
_NUMPY_OPENBLAS_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                           ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                           ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                           ("openblas_get_num_threads", "openblas_set_num_threads"))


def _numpy_openblas_threads_api():
    """(get, set) of the OpenBLAS bundled with NumPy (Linux wheels), or None."""
    import numpy

    libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    if not os.path.isdir(libs):
        return None
    for name in sorted(os.listdir(libs)):
        if "openblas" not in name:
            continue
        lib = ctypes.CDLL(os.path.join(libs, name))  # already loaded by NumPy: the same handle
        for get, set_ in _NUMPY_OPENBLAS_SYMBOLS:
            if hasattr(lib, get) and hasattr(lib, set_):
                return getattr(lib, get), getattr(lib, set_)
    return None


@contextmanager
def _threads(api, count: int | None) -> Iterator[None]:
    if api is None or count is None:
        yield
        return
    get, set_ = api
    previous = int(get())
    set_(int(count))
    try:
        yield
    finally:
        set_(previous)


def blas_threads(count: int | None) -> AbstractContextManager[None]:
    """Inside: MLX's OpenBLAS runs each call on `count` threads (process-wide); restored after.

    A no-op for ``None`` or where MLX does not use OpenBLAS (macOS Accelerate, the bundled BLAS).
    """
    return _threads(None if count is None else _openblas_threads_api(), count)


def numpy_blas_threads(count: int | None) -> AbstractContextManager[None]:
    """Inside: NumPy's own OpenBLAS runs each call on `count` threads; restored after. A no-op for
    ``None`` or where NumPy's BLAS is not an OpenBLAS it bundles (macOS Accelerate, a system BLAS)."""
    return _threads(None if count is None else _numpy_openblas_threads_api(), count)


def thread_environment(threads: int) -> dict[str, str]:
    """Environment that limits BLAS/OpenMP pools to `threads` (read by those libraries when they load)."""
    return {name: str(threads) for name in THREAD_VARIABLES}
