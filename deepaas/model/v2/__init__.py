"""The DEEPaaS v2 plugin interface (kept import paths: base, wrapper)."""
