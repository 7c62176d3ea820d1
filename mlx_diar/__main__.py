"""Command line: ``python -m mlx_diar doctor | diarize AUDIO... --model M``.

Errors are one line on stderr (`--debug` shows the traceback); see `diarize` for batch semantics.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

from mlx_diar.runtime.audio import AudioWarning, closing_audio, open_audio, rttm_uri
from mlx_diar.errors import USER_ERRORS, ArgumentParser, OptionError, bounded_number, report, warnings_as_lines
from mlx_diar.fsutil import TextOutput, atomic_write, check_output_file, file_stem, writable_dir


def doctor() -> int:
    """Print the platform, MLX device and BLAS in use, with a 1024^3 matmul timing."""
    from mlx_diar.cpu.blas import active_blas

    import mlx.core as mx

    print(f"python    {sys.version.split()[0]} on {platform.system()} {platform.machine()}")
    print(f"mlx       {mx.__version__}; default device {mx.default_device()}")
    print(f"blas      {active_blas()}")
    a = mx.random.normal((1024, 1024), stream=mx.cpu)
    mx.eval(a)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        mx.eval(mx.matmul(a, a, stream=mx.cpu))
        best = min(best, time.perf_counter() - t)
    print(f"matmul    1024^3 float32 on cpu: {best * 1e3:.1f} ms")
    for mod in ("torch", "pyannote.audio"):
        try:
            version = __import__("importlib.metadata").metadata.version(mod.replace(".", "-"))
        except Exception:
            version = "not installed"
        print(f"{mod:<9} {version}")
    return 0


def _parse_value(text: str):
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if not math.isfinite(value):
            raise OptionError(f"--param value {text!r} is not a finite number")
        return value
    return {"true": True, "false": False}.get(text.lower(), text)


def _overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    """Constructor parameters and hyper-parameters given on the command line."""
    params: dict = {}
    hyper: dict = {}
    for flag, key in (("segmentation_batch_size", "segmentation_batch_size"),
                      ("embedding_batch_size", "embedding_batch_size"), ("embedding_mode", "embedding_mode")):
        if getattr(args, flag) is not None:
            params[key] = getattr(args, flag)
    for flag, (group, key) in {"threshold": ("clustering", "threshold"), "fa": ("clustering", "Fa"),
                               "fb": ("clustering", "Fb"),
                               "min_duration_off": ("segmentation", "min_duration_off")}.items():
        if getattr(args, flag) is not None:
            hyper.setdefault(group, {})[key] = getattr(args, flag)
    for item in args.param:
        name, _, value = item.partition("=")
        if not value or "." not in name:
            raise OptionError(f"--param expects GROUP.NAME=VALUE (e.g. clustering.threshold=0.5), got {item!r}")
        group, key = name.split(".", 1)
        hyper.setdefault(group, {})[key] = _parse_value(value)
    return params, hyper


def diarize_one(pipeline, path: Path, uri: str, args: argparse.Namespace) -> str:
    """Diarize one file; returns its RTTM text. Audio warnings (clipping, silence) go to stderr as one line."""
    with warnings_as_lines(AudioWarning):
        waveform = open_audio(path)
    with closing_audio(waveform):
        output = pipeline.apply(waveform, uri=uri, num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                                max_speakers=args.max_speakers, progress=_progress(path, len(waveform)))
    annotation = output.exclusive_speaker_diarization if args.exclusive else output.speaker_diarization
    return annotation.to_rttm()


def diarize(args: argparse.Namespace) -> int:
    """Diarize each file, writing its RTTM as soon as it is ready; a failed file does not stop the others.

    Options and output paths are checked before any inference. `--rttm` (`fsutil.TextOutput`) is a
    regular file rewritten atomically after each file with every result so far (a symlink's target is
    rewritten, the link kept), or `-`, a FIFO or a character device written through; an input
    file is never an output. `--rttm-dir DIR` gets `DIR/<uri>.rttm` per recording; without
    either, RTTM goes to stdout. Exit status 1 if any file failed.
    """
    import json

    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline, set_num_speakers

    try:
        set_num_speakers(args.num_speakers, args.min_speakers, args.max_speakers)
        params, hyper = _overrides(args)
        if args.rttm_dir is not None:
            writable_dir(args.rttm_dir, f"--rttm-dir {args.rttm_dir}")
        if args.dataset or args.manifest or args.protocol or args.workers or args.ray or not args.audio:
            return diarize_corpus(args, params, hyper)
        output = TextOutput(args.rttm if args.rttm is not None else "-", "--rttm", inputs=args.audio)
        from mlx_diar.conversion.hub import resolve_model

        # outputs checked first: a pyannote pipeline is converted (once, then cached) only for a run that can write
        pipeline = SpeakerDiarizationPipeline(model_path=resolve_model(args.model), device=args.device,
                                              params=params, hyper_parameters=hyper, kernels=args.kernels,
                                              compute=args.compute)
    except (*USER_ERRORS, ValueError, RuntimeError) as e:  # ValueError/RuntimeError: parameters, device
        return report(e, args.debug)
    if args.print_params:
        print(json.dumps(pipeline.parameters(), indent=2), file=sys.stderr)
    taken: set[str] = set()
    failed = 0
    with output:
        for path in args.audio:
            uri = rttm_uri(path.stem, taken)
            try:
                text = diarize_one(pipeline, path, uri, args)
                if args.rttm_dir is not None:
                    atomic_write(check_output_file(args.rttm_dir / f"{file_stem(uri)}.rttm", args.audio), text)
                if args.rttm is not None or args.rttm_dir is None:
                    output.add(text)
            except Exception as e:  # one bad file: one line, the others go on
                failed += 1
                report(e, args.debug, context="" if isinstance(e, USER_ERRORS) else f"{path}: {type(e).__name__}: ")
    if failed:
        print(f"error: {failed} of {len(args.audio)} files failed", file=sys.stderr)
    return 1 if failed else 0


def diarize_corpus(args: argparse.Namespace, params: dict, hyper: dict) -> int:
    """A corpus (`--dataset/--manifest/--protocol`, or files with `--workers/--ray`) through `mlx_diar.runtime.executor`:
    `--rttm-dir DIR/<uri>.rttm` and resumable records in `DIR/records/`. Exit status: failed recordings."""
    from mlx_diar.runtime import corpus
    from mlx_diar.runtime.executor import DiarizeTask, run_corpus

    entries = corpus.collect(audio=args.audio or None, dataset=args.dataset, manifest=args.manifest,
                             protocol=args.protocol, subset=args.subset, database=args.database)
    if args.rttm_dir is None or args.rttm is not None:
        raise OptionError("a corpus run writes one RTTM per recording and resumable records: give --rttm-dir DIR "
                          "(and no --rttm)")
    speakers = {"num_speakers": args.num_speakers, "min_speakers": args.min_speakers,
                "max_speakers": args.max_speakers}
    task = DiarizeTask(args.model, args.device, params, hyper, args.exclusive, speakers, args.kernels, args.compute)
    summary = run_corpus(task, entries, args.rttm_dir, workers=args.workers, ray=args.ray, threads=args.threads,
                         redo=args.redo)
    print(summary.line(), file=sys.stderr)
    if summary.failed:
        print(f"error: {summary.failed} of {len(entries)} recordings failed (see {args.rttm_dir}/records/)",
              file=sys.stderr)
    return summary.exit_status


def _progress(path: Path, num_samples: int):
    """A progress bar on stderr for files longer than a minute (None otherwise)."""
    from mlx_diar.runtime.audio import SAMPLE_RATE

    if num_samples < 60 * SAMPLE_RATE or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task(f"{Path(path).name}: embeddings", total=None)
    bar.start()

    def update(stage: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()

    return update


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m mlx_diar")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    sub.add_parser("doctor", help="report MLX device, BLAS in use and versions")
    d = sub.add_parser("diarize", help="speaker diarization with a converted model")
    d.add_argument("audio", nargs="*", type=Path)
    d.add_argument("--dataset", type=Path, default=None, help="folder of audio files (docs/corpus.md)")
    d.add_argument("--manifest", type=Path, default=None, help="JSONL: audio, uri, rttm, uem per line")
    d.add_argument("--protocol", default=None, help="pyannote.database DB.SpeakerDiarization.NAME")
    d.add_argument("--subset", default="test", help="protocol subset: train, development, test")
    d.add_argument("--database", type=Path, default=None, help="database.yml for --protocol")
    d.add_argument("--workers", type=bounded_number(1, integer=True), default=None,
                   help="worker processes (default: cores)")
    d.add_argument("--ray", default=None, metavar="auto|ADDRESS", help="run the workers on a Ray cluster")
    d.add_argument("--threads", type=bounded_number(1, integer=True), default=None, help="threads per worker")
    d.add_argument("--redo", action="store_true", help="redo recordings finished by an earlier run")
    d.add_argument("--model", required=True, metavar="SOURCE",
                   help="converted 'full' model directory or its Hugging Face id, or a pyannote pipeline "
                        "(directory or Hugging Face id), converted on first use and cached")
    d.add_argument("--rttm", type=Path, default=None,
                   help="write all RTTM here: a file rewritten (atomically) after each file, or - (stdout), a "
                        "FIFO or a character device written through (default: stdout)")
    d.add_argument("--rttm-dir", type=Path, default=None, help="write DIR/<uri>.rttm for each file")
    d.add_argument("--exclusive", action="store_true", help="exclusive diarization (no overlapping turns)")
    d.add_argument("--num-speakers", type=int, default=None)
    d.add_argument("--min-speakers", type=int, default=None)
    d.add_argument("--max-speakers", type=int, default=None)
    d.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    d.add_argument("--kernels", choices=("auto", "mlx"), default="auto",
                   help="auto (default): the CPU accelerations where they apply; mlx: the MLX layers only, "
                        "as a GPU runs them (docs/performance.md)")
    d.add_argument("--compute", choices=("auto", "native", "float32"), default="auto",
                   help="how a reduced or quantized model computes: native (as stored, what a GPU runs), "
                        "float32 (weights expanded at load), auto (default): float32 on the CPU, native "
                        "elsewhere (docs/precision.md)")
    d.add_argument("--threshold", type=bounded_number(-math.inf), default=None, help="clustering threshold")
    d.add_argument("--fa", type=bounded_number(0, strict=True), default=None, help="VBx Fa (> 0)")
    d.add_argument("--fb", type=bounded_number(0, strict=True), default=None, help="VBx Fb (> 0)")
    d.add_argument("--min-duration-off", type=bounded_number(0), default=None)
    d.add_argument("--segmentation-batch-size", type=bounded_number(1, integer=True), default=None)
    d.add_argument("--embedding-batch-size", type=bounded_number(1, integer=True), default=None)
    d.add_argument("--embedding-mode", choices=("exact", "sparse", "shared"), default=None,
                   help="exact (default): pyannote's output; sparse: the embedding trunk on every other "
                        "chunk, about twice as fast, not exact; shared: the trunk once per block of chunks, "
                        "faster still, less exact (docs/performance.md: their DER cost)")
    d.add_argument("--param", action="append", default=[], metavar="GROUP.NAME=VALUE",
                   help="any pipeline hyper-parameter, e.g. clustering.threshold=0.5")
    d.add_argument("--print-params", action="store_true", help="print the parameters in use to stderr")
    d.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "diarize":
        return diarize(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
