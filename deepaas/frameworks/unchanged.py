"""A repository model's files, as the server described them at start-up.

The API process describes each model file once, at start-up (a probe
child, :mod:`deepaas.frameworks.probe`): the routes, the checks of every
request, the OIP metadata and the API documents are made from that
description. A worker loads the file again each time it starts (at
start-up, and after a crash or a recycle). A file replaced under a
running server would then be run by a worker against requests checked for
the old one: every request a 503 (other input names), a 400 or a wrong
answer (other shapes, other weights), while ``/readyz`` said ready.

So the API process records what each model is made of (:func:`record`:
the model file, or every file of a SavedModel directory, its NAME.toml,
present or not, and its labels file) before it describes them, and hands
the record to the model's workers (:data:`ENV`). A worker checks it
(:func:`check`) before it loads anything: files replaced, removed or added
since make the worker fail to start, with a line that names the file and
the fix. Workers that run already keep serving the model they loaded; once
no worker of the model can run, its calls fail at once with that line (a
503) and ``/readyz`` is 503 naming the model and the reason, so a
platform takes the replica out of rotation. Putting the old files back
(the same files: a rename, not a copy) lets the next respawn start;
restarting the server serves the new ones.

A record is each file's size, modification time (ns) and inode: a copy
over the file, an ``mv`` of a new one onto it (an atomic replace) and a
Kubernetes volume's symlink swap all change it; reading the files again
(a hash) would cost a large model's whole size at every worker start.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping

from deepaas.frameworks.base import ModelFileError

#: The worker environment variable that holds the record of its model's
#: files (JSON: path -> stamp), set by the API process for repository
#: models only.
ENV = "DEEPAAS_MODEL_FILES"

Stamp = list[int] | str | None


def _stat(path: str) -> list[int]:
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def stamp(path: str) -> Stamp:
    """What says whether ``path`` changed: None when it does not exist; for
    a directory (a SavedModel), a digest of its files' stamps, so that a
    record stays small whatever their number (an environment variable may
    hold 128 KiB at most)."""
    try:
        if not os.path.isdir(path):
            return _stat(path)
        files = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                files.append([os.path.relpath(full, path), *_stat(full)])
        return hashlib.sha256(json.dumps(files).encode()).hexdigest()
    except FileNotFoundError:
        return None


def record(paths: Iterable[str]) -> str:
    """The record of ``paths`` (the value of :data:`ENV`)."""
    return json.dumps({path: stamp(path) for path in paths})


def check(name: str, environ: Mapping[str, str]) -> None:
    """Raise a :class:`~deepaas.frameworks.ModelFileError` when a file of
    model ``name`` changed since ``environ``'s record was made (none: not
    started by a server, nothing to compare with)."""
    recorded = environ.get(ENV)
    if not recorded:
        return
    for path, then in json.loads(recorded).items():
        now = stamp(path)
        if now == then:
            continue
        what = "was removed" if now is None else "appeared" if then is None else None
        what = what or "was replaced"
        raise ModelFileError(
            path,
            f"{what} since the server started, which serves model {name!r} as "
            "it described it then",
            "restart the server to serve the new files (or put the old ones back)",
        )
