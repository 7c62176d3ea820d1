"""Synthetic speech from Debian's speech synthesisers: a catalogue of synthetic speakers and conversations.

Speakers are settings of `espeak-ng` (voice, variant, pitch, rate) and of Festival's diphone
voices (`festvox-kallpc16k`, `festvox-kdlpc16k`: target F0, duration stretch), each optionally
"warped" (resampled as if its vocal tract were shorter or longer). Every setting dimension is
split: the voices that train the fixture's PLDA (`TRAIN_VOICES`) share no espeak-ng language,
no variant, no pitch, no rate, no warp and no Festival voice with the voices of test clips
(`TEST_VOICES`). Everything is deterministic: same voice and text, same samples.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.fsutil import atomic_path, atomic_write

if TYPE_CHECKING:
    from pyannote.core import Annotation


class SynthError(RuntimeError):
    """A speech synthesiser is missing or failed."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    engine: "espeak-ng" or "festival". name: espeak-ng voice (language) or Festival voice
    (`kal_diphone`, `ked_diphone`). variant: espeak-ng variant (`m3`, `f2`, ...; "" for none).
    pitch: espeak-ng `-p` (0-99) or Festival target F0 mean (Hz). rate: espeak-ng `-s` (words per
    minute); Festival stretches durations by 175/rate. warp: resampling factor applied afterwards,
    > 1 raises pitch and formants together and speeds speech up.
    """

    engine: str
    name: str
    variant: str = ""
    pitch: int = 50
    rate: int = 175
    warp: float = 1.0

    @property
    def id(self) -> str:
        """Short unique label, e.g. `espeak-ng:en-us+m3:p45:s155:w1.00`."""
        voice = f"{self.name}+{self.variant}" if self.variant else self.name
        return f"{self.engine}:{voice}:p{self.pitch}:s{self.rate}:w{self.warp:.2f}"


# espeak-ng settings, each split in two disjoint halves (train, test). Variants that do not sound
# like a person (whisper, robots, croak) are left out.
_ESPEAK_LANGUAGES = (
    ("en-us", "en-gb", "en-gb-scotland", "en-029", "de", "fr-fr", "es", "it", "nl", "pl", "sv", "cs", "fi", "ro"),
    ("en-gb-x-rp", "en-us-nyc", "af", "nb", "es-419", "pt-br"),
)
_ESPEAK_VARIANTS = (
    ("m1", "m3", "m5", "m7", "f1", "f3", "f5", "klatt", "klatt3", "adam", "Andy", "Annie", "benjamin", "boris",
     "david", "ed", "edward", "Gene", "iven", "john", "linda", "max", "Michael", "paul", "pedro", "quincy",
     "rob", "robert", "steph", "travis", "victor", "zac", "Alex", "grandpa", "Hugo", "Lee", "norbert", "sandro"),
    ("m2", "m4", "m6", "f2", "f4", "klatt2", "Alicia", "Andrea", "antonio", "aunty", "belinda", "caleb",
     "Denis", "iven2", "Jacky", "marcelo", "Mario", "michel", "miguel", "steph2", "grandma", "shelby"),
)
_ESPEAK_PITCHES = ((25, 45, 65, 85), (35, 55, 75))
_ESPEAK_RATES = ((145, 185), (165,))
_WARPS = ((0.92, 1.0, 1.08), (0.96, 1.04))
_FESTIVAL = (
    ("kal_diphone", (80, 100, 120, 140)),  # (voice, target F0 means in Hz)
    ("ked_diphone", (90, 110, 130)),
)


def _catalogue(split: int, count: int, seed: int) -> tuple[Voice, ...]:
    """`count` distinct espeak-ng speakers drawn from one half of every setting, then the Festival ones."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(_ESPEAK_LANGUAGES[split], _ESPEAK_VARIANTS[split], _ESPEAK_PITCHES[split],
                                    _ESPEAK_RATES[split], _WARPS[split]))
    picked = rng.choice(len(combos), size=count, replace=False)
    espeak = [Voice("espeak-ng", lang, var, pitch, rate, warp) for lang, var, pitch, rate, warp in
              (combos[i] for i in picked)]
    name, pitches = _FESTIVAL[split]
    festival = [Voice("festival", name, "", pitch, rate, warp) for pitch, rate, warp in
                itertools.product(pitches, _ESPEAK_RATES[split], _WARPS[split])]
    # interleave so that any prefix mixes both engines
    step = max(1, len(espeak) // max(1, len(festival)))
    voices: list[Voice] = []
    for i in range(0, len(espeak), step):
        voices += espeak[i:i + step]
        if festival:
            voices.append(festival.pop(0))
    return tuple(voices + festival)


TRAIN_VOICES: tuple[Voice, ...] = _catalogue(0, 400, seed=1)
TEST_VOICES: tuple[Voice, ...] = _catalogue(1, 60, seed=2)

# Words for a small deterministic sentence grammar (no sentence lists copied from anywhere).
_WORDS = {
    "det": ("the", "a", "every", "one", "that", "my", "our", "their"),
    "adj": ("small", "green", "quiet", "heavy", "bright", "old", "narrow", "warm", "curious", "silver",
            "broken", "gentle", "busy", "distant", "yellow", "careful", "tired", "famous", "empty", "rapid"),
    "noun": ("boat", "teacher", "garden", "window", "river", "doctor", "engine", "basket", "village", "letter",
             "farmer", "bridge", "kitchen", "pilot", "market", "candle", "mountain", "painter", "clock", "harbour",
             "student", "forest", "carpet", "singer", "tower", "wagon", "island", "baker", "ladder", "museum"),
    "verb": ("carried", "painted", "followed", "opened", "watched", "repaired", "crossed", "visited", "covered",
             "reached", "pushed", "described", "collected", "noticed", "cleaned", "ordered", "measured", "lifted"),
    "prep": ("near", "behind", "beyond", "under", "across", "beside", "inside", "along", "above", "around"),
    "time": ("this morning", "last winter", "after lunch", "every evening", "before the storm", "on Sunday",
             "at midnight", "in the spring", "twice a week", "yesterday"),
}


def sentences(count: int, seed: int) -> list[str]:
    """`count` deterministic English sentences of 6 to 14 words."""
    rng = np.random.default_rng(seed)

    def pick(kind: str) -> str:
        words = _WORDS[kind]
        return words[rng.integers(len(words))]

    out = []
    for _ in range(count):
        subject = f"{pick('det')} {pick('adj')} {pick('noun')}"
        obj = f"{pick('det')} {pick('noun')}"
        form = rng.integers(3)
        if form == 0:
            text = f"{subject} {pick('verb')} {obj} {pick('prep')} the {pick('noun')}"
        elif form == 1:
            text = f"{pick('time')}, {subject} {pick('verb')} {obj}"
        else:
            text = f"{subject} {pick('verb')} {obj} and {pick('verb')} the {pick('adj')} {pick('noun')}"
        out.append(text[0].upper() + text[1:] + ".")
    return out


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), sr


