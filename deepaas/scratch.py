"""The server's scratch directory: uploads and large results live here.

One directory per server process, named after its pid, created when the
server starts and removed when it stops. A server that was killed (SIGKILL,
out of memory) cannot remove its own: the next server removes every scratch
directory whose process is gone, so nothing piles up in the temp folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from deepaas.engine.process import pid_alive

LOG = logging.getLogger(__name__)

PREFIX = "deepaas-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]{{8}}$")


class ScratchDir:
    """A directory path decided now, created by :meth:`create`."""

    def __init__(self, parent: str | None = None) -> None:
        self.parent = Path(parent or tempfile.gettempdir())
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = str(self.parent / name)

    def create(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        sweep_stale(self.parent)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def sweep_stale(parent: Path) -> None:
    """Remove scratch directories left by servers that no longer run."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or pid_alive(int(match.group(1))):
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        LOG.info(
            "removing %s, left by a server that stopped without cleaning up", entry
        )
        shutil.rmtree(entry, ignore_errors=True)
