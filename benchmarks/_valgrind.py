"""What the valgrind scripts (instruction_counts.py, cache_counts.py) share: their arguments."""

from __future__ import annotations

import argparse
import shutil

from _contenders import NAMES


def parser(doc: str | None, streams: int) -> argparse.ArgumentParser:
    """The arguments every valgrind script takes; `streams` is the default measured count."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", choices=("chat", "responses"), default="chat")
    parser.add_argument("--contenders", default="raw,engine", help=f"comma-separated, of {', '.join(NAMES)}")
    parser.add_argument("--modes", default="sync", help="comma-separated: sync, async")
    parser.add_argument("--streams", type=int, default=streams)
    parser.add_argument("--jobs", type=int, default=2)
    return parser


def contenders_and_modes(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[str], list[str]]:
    """The checked contenders (raw first, once) and modes; exits with the parser's error otherwise."""
    contenders = [c for c in args.contenders.split(",") if c != "raw"]
    modes = args.modes.split(",")
    unknown = [c for c in contenders if c not in NAMES] + [m for m in modes if m not in ("sync", "async")]
    if unknown:
        parser.error(f"unknown contender or mode {unknown}; contenders: {NAMES}, modes: sync, async")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    return ["raw", *contenders], modes
