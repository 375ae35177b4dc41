"""streamtap: observable, resilient OpenAI streaming calls."""

from ._version import __version__

__all__ = ["__version__"]
