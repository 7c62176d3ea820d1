"""Command line: ``python -m mlx_diar doctor | diarize AUDIO... --model M``."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


def doctor() -> int:
    """Print the platform, MLX device and BLAS in use, with a 1024^3 matmul timing."""
    from mlx_diar._blas import active_blas

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
            return cast(text)
        except ValueError:
            pass
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
            raise SystemExit(f"error: --param expects GROUP.NAME=VALUE (e.g. clustering.threshold=0.5), got {item!r}")
        group, key = name.split(".", 1)
        hyper.setdefault(group, {})[key] = _parse_value(value)
    return params, hyper


def diarize(args: argparse.Namespace) -> int:
    """Diarize each file; RTTM to --rttm (written once, at the end) or stdout."""
    import json
    import os
    import tempfile

    from mlx_diar.audio import AudioError, as_waveform
    from mlx_diar.model_io import ModelDirError
    from mlx_diar.pipeline import SpeakerDiarizationPipeline

    params, hyper = _overrides(args)
    try:
        pipeline = SpeakerDiarizationPipeline(model_path=args.model, device=args.device, params=params,
                                              hyper_parameters=hyper)
    except (ModelDirError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.print_params:
        print(json.dumps(pipeline.parameters(), indent=2), file=sys.stderr)
    chunks: list[str] = []
    failed = 0
    for path in args.audio:
        try:
            waveform, uri = as_waveform(path)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        output = pipeline.apply(waveform, uri=uri, num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                                max_speakers=args.max_speakers, progress=_progress(path, len(waveform)))
        annotation = output.exclusive_speaker_diarization if args.exclusive else output.speaker_diarization
        text = annotation.to_rttm()
        if args.rttm is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        chunks.append(text)
    if args.rttm is not None and chunks:
        args.rttm.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=args.rttm.parent, prefix=f".{args.rttm.name}.")
        with os.fdopen(fd, "w") as f:
            f.write("".join(chunks))
        os.replace(tmp, args.rttm)
    return 1 if failed else 0


def _progress(path: Path, num_samples: int):
    """A progress bar on stderr for files longer than a minute (None otherwise)."""
    if num_samples < 60 * 16000 or not sys.stderr.isatty():
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
    parser = argparse.ArgumentParser(prog="python -m mlx_diar")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report MLX device, BLAS in use and versions")
    d = sub.add_parser("diarize", help="speaker diarization with a converted model")
    d.add_argument("audio", nargs="+", type=Path)
    d.add_argument("--model", required=True, type=Path, help="converted 'full' model directory")
    d.add_argument("--rttm", type=Path, default=None, help="write RTTM here (default: stdout)")
    d.add_argument("--exclusive", action="store_true", help="exclusive diarization (no overlapping turns)")
    d.add_argument("--num-speakers", type=int, default=None)
    d.add_argument("--min-speakers", type=int, default=None)
    d.add_argument("--max-speakers", type=int, default=None)
    d.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    d.add_argument("--threshold", type=float, default=None, help="clustering threshold")
    d.add_argument("--fa", type=float, default=None, help="VBx Fa")
    d.add_argument("--fb", type=float, default=None, help="VBx Fb")
    d.add_argument("--min-duration-off", type=float, default=None)
    d.add_argument("--segmentation-batch-size", type=int, default=None)
    d.add_argument("--embedding-batch-size", type=int, default=None)
    d.add_argument("--embedding-mode", choices=("exact", "shared"), default=None,
                   help="exact (default): pyannote's output; shared: embedding trunk once per block of "
                        "chunks, several times faster, not exact (see the harness for its DER cost)")
    d.add_argument("--param", action="append", default=[], metavar="GROUP.NAME=VALUE",
                   help="any pipeline hyper-parameter, e.g. clustering.threshold=0.5")
    d.add_argument("--print-params", action="store_true", help="print the parameters in use to stderr")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "diarize":
        return diarize(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
