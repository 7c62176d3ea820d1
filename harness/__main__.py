"""Command line of the harness: `python -m harness compare [...] | sensitivity [...] | fixtures`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        from harness.compare import main as compare

        return compare(argv[1:])
    if argv and argv[0] == "sensitivity":
        from harness.sensitivity import main as sensitivity

        return sensitivity(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("compare", help="MLX vs pyannote: layers, DER, wall-clock; writes reports (see compare -h)")
    sub.add_parser("sensitivity", help="precision-sensitivity map of the model blocks (see sensitivity -h)")
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
