"""Diarization scoring with pyannote.metrics: DER and JER, collar 0, overlap counted, explicit UEM."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def uem_for(duration: float):
    """The whole file as the scored region."""
    from pyannote.core import Segment, Timeline

    return Timeline([Segment(0.0, duration)])


def load_rttm(path: str | Path) -> dict[str, Any]:
    """{uri: Annotation} from an RTTM file."""
    from pyannote.database.util import load_rttm as _load

    return _load(str(path))


def score(reference, hypothesis, uem) -> dict[str, float]:
    """DER (with its components) and JER of `hypothesis` against `reference` on `uem`.

    Optimal speaker mapping, collar 0, overlapping speech scored (skip_overlap=False).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    details = der(reference, hypothesis, uem=uem, detailed=True)
    jer = JaccardErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis, uem=uem)
    total = details["total"]
    return {
        "der": float(details["diarization error rate"]),
        "jer": float(jer),
        "missed": float(details["missed detection"] / total) if total else 0.0,
        "false_alarm": float(details["false alarm"] / total) if total else 0.0,
        "confusion": float(details["confusion"] / total) if total else 0.0,
        "scored_seconds": float(total),
    }


class Accumulator:
    """Corpus-level DER and JER: pyannote.metrics accumulates every scored file (collar 0, overlap counted)."""

    def __init__(self) -> None:
        from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

        self.der = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        self.jer = JaccardErrorRate(collar=0.0, skip_overlap=False)

    def add(self, reference, hypothesis, uem) -> None:
        self.der(reference, hypothesis, uem=uem)
        self.jer(reference, hypothesis, uem=uem)

    def result(self) -> dict[str, float]:
        return {"der": float(abs(self.der)), "jer": float(abs(self.jer))}


def load_uem(path: str | Path, uri: str):
    """The scored regions of `uri` from a UEM file (`uri channel start end` per line)."""
    from pyannote.core import Segment, Timeline

    segments = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == uri:
            segments.append(Segment(float(parts[2]), float(parts[3])))
    if not segments:
        raise ValueError(f"{path}: no UEM segment for {uri!r}")
    return Timeline(segments)


def components(reference, hypothesis, uem) -> dict[str, dict[str, float]]:
    """pyannote.metrics' DER and JER components of one file (collar 0, overlap counted), JSON-able.

    Summing them over files and applying `corpus_rates` is exactly what an accumulating
    pyannote.metrics object reports for the corpus (not an average of per-file rates).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der = DiarizationErrorRate(collar=0.0, skip_overlap=False).compute_components(reference, hypothesis, uem=uem)
    jer = JaccardErrorRate(collar=0.0, skip_overlap=False).compute_components(reference, hypothesis, uem=uem)
    return {"der": {k: float(v) for k, v in der.items()}, "jer": {k: float(v) for k, v in jer.items()}}


def corpus_rates(parts: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Corpus DER, JER and DER components (as fractions of scored speech) from summed `components`."""
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der_metric, jer_metric = DiarizationErrorRate(), JaccardErrorRate()
    der = {k: sum(p["der"][k] for p in parts) for k in der_metric.components_}
    jer = {k: sum(p["jer"][k] for p in parts) for k in jer_metric.components_}
    total = der["total"]
    return {"der": float(der_metric.compute_metric(der)) if total else float("nan"),
            "jer": float(jer_metric.compute_metric(jer)) if parts else float("nan"),
            "missed": der["missed detection"] / total if total else float("nan"),
            "false_alarm": der["false alarm"] / total if total else float("nan"),
            "confusion": der["confusion"] / total if total else float("nan"),
            "scored_s": total}
