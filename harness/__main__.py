"""Command line of the harness: `python -m harness fixtures | demo`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fixtures", help="build (if needed) the offline fixture pipeline and print its directory")
    sub.add_parser("demo", help="run the reference pipeline on the bundled sample: turns and DER")
    args = parser.parse_args(argv)
    if args.command == "fixtures":
        from harness.fixtures import FixtureError, fixture_dir

        try:
            print(fixture_dir())
        except FixtureError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "demo":
        from harness.demo import demo

        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
