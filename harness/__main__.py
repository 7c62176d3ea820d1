"""Command line of the harness: `python -m harness compare [...] | diff BASE HEAD [...] | sensitivity [...] | profile [...] | gpu-check [...] | memory [...] | fixtures | plda [DIR] | reference ... | synth-corpus DIR`."""

from __future__ import annotations

import sys
from pathlib import Path


def _fixture_checkpoint() -> str:
    from harness.fixtures import fixture_dir

    return str(fixture_dir())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        from harness.compare import main as compare

        return compare(argv[1:])
    if argv and argv[0] == "diff":
        from harness.diff import main as diff

        return diff(argv[1:])
    if argv and argv[0] == "sensitivity":
        from harness.compare import sensitivity_main

        return sensitivity_main(argv[1:])
    if argv and argv[0] == "reference":
        from reference.__main__ import main as reference

        return reference(argv[1:], default_checkpoint=_fixture_checkpoint, prog="python -m harness reference")
    if argv and argv[0] == "profile":
        from harness.profile import main as profile

        return profile(argv[1:])
    if argv and argv[0] == "gpu-check":
        from harness.gpu_check import main as gpu_check

        return gpu_check(argv[1:])
    if argv and argv[0] == "memory":
        from harness.memory import main as memory

        return memory(argv[1:])
    from mlx_diar.errors import ArgumentParser

    parser = ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    sub.add_parser("compare", help="MLX vs pyannote: layers, DER, wall-clock; writes reports (see compare -h)")
    sub.add_parser("diff", help="what a change did: two reports (or git revisions) base -> head, parity first, "
                                "speed with significance; writes diff.md and diff.html (see diff -h)")
    sub.add_parser("sensitivity", help="precision-sensitivity map of the model blocks (see sensitivity -h)")
    sub.add_parser("profile", help="per-layer timing of both models, MLX vs torch (see profile -h)")
    sub.add_parser("gpu-check", help="every variant's parity gates and both kernel routes' speed on an MLX GPU "
                                     "(see gpu-check -h)")
    sub.add_parser("memory", help="peak RSS of the MLX pipeline on 10/30/60 minutes (see memory -h)")
    sub.add_parser("reference", help="`python -m reference` with the offline fixture pipeline as default checkpoint")
    sub.add_parser("fixtures", help="build (if needed) the offline fixture pipeline and print its directory")
    p = sub.add_parser("plda", help="measure the fixture pipeline's speaker discrimination and DER "
                                    "(side by side with another pipeline directory when given)")
    p.add_argument("other", type=Path, nargs="?", default=None, help="another pipeline directory to compare")
    synth = sub.add_parser("synth-corpus", help="write a synthetic corpus (audio + RTTM) for corpus runs")
    synth.add_argument("folder")
    synth.add_argument("--count", type=int, default=24)
    synth.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "synth-corpus":
        from harness.corpus import make_corpus

        paths = make_corpus(args.folder, args.count, args.seed)
        print(f"{len(paths)} recordings in {args.folder}")
        return 0

    from harness.fixtures import FixtureError, fixture_dir

    try:
        root = fixture_dir()
    except FixtureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.command == "fixtures":
        print(root)
        return 0
    from harness.plda import comparison_table

    dirs = {"fixture": root} | ({"other": args.other} if args.other else {})
    print(comparison_table(dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
