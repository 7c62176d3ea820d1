"""The reference cache (`harness.refcache`) and the bundle it stores (`reference.runner.save_bundle` / `load_run`):
an entry is reused only when everything it depends on matches and it is intact; anything else is rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from harness import refcache
from harness.metrics import score, uem_for
from reference.runner import BUNDLE_FORMAT, ReferenceRun, load_run, save_bundle

WAVEFORM = np.random.default_rng(0).normal(scale=0.1, size=16000).astype(np.float32)


def _annotation(uri: str, offset: float = 0.0) -> Annotation:
    """Turns whose times RTTM's three decimals would round, tracks named by int and by str."""
    annotation = Annotation(uri=uri)
    annotation[Segment(1 / 3 + offset, 2 / 3 + 1.0), 0] = "SPEAKER_00"
    annotation[Segment(0.1234567, 0.7654321), "B"] = "SPEAKER_01"
    annotation[Segment(np.pi, 2 * np.pi), 1] = "SPEAKER_00"
    return annotation


def _run() -> ReferenceRun:
    arrays = {"segmentation": np.arange(12, dtype=np.float32).reshape(2, 3, 2), "layers/x/y": np.ones((1, 4))}
    meta = {"uri": "clip", "timings": {"segmentation": 1.5, "total": 2.5}, "labels": ["SPEAKER_00", "SPEAKER_01"]}
    return ReferenceRun(arrays=arrays, meta=meta, diarization=_annotation("clip"),
                        exclusive_diarization=_annotation("clip", offset=0.01))


def test_bundle_keeps_both_diarizations_exactly(tmp_path: Path) -> None:
    run = _run()
    loaded = load_run(save_bundle(run, tmp_path / "b.npz"))
    for name in ("diarization", "exclusive_diarization"):
        mine, theirs = getattr(loaded, name), getattr(run, name)
        assert list(mine.itertracks(yield_label=True)) == list(theirs.itertracks(yield_label=True))
        assert mine.uri == theirs.uri
        assert score(theirs, mine, uem_for(10.0))["der"] == 0.0  # RTTM's 3 decimals would not give exactly 0
    assert loaded.meta == run.meta
    assert loaded.arrays.keys() == run.arrays.keys()
    for key, value in run.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)


def test_bundle_of_another_format_is_refused(tmp_path: Path, monkeypatch) -> None:
    import reference.runner

    path = save_bundle(_run(), tmp_path / "b.npz")
    monkeypatch.setattr(reference.runner, "BUNDLE_FORMAT", BUNDLE_FORMAT + 1)
    with pytest.raises(ValueError, match="not a bundle of format"):
        load_run(path)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(refcache, "directory", lambda: tmp_path / "reference")
    return tmp_path / "reference"


def _key(**change) -> dict:
    key = refcache.reference_key("f" * 64, WAVEFORM, "clip", layer_items=1, warmup=True)
    return {**key, **change}


def _stored(key: dict) -> refcache.Reference:
    reference = refcache.Reference(run=_run(), peak_mb=512.0)
    refcache.store(key, reference)
    return reference


def test_an_entry_is_reused_with_its_date_and_memory(cache: Path) -> None:
    key = _key()
    assert refcache.load(key) is None  # nothing cached yet
    _stored(key)
    hit = refcache.load(key)
    assert hit is not None and hit.peak_mb == 512.0 and hit.cached.startswith("20")
    assert hit.run.meta["timings"] == {"segmentation": 1.5, "total": 2.5}
    assert list(hit.run.diarization.itertracks(yield_label=True)) == list(_run().diarization.itertracks(yield_label=True))
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npz"]  # no temporary files left


