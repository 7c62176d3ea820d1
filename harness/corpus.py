"""Corpus runs of `harness compare`: synthetic corpora, and the report rows read back from the executor's records.

The per-recording task (`harness.compare.CompareTask`) returns each recording's rows, its scores
(pyannote.metrics components, for `harness.corpus_report`) and its RTTMs; the executor
(`mlx_diar.runtime.executor`) commits them as records; `records_rows` and `records_diarizations` turn
the records back into the inputs of `harness.report.write_reports`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.synth import TEST_VOICES, make_conversation
from mlx_diar.runtime.executor import record_name


def make_corpus(folder: str | Path, count: int = 12, seed: int = 0, speakers: tuple[int, ...] = (2, 2, 3),
                min_seconds: float = 4.0, max_seconds: float = 8.0) -> list[Path]:
    """`count` synthetic conversations with their RTTMs in `folder` (`synth<k>.wav` + `synth<k>.rttm`; files
    already there are kept), deterministic. Recording k has `speakers[k % len(speakers)]` test voices, one
    sentence each at least (two voices: 5-9 s; three: 10-13 s), and `min_seconds`-`max_seconds` of speech."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        voices = [TEST_VOICES[int(i)] for i in rng.choice(len(TEST_VOICES), size=speakers[k % len(speakers)],
                                                        replace=False)]
        duration = float(rng.uniform(min_seconds, max_seconds))
        out = folder / f"synth{k:03d}"
        if not (out.with_suffix(".wav").is_file() and out.with_suffix(".rttm").is_file()):
            make_conversation(voices, seed=seed * 1000 + k, duration=duration, out=out, uri=out.name)
        paths.append(out.with_suffix(".wav"))
    return paths


def records_rows(records: list[dict[str, Any]]) -> dict[str, list]:
    """The typed report rows (`harness.rows`) of every done record, in corpus order, plus the corpus rows."""
    from harness.corpus_report import corpus_pipeline_rows
    from harness.rows import LayerRow, PipelineRow, TimingRow

    done = [r for r in records if r.get("status") == "done"]
    rows: dict[str, list] = {"layers": [], "pipeline": [], "timing": []}
    for record in done:
        for key, row_type in (("layers", LayerRow), ("pipeline", PipelineRow), ("timing", TimingRow)):
            rows[key] += [row_type(**row) for row in record["result"]["rows"][key]]
    if len(done) > 1:
        rows["pipeline"] += [PipelineRow(**row) for row in corpus_pipeline_rows(done)]
    return rows


def records_diarizations(out: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """{uri: harness.rows.Diarizations} read back from the RTTMs the records wrote (for report.html)."""
    from harness.metrics import load_rttm
    from harness.rows import Diarizations
    from mlx_diar.runtime.audio import rttm_uri
    from pyannote.core import Annotation

    def read(name: str, uri: str):  # the RTTMs name each recording by its RTTM-safe uri
        path, uri = out / name, rttm_uri(uri)
        return load_rttm(path).get(uri, Annotation(uri=uri)) if path.is_file() else None

    diarizations = {}
    for record in (r for r in records if r.get("status") == "done"):
        uri, stem = record["uri"], f"rttm/{record_name(record['uri'])}"
        sides = [name for name in record["result"]["sides"] if name != "pyannote"]
        diarizations[uri] = Diarizations(duration=record["duration_s"],
                                         pyannote=read(f"{stem}.pyannote.rttm", uri),
                                         reference=read(f"{stem}.reference.rttm", uri),
                                         mlx={name: read(f"{stem}.{name}.rttm", uri) for name in sides})
    return diarizations