def _trim(x: np.ndarray, sr: int, floor_db: float = -40.0) -> np.ndarray:
    """Drop leading and trailing 10 ms frames quieter than `floor_db` below the loudest frame."""
    hop = sr // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    energy = np.sqrt(np.mean(frames**2, axis=1) + 1e-12)
    voiced = np.flatnonzero(energy > energy.max() * 10 ** (floor_db / 20))
    if voiced.size == 0:
        return x
    return x[voiced[0] * hop: (voiced[-1] + 1) * hop]


def _finish(x: np.ndarray, sr: int, warp: float) -> np.ndarray:
    """Resample to 16 kHz (playing the audio `warp` times faster), trim silence, normalise to -20 dBFS RMS."""
    import soxr

    source_rate = sr * warp
    if source_rate != SAMPLE_RATE:
        x = soxr.resample(x, source_rate, SAMPLE_RATE, quality="HQ")
    x = _trim(np.asarray(x, dtype=np.float64), SAMPLE_RATE)
    x = x * (0.1 / max(np.sqrt(np.mean(x**2)), 1e-6))
    return x.astype(np.float32)


def _require(program: str, package: str) -> None:
    if shutil.which(program) is None:
        raise SynthError(f"{program} not found: install the Debian package {package} (scripts/install.sh does)")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SynthError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")


def synthesize_many(voice: Voice, texts: list[str]) -> list[np.ndarray]:
    """Speak each text with `voice`: 16 kHz mono float32 waveforms, edge silences trimmed, -20 dBFS RMS."""
    if any('"' in t or "\\" in t for t in texts):
        raise ValueError("texts must not contain double quotes or backslashes")
    out = []
    with tempfile.TemporaryDirectory(prefix="mlx-diar-synth-") as tmp:
        paths = [Path(tmp) / f"{i}.wav" for i in range(len(texts))]
        if voice.engine == "espeak-ng":
            _require("espeak-ng", "espeak-ng")
            name = f"{voice.name}+{voice.variant}" if voice.variant else voice.name
            for text, path in zip(texts, paths):
                _run(["espeak-ng", "-v", name, "-p", str(voice.pitch), "-s", str(voice.rate), "-w", str(path), text],
                     f"espeak-ng {voice.id}")
        elif voice.engine == "festival":
            _require("festival", "festival")
            script = [f"(voice_{voice.name})",
                      f"(set! int_lr_params '((target_f0_mean {voice.pitch}) (target_f0_std {voice.pitch * 0.15:.1f})"
                      " (model_f0_mean 170) (model_f0_std 34)))",
                      f"(Parameter.set 'Duration_Stretch {175 / voice.rate:.4f})"]
            script += [f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)'
                       for text, path in zip(texts, paths)]
            (Path(tmp) / "batch.scm").write_text("\n".join(script) + "\n")
            _run(["festival", "-b", str(Path(tmp) / "batch.scm")], f"festival {voice.id}")
        else:
            raise ValueError(f"unknown engine {voice.engine!r}")
        for path in paths:
            if not path.is_file():
                raise SynthError(f"{voice.id}: the synthesiser wrote no audio")
            x, sr = _read_wav(path)
            out.append(_finish(x, sr, voice.warp))
    return out


