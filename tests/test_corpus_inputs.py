"""Corpus inputs (mlx_diar.runtime.corpus): folder, JSONL manifest, pyannote.database protocol; validated up front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_diar.runtime import corpus
from mlx_diar.errors import OptionError

RTTM = "SPEAKER {uri} 1 0.500 1.000 <NA> <NA> A <NA> <NA>\nSPEAKER {uri} 1 2.000 0.800 <NA> <NA> B <NA> <NA>\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a.wav (+ .rttm + .uem), b.flac (+ .rttm), c.wav (no reference), notes.txt (ignored)."""
    silence = np.zeros(3 * 16000, dtype=np.float32)
    for name in ("a.wav", "b.flac", "c.wav"):
        sf.write(tmp_path / name, silence, 16000)
    for uri in ("a", "b"):
        (tmp_path / f"{uri}.rttm").write_text(RTTM.format(uri=uri))
    (tmp_path / "a.uem").write_text("a 1 0.000 3.000\n")
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_dataset_pairs_audio_with_same_stem_rttm_and_uem(folder: Path) -> None:
    entries = corpus.collect(dataset=folder)
    assert [(e.uri, e.audio.name) for e in entries] == [("a", "a.wav"), ("b", "b.flac"), ("c", "c.wav")]
    assert entries[0].rttm == folder / "a.rttm" and entries[0].uem == folder / "a.uem"
    assert entries[1].rttm == folder / "b.rttm" and entries[1].uem is None
    assert not entries[2].has_reference


def test_dataset_errors_name_the_folder(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(OptionError, match=r"--dataset .*nowhere: not a directory"):
        corpus.collect(dataset=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError, match="no audio files"):
        corpus.collect(dataset=tmp_path / "empty")
    sf.write(folder / "a.flac", np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(OptionError, match=r"a\.wav: duplicate uri 'a' \(also .*a\.flac\)"):
        corpus.collect(dataset=folder)


def test_manifest_resolves_paths_against_its_folder(folder: Path) -> None:
    manifest = folder / "list.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav", "rttm": "a.rttm", "uem": "a.uem"}) + "\n\n"
                        + json.dumps({"audio": str(folder / "c.wav"), "uri": "third"}) + "\n")
    entries = corpus.collect(manifest=manifest)
    assert [(e.uri, e.audio, e.rttm) for e in entries] == [("a", folder / "a.wav", folder / "a.rttm"),
                                                         ("third", folder / "c.wav", None)]
    assert entries[1].origin == f"{manifest}:3"


@pytest.mark.parametrize("line, message", [
    ('{"audio": "a.wav"', r"list\.jsonl:2: not a JSON object"),
    ('["a.wav"]', r"list\.jsonl:2: expected a JSON object, got list"),
    ('{"rttm": "a.rttm"}', r"list\.jsonl:2: \"audio\" \(a path\) is required"),
    ('{"audio": "a.wav", "speakers": 2}', r"list\.jsonl:2: unknown key\(s\) speakers"),
    ('{"audio": "missing.wav"}', r"list\.jsonl:2: no such audio file .*missing\.wav"),
    ('{"audio": "c.wav", "rttm": "c.rttm"}', r"list\.jsonl:2: no such RTTM file .*c\.rttm"),
    ('{"audio": "b.flac", "uri": "a"}', r"list\.jsonl:2: duplicate uri 'a' \(also .*list\.jsonl:1\)"),
])
def test_manifest_problems_are_one_line_naming_file_and_line(folder: Path, line: str, message: str) -> None:
    manifest = folder / "list.jsonl"
    manifest.write_text(json.dumps({"audio": "a.wav"}) + "\n" + line + "\n")
    with pytest.raises(OptionError, match=message) as error:
        corpus.collect(manifest=manifest)
    assert "\n" not in str(error.value)


def test_every_problem_is_found_before_anything_runs(folder: Path) -> None:
    manifest = folder / "list.jsonl"
    manifest.write_text("\n".join(json.dumps({"audio": f"{n}.wav"}) for n in ("x", "a", "y")) + "\n")
    with pytest.raises(OptionError, match=r"list\.jsonl:1: no such audio file .*x\.wav \(and 1 more problem"):
        corpus.collect(manifest=manifest)


def test_one_input_only(folder: Path) -> None:
    with pytest.raises(OptionError, match="give one input, not --dataset and --protocol"):
        corpus.collect(dataset=folder, protocol="A.SpeakerDiarization.B")


def test_protocol_through_pyannote_database(folder: Path) -> None:
    """A database.yml protocol: audio from `Databases:` (FileFinder), reference and UEM from the protocol."""
    (folder / "test.lst").write_text("a\nb\n")
    (folder / "test.rttm").write_text(RTTM.format(uri="a") + RTTM.format(uri="b"))
    (folder / "test.uem").write_text("a 1 0.0 3.0\nb 1 1.0 3.0\n")
    yml = folder / "database.yml"
    yml.write_text(f"Databases:\n  Tiny: ['{folder}/{{uri}}.wav', '{folder}/{{uri}}.flac']\n"
                   "Protocols:\n  Tiny:\n    SpeakerDiarization:\n      two:\n        scope: file\n        test:\n"
                   "          uri: test.lst\n          annotation: test.rttm\n          annotated: test.uem\n")
    entries = corpus.collect(protocol="Tiny.SpeakerDiarization.two", subset="test", database=yml)
    assert [(e.uri, e.audio.name) for e in entries] == [("a", "a.wav"), ("b", "b.flac")]
    assert entries[1].has_reference and sorted(entries[1].annotation.labels()) == ["A", "B"]
    assert entries[1].annotated.extent().start == 1.0
    (folder / "b.flac").unlink()
    with pytest.raises(OptionError, match=r"--protocol Tiny\.SpeakerDiarization\.two test b: audio not found"):
        corpus.collect(protocol="Tiny.SpeakerDiarization.two", database=yml)
    with pytest.raises(OptionError, match=r"--protocol Tiny\.SpeakerDiarization\.none: not found"):
        corpus.collect(protocol="Tiny.SpeakerDiarization.none", database=yml)
    with pytest.raises(OptionError, match="--subset 'dev': expected one of train, development, test"):
        corpus.collect(protocol="Tiny.SpeakerDiarization.two", subset="dev", database=yml)
    with pytest.raises(OptionError, match=r"--protocol 'Tiny\.two': expected DATABASE\.SpeakerDiarization"):
        corpus.collect(protocol="Tiny.two", database=yml)
