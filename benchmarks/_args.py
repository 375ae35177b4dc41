"""Checks of the benchmarks' count arguments, each failing with the parser's error naming its flag."""

from __future__ import annotations

import argparse


def counts(parser: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    """`text` as a comma list of whole numbers, each at least 1."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        parser.error(f"--{flag} must be a comma list of whole numbers, got {text!r}")
    for value in values:
        at_least_one(parser, **{flag: value})
    return values


def at_least_one(parser: argparse.ArgumentParser, **values: int) -> None:
    """Each of `values` (flag name: value) at least 1."""
    for flag, value in values.items():
        if value < 1:
            parser.error(f"--{flag} must be at least 1, got {value}")
