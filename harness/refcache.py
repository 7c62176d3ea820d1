"""The reference cache: pyannote's recorded run of a file (bundle, timings, peak memory), kept and reused.

pyannote's answer on a file depends only on its inputs, so `harness compare` reuses a recorded run
when every input is the same, and reports its timing as "cached" with the date it was measured.
An entry is two files under `cache_root()/reference/`, named by the sha256 of its key:

- `<digest>.npz`: the `reference.runner` bundle (arrays, both diarizations with exact times, meta),
  whose meta also records the key, the date and the run's peak resident memory;
- `<digest>.json`: the key, the bundle's sha256 and the date, written last.

The key (`reference_key`) holds everything the bundle depends on: the bundle format and the source of
the `reference` package and the trust boundary that stages pyannote's copy; the versions of
Python, NumPy, SciPy, scikit-learn, torch, torchaudio, lightning and pyannote's packages; the
checkpoint fingerprint (every config, checkpoint and PLDA file); the sha256 of the 16 kHz float32
waveform pyannote is given and its uri; the speaker-count options; what is captured
(`layer_items`, layers recorded); torch's thread count; whether a warm-up run preceded the timed
run; the CPU and core count (float32 results and timings are per machine).

An entry is used only when its JSON parses, records the same key, the bundle's sha256 matches, the
bundle loads as this `BUNDLE_FORMAT` and records the same key inside; anything else (a truncated or
corrupt file, another version, a key mismatch) is reported on stderr, recomputed and replaced, never
trusted. Both files are written atomically (`mlx_diar.fsutil`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.paths import cache_root
from mlx_diar.fsutil import atomic_write
from mlx_diar.provenance import package_versions

if TYPE_CHECKING:
    from reference.runner import ReferenceRun

CACHE_VERSION = 1  # layout of an entry (the two files above)
KEY_PACKAGES = ("numpy", "scipy", "scikit-learn", "torch", "torchaudio", "lightning", "pyannote.audio",
                "pyannote.core", "pyannote.pipeline")
# the code whose behaviour a recorded run depends on, besides the packages above
REFERENCE_CODE = ("reference", "mlx_diar/conversion/trust.py", "mlx_diar/conversion/sources.py")
ROOT = Path(__file__).resolve().parent.parent
DAMAGED = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


@dataclasses.dataclass
class Reference:
    """pyannote's run of one file, as `harness compare` uses it: measured now or taken from the cache."""

    run: ReferenceRun
    peak_mb: float
    cached: str = ""  # ISO date the cached run was measured; "" when measured in this process


def directory() -> Path:
    return cache_root() / "reference"


def code_digest() -> str:
    """sha256 over the source of the code in `REFERENCE_CODE` (a change reruns pyannote)."""
    digest = hashlib.sha256()
    for entry in REFERENCE_CODE:
        path = ROOT / entry
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(f"{source.relative_to(ROOT)}:".encode() + source.read_bytes())
    return digest.hexdigest()


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def reference_key(fingerprint: str, waveform: np.ndarray, uri: str, layer_items: int, warmup: bool,
                  record_layers: bool = True, speakers: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Everything a recorded pyannote run depends on (see the module's docstring), JSON-ready."""
    import torch

    from reference.runner import BUNDLE_FORMAT

    samples = np.ascontiguousarray(waveform, dtype=np.float32)
    return {
        "cache_version": CACHE_VERSION, "bundle_format": BUNDLE_FORMAT, "code": code_digest(),
        "versions": package_versions(KEY_PACKAGES), "checkpoint": fingerprint,
        "audio_sha256": hashlib.sha256(samples.tobytes()).hexdigest(), "samples": int(samples.size), "uri": uri,
        "speakers": speakers or {"num_speakers": None, "min_speakers": None, "max_speakers": None},
        "layer_items": layer_items if record_layers else 0, "record_layers": record_layers,
        "torch_threads": torch.get_num_threads(), "warmup": warmup,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(),
                    "system": platform.system()},
    }


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]


def _sha256(path: Path) -> str:
    digest_ = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest_.update(block)
    return digest_.hexdigest()


def load(key: dict[str, Any], log=None) -> Reference | None:
    """The cached run for `key`, or None when there is none or it cannot be trusted (`log` says why)."""
    from reference.runner import load_run

    name = digest(key)
    entry_path, bundle_path = directory() / f"{name}.json", directory() / f"{name}.npz"
    if not entry_path.is_file():
        return None
    key = json.loads(json.dumps(key))  # as JSON gives it back (tuples become lists)
    try:
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
        problem = ("records another key" if entry.get("key") != key else
                   "bundle missing" if not bundle_path.is_file() else
                   "bundle's sha256 differs (truncated or changed)" if _sha256(bundle_path) != entry["bundle_sha256"]
                   else None)
        if problem is None:
            run = load_run(bundle_path)
            if run.meta.get("cache", {}).get("key") != key:
                problem = "bundle records another key"
    except DAMAGED as e:
        problem = f"unreadable ({type(e).__name__}: {e})"
    if problem is not None:
        if log is not None:
            log(f"reference cache: {entry_path.name}: {problem}; running pyannote again")
        return None
    cache = run.meta["cache"]
    return Reference(run=run, peak_mb=float(cache["peak_rss_mb"]), cached=str(cache["created"]))


def store(key: dict[str, Any], reference: Reference) -> Path:
    """Write `reference` as the entry for `key` (bundle first, then its JSON: complete or ignored)."""
    from reference.runner import save_bundle

    name = digest(key)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    run = reference.run
    run.meta["cache"] = {"key": key, "created": created, "peak_rss_mb": reference.peak_mb}
    try:
        bundle = save_bundle(run, directory() / f"{name}.npz")
        atomic_write(directory() / f"{name}.json", json.dumps(
            {"key": key, "bundle_sha256": _sha256(bundle), "created": created}, indent=1, sort_keys=True))
    except OSError as e:  # a read-only or full cache costs the reuse, not the comparison
        print(f"warning: reference cache: cannot write {directory()}: {e}", file=sys.stderr)
    finally:
        del run.meta["cache"]
    return directory() / f"{name}.json"