def synthesize(voice: Voice, text: str) -> np.ndarray:
    """Speak `text` with `voice`: 16 kHz mono float32, edge silences trimmed, -20 dBFS RMS."""
    return synthesize_many(voice, [text])[0]


def mix(turns: list[tuple[str, np.ndarray]], rng: np.random.Generator, overlap: bool = True,
        uri: str = "mix") -> tuple[np.ndarray, Annotation]:
    """Lay speaker turns end to end: (waveform, `pyannote.core.Annotation`).

    `turns` are (speaker label, speech) in order. Gaps of silence (0.2-1.0 s) and, with `overlap`,
    about one turn in three starting 0.3-0.8 s (at most half the previous turn) before the previous
    one ends; 0.25 s of silence at both ends; a -60 dBFS noise floor; peak at most 0.9.
    """
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=uri)
    starts, cursor = [], 0.25
    for k, (label, speech) in enumerate(turns):
        if k > 0:
            if overlap and rng.random() < 0.35:
                cursor -= min(rng.uniform(0.3, 0.8), 0.5 * len(turns[k - 1][1]) / SAMPLE_RATE)
            else:
                cursor += rng.uniform(0.2, 1.0)
        start = int(round(cursor * SAMPLE_RATE))
        starts.append(start)
        cursor = (start + len(speech)) / SAMPLE_RATE
        annotation[Segment(start / SAMPLE_RATE, cursor), f"turn{k}"] = label
    waveform = (10 ** (-60 / 20) * rng.standard_normal(int(round((cursor + 0.25) * SAMPLE_RATE)))).astype(np.float32)
    for (_, speech), start in zip(turns, starts):
        waveform[start:start + len(speech)] += speech
    waveform /= max(1.0, float(np.abs(waveform).max()) / 0.9)
    return waveform, annotation


def make_conversation(
    voices: list[Voice] | tuple[Voice, ...],
    seed: int,
    duration: float = 12.0,
    overlap: bool = True,
    out: str | Path | None = None,
    uri: str | None = None,
) -> tuple[np.ndarray, Annotation]:
    """A deterministic multi-speaker recording and its reference `pyannote.core.Annotation`.

    Turns of one sentence each (gain varied by +-3 dB), no speaker twice in a row, every voice heard
    at least once, laid out by `mix` (silences, overlaps with `overlap`). Stops adding turns once
    about `duration` seconds are reached. Speakers are labelled `spk<index in voices>`. Each turn is
    trimmed of edge silence, so the reference segments are tight. With `out`, writes `<out>.wav`
    and `<out>.rttm`. Returns (waveform, annotation).
    """
    if len(voices) < 2:
        raise ValueError("a conversation needs at least two voices")
    rng = np.random.default_rng(seed)
    texts = iter(sentences(64, seed=10_000 + seed))
    order: list[int] = [int(i) for i in rng.permutation(len(voices))]
    turns: list[tuple[str, np.ndarray]] = []
    length = 0.0
    while len(turns) < len(order) or length < duration:
        if len(turns) >= len(order):
            order.append(int(rng.choice([i for i in range(len(voices)) if i != order[len(turns) - 1]])))
        speaker = order[len(turns)]
        speech = synthesize(voices[speaker], next(texts)) * np.float32(10 ** (rng.uniform(-3, 3) / 20))
        turns.append((f"spk{speaker}", speech))
        length += len(speech) / SAMPLE_RATE + 0.3
    waveform, annotation = mix(turns, rng, overlap=overlap, uri=uri or f"synthetic-{seed}")
    if out is not None:
        import io

        import soundfile as sf

        out = Path(out)
        with atomic_path(out.with_suffix(".wav")) as tmp:
            sf.write(str(tmp), waveform, SAMPLE_RATE, subtype="FLOAT", format="WAV")
        rttm = io.StringIO()
        annotation.write_rttm(rttm)
        atomic_write(out.with_suffix(".rttm"), rttm.getvalue())
    return waveform, annotation


def split_markdown() -> str:
    """The train/test split of the voice settings, as a Markdown table."""
    def cell(values) -> str:
        return ", ".join(str(v) for v in values)

    rows = [("espeak-ng voices", _ESPEAK_LANGUAGES), ("espeak-ng variants", _ESPEAK_VARIANTS),
            ("espeak-ng pitch (-p)", _ESPEAK_PITCHES), ("rate (words per minute)", _ESPEAK_RATES),
            ("warp (resampling factor)", _WARPS),
            ("Festival voice: target F0 (Hz)", tuple((f"{name}: {cell(f0)}",) for name, f0 in _FESTIVAL))]
    lines = ["| setting | TRAIN_VOICES | TEST_VOICES |", "|---|---|---|"]
    lines += [f"| {name} | {cell(train)} | {cell(test)} |" for name, (train, test) in rows]
    lines.append(f"| speakers in the catalogue | {len(TRAIN_VOICES)} | {len(TEST_VOICES)} |")
    return "\n".join(lines)