def test_the_key_holds_what_the_bundle_depends_on() -> None:
    key = _key()
    assert key["bundle_format"] == BUNDLE_FORMAT and len(key["code"]) == 64
    assert {"torch", "pyannote.audio", "numpy", "scikit-learn"} <= set(key["versions"])
    assert key["torch_threads"] >= 1 and key["machine"]["cores"] >= 1 and key["machine"]["cpu"]
    assert key["layer_items"] == 1 and key["warmup"] is True and key["checkpoint"] == "f" * 64
    differing = [
        _key(checkpoint="e" * 64), _key(layer_items=2), _key(warmup=False), _key(torch_threads=key["torch_threads"] + 1),
        _key(versions={**key["versions"], "torch": "0.0"}), _key(code="0" * 64), _key(bundle_format=BUNDLE_FORMAT + 1),
        refcache.reference_key("f" * 64, WAVEFORM * 2, "clip", 1, True),  # other audio
        refcache.reference_key("f" * 64, WAVEFORM, "other", 1, True),  # another uri: its RTTM differs
        refcache.reference_key("f" * 64, WAVEFORM, "clip", 1, True, speakers={"num_speakers": 2}),
    ]
    assert len({refcache.digest(k) for k in [key, *differing]}) == 1 + len(differing)


def test_the_code_digest_follows_the_reference_package(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "runner.py").write_text("A = 1\n")
    monkeypatch.setattr(refcache, "ROOT", tmp_path)
    monkeypatch.setattr(refcache, "REFERENCE_CODE", ("reference",))
    before = refcache.code_digest()
    (tmp_path / "reference" / "runner.py").write_text("A = 2\n")
    assert refcache.code_digest() != before


def _damage_truncate(cache: Path) -> None:
    bundle = next(cache.glob("*.npz"))
    bundle.write_bytes(bundle.read_bytes()[:-100])


def _damage_byte(cache: Path) -> None:
    bundle = next(cache.glob("*.npz"))
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))


def _damage_entry_json(cache: Path) -> None:
    next(cache.glob("*.json")).write_text("{not json")


def _entry_of_another_key(cache: Path) -> None:
    entry = next(cache.glob("*.json"))
    content = json.loads(entry.read_text())
    content["key"]["versions"]["torch"] = "0.0"
    entry.write_text(json.dumps(content))


def _bundle_of_another_key(cache: Path) -> None:
    """A bundle whose sha256 is recorded correctly but whose own key differs (e.g. copied by hand)."""
    key = _key(layer_items=7)
    reference = refcache.Reference(run=_run(), peak_mb=1.0)
    refcache.store(key, reference)
    name = refcache.digest(_key())
    other = refcache.digest(key)
    (cache / f"{other}.npz").replace(cache / f"{name}.npz")
    entry = json.loads((cache / f"{name}.json").read_text())
    entry["bundle_sha256"] = refcache._sha256(cache / f"{name}.npz")
    (cache / f"{name}.json").write_text(json.dumps(entry))


def _bundle_missing(cache: Path) -> None:
    next(cache.glob("*.npz")).unlink()


@pytest.mark.parametrize("damage, reason", [
    (_damage_truncate, "sha256 differs"), (_damage_byte, "sha256 differs"), (_damage_entry_json, "unreadable"),
    (_entry_of_another_key, "records another key"), (_bundle_of_another_key, "bundle records another key"),
    (_bundle_missing, "bundle missing"),
])
def test_a_damaged_or_mismatched_entry_is_never_trusted(cache: Path, damage, reason: str) -> None:
    key = _key()
    _stored(key)
    damage(cache)
    said: list[str] = []
    assert refcache.load(key, said.append) is None
    assert len(said) == 1 and reason in said[0] and "running pyannote again" in said[0]
    _stored(key)  # rebuilt: the entry is replaced and trusted again
    assert refcache.load(key) is not None


def test_a_corrupt_bundle_with_a_matching_sha_is_refused(cache: Path) -> None:
    """Even when the recorded sha256 matches (an entry written over by hand), an unreadable bundle is refused."""
    key = _key()
    _stored(key)
    bundle = next(cache.glob("*.npz"))
    bundle.write_bytes(b"PK\x03\x04 not a zip")
    entry = next(cache.glob("*.json"))
    content = json.loads(entry.read_text())
    content["bundle_sha256"] = refcache._sha256(bundle)
    entry.write_text(json.dumps(content))
    said: list[str] = []
    assert refcache.load(key, said.append) is None and "unreadable" in said[0]


def test_an_unwritable_cache_costs_only_the_reuse(cache: Path, capsys) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("a file where the cache directory should be")
    _stored(_key())
    assert "warning: reference cache: cannot write" in capsys.readouterr().err
