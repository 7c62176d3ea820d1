"""`harness compare` on a corpus: the per-recording comparison as an executor task, and synthetic corpora.

`CompareTask` runs on every worker (in-process, process pool or Ray actor, `mlx_diar.executor`):
it loads pyannote.audio and the converted MLX variants once, then compares one recording at a
time and returns its rows, its scores (pyannote.metrics components, for the corpus report of
`harness.corpus_report`) and its RTTMs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from harness.synth import TEST_VOICES, make_conversation
from mlx_diar.corpus import CorpusEntry
from mlx_diar.executor import RecordingTask, fingerprint, record_name


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


def item_for(entry: CorpusEntry):
    """The `harness.compare.AudioItem` of an entry: waveform, reference (RTTM or protocol) and scored region."""
    from harness.compare import AudioItem
    from harness.metrics import load_uem, reference_for, uem_for
    from mlx_diar.audio import load_audio

    item = AudioItem(path=entry.audio, uri=entry.uri, waveform=load_audio(entry.audio))
    item.reference = entry.annotation if entry.annotation is not None else (
        reference_for(entry.rttm, entry.uri) if entry.rttm is not None else None)
    if entry.annotated is not None:
        item.uem = entry.annotated
    else:
        item.uem = load_uem(entry.uem, entry.uri) if entry.uem is not None else uem_for(item.duration)
    return item


class CompareTask(RecordingTask):
    """`harness compare` on one recording per call; pyannote.audio and every MLX variant loaded once per worker."""

    def __init__(self, checkpoint: str | None, variant_list: list, device: str, layer_items: int,
                 source_fingerprint: str) -> None:
        self.checkpoint, self.variant_list, self.device = checkpoint, variant_list, device
        self.layer_items = layer_items
        from harness.compare import model_cache_key

        # the source checkpoint and, per variant, its conversion key (format and converter versions)
        self.fingerprint = fingerprint({"task": "compare", "device": device, "layer_items": layer_items,
                                        "models": [model_cache_key(source_fingerprint, v) for v in variant_list]})
        self.session = None

    def setup(self, threads: int | None) -> None:
        from harness.compare import WARMUP_SECONDS, open_session
        from harness.paths import sample_audio
        from mlx_diar.audio import load_audio

        if threads:
            import torch

            torch.set_num_threads(threads)
        warmup = load_audio(sample_audio()[0])[: int(WARMUP_SECONDS * 16000)]  # on this worker's machine
        self.session = open_session(self.checkpoint, self.variant_list, self.device, warmup)

    def __call__(self, entry: CorpusEntry) -> dict[str, Any]:
        from harness.compare import compare_recording
        from harness.metrics import components

        item = item_for(entry)
        result = compare_recording(item, self.session, self.layer_items)
        d = result.diarizations
        seconds = {(row.variant): row.seconds for row in result.timing if row.stage == "total"}
        sides: dict[str, Any] = {}
        files = {f"rttm/{record_name(entry.uri)}.pyannote.rttm": d.pyannote.to_rttm()}
        if d.reference is not None:
            files[f"rttm/{record_name(entry.uri)}.reference.rttm"] = d.reference.to_rttm()
        for name, hypothesis in [("pyannote", d.pyannote), *d.mlx.items()]:
            sides[name] = {"seconds": seconds[name], "speakers": len(hypothesis.labels()),
                           "vs_reference": components(d.reference, hypothesis, item.uem) if d.reference else None}
            if name != "pyannote":
                sides[name]["vs_pyannote"] = components(d.pyannote, hypothesis, item.uem)
                files[f"rttm/{record_name(entry.uri)}.{name}.rttm"] = hypothesis.to_rttm()
        return {"duration_s": item.duration,
                "reference_speakers": len(d.reference.labels()) if d.reference is not None else None,
                "uem": [[s.start, s.end] for s in item.uem],
                "sides": sides,
                "rows": {"layers": [dataclasses.asdict(r) for r in result.layers],
                         "pipeline": [dataclasses.asdict(r) for r in result.pipeline],
                         "timing": [dataclasses.asdict(r) for r in result.timing]},
                "files": files}


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
    from pyannote.core import Annotation

    def read(name: str, uri: str):
        path = out / name
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


def compare_corpus(args, out: Path, report_meta) -> int:
    """`harness compare` on a corpus (`--dataset/--manifest/--protocol`, `--workers`, `--ray`): resumable records
    under `--out`, then the usual reports and `corpus.md` over every done recording.

    `report_meta(failures, checkpoint_meta, fixture)` gives the reports' meta (harness.compare).
    Exit status: the number of failed recordings (at most 100), 130 after Ctrl-C, else 1 when
    `--check` finds a missed target, else 0.
    """
    import json
    import sys

    from harness.compare import checkpoint_meta, converted_model, first_failure, source_fingerprint, variants
    from harness.corpus_report import corpus_markdown
    from harness.fixtures import fixture_dir
    from harness.report import write_reports
    from mlx_diar import corpus
    from mlx_diar.executor import run_corpus
    from mlx_diar.fsutil import atomic_write
    from mlx_diar.sources import resolve_pipeline

    entries = corpus.collect(audio=args.audio, dataset=args.dataset, manifest=args.manifest,
                             protocol=args.protocol, subset=args.subset, database=args.database)
    variant_list = variants(args.dtype, args.quantize, args.q_group_size)
    fixture = args.checkpoint is None
    resolved = resolve_pipeline(fixture_dir() if fixture else args.checkpoint)
    source = source_fingerprint(resolved.root)
    for variant in variant_list:  # converted once here: the workers of this machine share the cache
        converted_model(resolved.root, source, variant)
    task = CompareTask(args.checkpoint, variant_list, args.device, args.layer_items, source)
    summary = run_corpus(task, entries, out, workers=args.workers, ray=args.ray, threads=args.threads,
                         redo=args.redo, progress=not args.quiet)
    corpus_md = atomic_write(out / "corpus.md", corpus_markdown(summary.records, summary.line()))
    if any(r["status"] == "done" for r in summary.records):
        rows = records_rows(summary.records)
        failures = first_failure(rows["layers"], rows["pipeline"])
        meta = report_meta(failures, checkpoint_meta(resolved, fixture), fixture)
        write_reports(out, rows["layers"], rows["pipeline"], rows["timing"], meta,
                      records_diarizations(out, summary.records))
        atomic_write(out / "meta.json", json.dumps(meta, indent=1, default=str))
        print(meta["verdict"]["text"])
    else:
        failures = []
    print(summary.line())
    print(corpus_md)
    if summary.failed:
        print(f"error: {summary.failed} of {len(entries)} recordings failed (see {corpus_md})", file=sys.stderr)
    if summary.interrupted:
        print(f"interrupted: run the same command again to resume ({out}/records)", file=sys.stderr)
    if summary.exit_status:
        return summary.exit_status
    if args.check and failures:
        print(f"check failed: {failures[0]}", file=sys.stderr)
        return 1
    return 0
