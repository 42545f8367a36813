"""The `fastgen` command line (placeholder until the training library lands: `info`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgen", description="fused kernels for GANs and VAEs")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, build and native backends")
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastgen._info import format_info

        print(format_info())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
