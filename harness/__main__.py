"""Command line of the harness: `python -m harness compare [...] | fixtures`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        from harness.compare import main as compare

        return compare(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("compare", help="MLX vs pyannote: layers, DER, wall-clock; writes reports (see compare -h)")
    sub.add_parser("fixtures", help="build (if needed) the offline fixture pipeline and print its directory")
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
    if args.command == "fixtures":
        from harness.fixtures import FixtureError, fixture_dir

        try:
            print(fixture_dir())
        except FixtureError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
