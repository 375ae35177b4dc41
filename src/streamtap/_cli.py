"""The `streamtap` command line: every flag also reads a STREAMTAP_* environment variable."""

from __future__ import annotations

import click

from ._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STREAMTAP"})
@click.version_option(__version__, prog_name="streamtap")
def main() -> None:
    """streamtap: observable, resilient OpenAI streaming calls."""
