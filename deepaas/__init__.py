"""deepaas: serve a scientist's model over HTTP (the DEEPaaS v2 API)."""

import os as _os
import platform as _platform
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("deepaas")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    __version__ = "3.0.0.dev0"

__all__ = ["__version__", "version_line"]


def version_line() -> str:
    """Which deepaas this is: ``3.0.0 from /path/to/deepaas (Python 3.11.9)``.

    A plugin that requires ``deepaas`` and is installed first pulls DEEPaaS
    2.x from PyPI, whose commands have the same names: the version and the
    folder say which one runs (as ``pip --version`` does).
    """
    where = _os.path.dirname(_os.path.abspath(__file__))
    return f"{__version__} from {where} (Python {_platform.python_version()})"
