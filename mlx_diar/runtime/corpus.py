"""Corpus input: the recordings of a folder, a JSONL manifest or a pyannote.database protocol.

Every source gives the same `CorpusEntry` list (uri, audio path, optional RTTM and UEM paths,
or the reference annotation a protocol provides), validated up front: a missing file, a
duplicate uri or a bad manifest line is one `OptionError` naming the file (and line) before
any recording is processed. Used by `python -m mlx_diar diarize` and `python -m harness compare`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Iterable

from mlx_diar.errors import OptionError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MANIFEST_KEYS = {"audio", "uri", "rttm", "uem"}
SUBSETS = ("train", "development", "test")
MAX_MANIFEST_BYTES = 1 << 30  # a million recordings at ~1 kB a line
MAX_MANIFEST_LINE = 1 << 16  # four long paths and a uri


def _flat(error: BaseException) -> str:
    """An exception as one line: its type and its message with line breaks folded."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    """One recording: where its audio is and, when known, its reference (RTTM path or annotation) and UEM."""

    uri: str
    audio: Path
    rttm: Path | None = None
    uem: Path | None = None
    annotation: Any = None  # pyannote.core.Annotation given by a protocol (instead of `rttm`)
    annotated: Any = None  # pyannote.core.Timeline given by a protocol (instead of `uem`)
    origin: str = ""  # where the entry was declared, for error messages ("manifest.jsonl:3")

    @property
    def has_reference(self) -> bool:
        return self.rttm is not None or self.annotation is not None


def _beside(audio: Path, uri: str | None = None, origin: str = "") -> CorpusEntry:
    """An entry for `audio` with the same-stem .rttm and .uem next to it, when they exist."""
    rttm, uem = audio.with_suffix(".rttm"), audio.with_suffix(".uem")
    return CorpusEntry(uri=uri or audio.stem, audio=audio, rttm=rttm if rttm.is_file() else None,
                       uem=uem if uem.is_file() else None, origin=origin or str(audio))


def from_files(paths: Iterable[str | Path]) -> list[CorpusEntry]:
    """Entries for audio files given one by one (a same-stem .rttm/.uem beside each is used)."""
    return [_beside(Path(p)) for p in paths]


def from_dataset(folder: str | Path) -> list[CorpusEntry]:
    """Entries for every audio file of `folder` (sorted), each with its same-stem .rttm and .uem if present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OptionError(f"--dataset {folder}: not a directory")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not paths:
        raise OptionError(f"--dataset {folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return from_files(paths)


def from_manifest(path: str | Path) -> list[CorpusEntry]:
    """Entries of a JSONL manifest: one object per line with "audio" and optional "uri", "rttm", "uem".

    Relative paths are relative to the manifest's folder; blank lines are skipped; the uri
    defaults to the audio file's stem.
    """
    path = Path(path)
    lines = _manifest_lines(path)
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise OptionError(f"{where}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict):
            raise OptionError(f"{where}: expected a JSON object, got {type(record).__name__}")
        unknown = set(record) - MANIFEST_KEYS
        if unknown:
            raise OptionError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(expected {', '.join(sorted(MANIFEST_KEYS))})")
        if not isinstance(record.get("audio"), str) or not record["audio"]:
            raise OptionError(f"{where}: \"audio\" (a path) is required")
        for key in ("uri", "rttm", "uem"):
            if key in record and not isinstance(record[key], str):
                raise OptionError(f"{where}: \"{key}\" must be a string")

        def resolve(value: str | None) -> Path | None:
            return None if not value else (path.parent / value if not Path(value).is_absolute() else Path(value))

        audio = resolve(record["audio"])
        entries.append(CorpusEntry(uri=record.get("uri") or audio.stem, audio=audio, rttm=resolve(record.get("rttm")),
                                   uem=resolve(record.get("uem")), origin=where))
    if not entries:
        raise OptionError(f"--manifest {path}: no entries")
    return entries


def _manifest_lines(path: Path) -> list[str]:
    """The lines of a manifest: a regular file (not a device or FIFO, which may never end) of at most
    MAX_MANIFEST_BYTES, each line at most MAX_MANIFEST_LINE bytes, UTF-8."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise OptionError(f"--manifest {path}: not a regular file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise OptionError(f"--manifest {path}: {info.st_size} bytes, more than the {MAX_MANIFEST_BYTES} "
                              "allowed; split the corpus")
        lines = []
        with open(path, "rb") as f:
            while line := f.readline(MAX_MANIFEST_LINE + 1):
                if len(line) > MAX_MANIFEST_LINE:
                    raise OptionError(f"{path}:{len(lines) + 1}: line longer than {MAX_MANIFEST_LINE} bytes")
                lines.append(line.decode("utf-8").rstrip("\r\n"))
                if f.tell() > MAX_MANIFEST_BYTES:
                    raise OptionError(f"--manifest {path}: grew past {MAX_MANIFEST_BYTES} bytes while read")
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"--manifest {path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    return lines


def _checked_region(annotated: Any, where: str) -> Any:
    """A protocol's scored region ("annotated"), refused when it is empty or has a segment that starts
    before 0 or does not end after its start: nothing would be scored, and a score over 0 s passes."""
    if annotated is None:
        return None
    segments = list(annotated)
    bad = next((s for s in segments if not (0 <= s.start < s.end)), None)
    if bad is not None or not segments:
        problem = f"segment {bad.start:g}-{bad.end:g} s" if bad is not None else "no segment"
        raise OptionError(f"{where}: annotated (the scored region) has {problem}: nothing could be scored")
    return annotated


# pyannote.database's known-harmless notices: a protocol defined again by `--database` (also found in
# ./database.yml), and its own cropping of the annotation to the annotated region
_PYANNOTE_DATABASE_NOTICES = (r"Replacing existing \S+ protocol", r'Existing precomputed key "annotation" has been')


def from_protocol(name: str, subset: str = "test", database: str | Path | None = None) -> list[CorpusEntry]:
    """Entries of a pyannote.database protocol subset (e.g. "AMI.SpeakerDiarization.only_words", "test").

    `database` is a database.yml to load; otherwise pyannote.database's defaults apply
    (PYANNOTE_DATABASE_CONFIG, ~/.pyannote/database.yml, ./database.yml). Audio paths come from
    the yml's `Databases:` section (pyannote.database.FileFinder); the reference annotation and
    the scored region ("annotated") from the protocol.
    """
    if subset not in SUBSETS:
        raise OptionError(f"--subset {subset!r}: expected one of {', '.join(SUBSETS)}")
    if name.count(".") != 2:
        raise OptionError(f"--protocol {name!r}: expected DATABASE.SpeakerDiarization.PROTOCOL")
    try:
        from pyannote.database import FileFinder, registry
    except ImportError:
        raise OptionError("--protocol needs pyannote.database (pip install pyannote.database)") from None
    with warnings.catch_warnings():
        for message in _PYANNOTE_DATABASE_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=UserWarning, module=r"pyannote\.database")
        if database is not None:
            if not Path(database).is_file():
                raise OptionError(f"--database {database}: no such file")
            try:
                registry.load_database(str(database))
            except Exception as e:  # yaml and registry errors have no common base class
                raise OptionError(f"--database {database}: cannot load ({_flat(e)})") from None
        try:
            protocol = registry.get_protocol(name, preprocessors={"audio": FileFinder()})
        except Exception as e:  # unknown database/task/protocol: KeyError, ValueError, AttributeError
            raise OptionError(f"--protocol {name}: not found in the loaded database.yml files "
                              f"({_flat(e)})") from None
        entries = []
        try:
            for file in getattr(protocol, subset)():
                uri = str(file["uri"])
                try:
                    audio = Path(file["audio"])
                except Exception as e:  # FileFinder: FileNotFoundError/ValueError when the yml has no match
                    raise OptionError(f"--protocol {name} {subset} {uri}: audio not found "
                                      f"({_flat(e)})") from None
                where = f"{name} {subset} {uri}"
                annotated = _checked_region(file["annotated"] if "annotated" in file else None, where)
                entries.append(CorpusEntry(uri=uri, audio=audio, annotated=annotated, origin=where,
                                           annotation=file["annotation"] if "annotation" in file else None))
        except OptionError:
            raise
        except Exception as e:  # missing list files, unreadable RTTM/UEM inside pyannote.database
            raise OptionError(f"--protocol {name} {subset}: cannot read ({_flat(e)})") from None
    if not entries:
        raise OptionError(f"--protocol {name} {subset}: no files")
    return entries


def check_entries(entries: list[CorpusEntry]) -> list[CorpusEntry]:
    """Raise one OptionError listing the first problem (and how many more) of the whole list; else return it."""
    problems = []
    seen: dict[str, str] = {}
    for entry in entries:
        where = entry.origin or str(entry.audio)
        if not entry.audio.is_file():
            problems.append(f"{where}: no such audio file {entry.audio}")
        for kind in ("rttm", "uem"):
            value = getattr(entry, kind)
            if value is not None and not value.is_file():
                problems.append(f"{where}: no such {kind.upper()} file {value}")
        if entry.uri in seen:
            problems.append(f"{where}: duplicate uri {entry.uri!r} (also {seen[entry.uri]})")
        seen.setdefault(entry.uri, where)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise OptionError(problems[0] + more)
    return entries


def collect(audio: list[Path] | None = None, dataset: Path | None = None, manifest: Path | None = None,
            protocol: str | None = None, subset: str = "test", database: Path | None = None) -> list[CorpusEntry]:
    """The validated entries of whichever source is given (audio files, a folder, a manifest or a protocol)."""
    given = [name for name, value in (("audio", audio), ("--dataset", dataset), ("--manifest", manifest),
                                      ("--protocol", protocol)) if value]
    if len(given) > 1:
        raise OptionError(f"give one input, not {' and '.join(given)}")
    if dataset is not None:
        entries = from_dataset(dataset)
    elif manifest is not None:
        entries = from_manifest(manifest)
    elif protocol is not None:
        entries = from_protocol(protocol, subset, database)
    elif audio:
        entries = from_files(audio)
    else:
        raise OptionError("no input: give audio files, --dataset, --manifest or --protocol")
    return check_entries(entries)
