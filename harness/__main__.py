"""Command line of the harness: `python -m harness compare [...] | profile [...] | memory [...] | fixtures`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        from harness.compare import main as compare

        return compare(argv[1:])
    if argv and argv[0] == "profile":
        from harness.profile import main as profile

        return profile(argv[1:])
    if argv and argv[0] == "memory":
        from harness.memory import main as memory

        return memory(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("compare", help="MLX vs pyannote: layers, DER, wall-clock; writes reports (see compare -h)")
    sub.add_parser("profile", help="per-layer timing of both models, MLX vs torch (see profile -h)")
    sub.add_parser("memory", help="peak RSS of the MLX pipeline on 10/30/60 minutes (see memory -h)")
    sub.add_parser("fixtures", help="build (if needed) the offline fixture pipeline and print its directory")
    args = parser.parse_args(argv)
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
