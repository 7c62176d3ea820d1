"""`python -m reference diarize AUDIO --checkpoint P [--rttm OUT] [--bundle B]`: pyannote's own output.

`python -m harness reference diarize AUDIO ...` is the same command with the offline fixture
pipeline as the default checkpoint (the fixture belongs to the harness, which builds on this package).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def main(argv: list[str] | None = None, default_checkpoint: Callable[[], str] | None = None,
         prog: str = "python -m reference") -> int:
    """Run the CLI; `default_checkpoint` supplies `--checkpoint` when it is not given (else it is required)."""
    from mlx_diar.errors import USER_ERRORS, ArgumentParser, report, warnings_as_lines

    parser = ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    d = sub.add_parser("diarize", help="run pyannote.audio's pipeline on one file")
    d.add_argument("audio", type=Path)
    d.add_argument("--checkpoint", default=None, required=default_checkpoint is None,
                   help="HF id or local pipeline directory"
                        + (" (default: the offline fixture pipeline)" if default_checkpoint else ""))
    d.add_argument("--config", default=None,
                   help="another config file of the pipeline directory (a plain file name in it, checked like "
                        "config.yaml)")
    d.add_argument("--rttm", type=Path, default=None,
                   help="write RTTM here: a file (replaced atomically), - (stdout), a FIFO or a character device "
                        "(default: stdout)")
    d.add_argument("--exclusive", action="store_true", help="write the exclusive diarization")
    d.add_argument("--bundle", type=Path, default=None, help="write every stage's results to this .npz")
    d.add_argument("--no-layers", action="store_true", help="do not record per-layer activations")
    d.add_argument("--num-speakers", type=int, default=None)
    d.add_argument("--min-speakers", type=int, default=None)
    d.add_argument("--max-speakers", type=int, default=None)
    d.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)

    from mlx_diar.runtime.audio import AudioWarning, load_audio, rttm_uri
    from mlx_diar.fsutil import TextOutput, check_output_file, writable_dir

    try:  # outputs first: a bad one is refused before any inference
        output = TextOutput(args.rttm if args.rttm is not None else "-", "--rttm", inputs=[args.audio])
        if args.bundle is not None:
            check_output_file(args.bundle, [args.audio])
            writable_dir(args.bundle.parent, f"--bundle {args.bundle}")
        with warnings_as_lines(AudioWarning):
            waveform = load_audio(args.audio)
        checkpoint = args.checkpoint if args.checkpoint is not None else default_checkpoint()
        from reference.runner import load_pipeline, run_reference, save_bundle

        pipeline = load_pipeline(checkpoint, config=args.config)
        run = run_reference(pipeline, waveform, uri=rttm_uri(args.audio.stem), num_speakers=args.num_speakers,
                            min_speakers=args.min_speakers, max_speakers=args.max_speakers,
                            record_layers=not args.no_layers)
        with output:
            output.add(run.rttm(exclusive=args.exclusive))
        if args.bundle:
            save_bundle(run, args.bundle)
    except USER_ERRORS as e:
        return report(e, args.debug)
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in run.meta["timings"].items())
    print(f"[reference] {args.audio.name}: {len(run.meta['labels'])} speakers; {timings}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
