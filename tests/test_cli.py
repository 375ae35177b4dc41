from __future__ import annotations

from click.testing import CliRunner

from streamtap import __version__
from streamtap._cli import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"streamtap, version {__version__}"
