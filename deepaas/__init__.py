"""deepaas: serve a scientist's model over HTTP (the DEEPaaS v2 API)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("deepaas")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    __version__ = "3.0.0.dev0"

__all__ = ["__version__"]
