"""Where ``deepaas-run`` may write: the state directory and the scratch folder.

On a workstation both are obvious: the user's state directory
(``~/.local/state/deepaas``, by platformdirs, which follows the XDG Base
Directory spec) and the system's temp folder. On HPC and in container
runtimes without root (Apptainer/Singularity, udocker) the image is
read-only and the home may be too (or must not be written: small quotas,
shared between jobs), while the batch system gives the job ``$TMPDIR``
(node-local, removed when the job ends) and sites give users ``$SCRATCH``
(a large shared file system, kept for a while).

So when ``--state-dir`` is not given, the state directory is the first
writable of: the user's state directory, ``$SCRATCH/deepaas/state``, and
``<temp folder>/deepaas-state-<uid>`` (with a warning: trainings recorded
there may not outlive the job). A given ``--state-dir`` must be writable.
The scratch folder's parent is the temp folder (``$TMPDIR``, else ``/tmp``
..., as :func:`tempfile.gettempdir` finds a writable one), else
``$SCRATCH``, else ``<state dir>/tmp``. Nothing writable: one start-up error
that names ``--state-dir``.

Writability is tested by creating a file, not with ``os.access``: root
passes ``access()`` on directories it cannot write through a read-only
mount or an NFS root squash.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Mapping

from deepaas.config import ConfigError

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Places:
    """The directories chosen: both exist and are writable."""

    state_dir: str
    scratch_parent: str


def choose(
    state_dir: str | None,
    env: Mapping[str, str],
    user_state_dir: Callable[[], str] | None = None,
) -> Places:
    """Choose (and create) the state directory and the scratch parent.

    ``state_dir``: ``--state-dir`` as given (None or "" when not); ``env``: the
    environment (``SCRATCH``); ``user_state_dir``: where the user's state
    directory is (platformdirs by default). Raises :class:`ConfigError`.
    """
    scratch = env.get("SCRATCH", "").strip()
    temp = temp_folder()
    if state_dir:
        chosen = os.path.abspath(os.path.expanduser(state_dir))
        problem = _writable(chosen)
        if problem:
            raise ConfigError(
                f"state_dir {chosen!r} is not writable ({problem}): pass a writable "
                "--state-dir (or DEEPAAS_STATE_DIR)"
            )
    else:
        chosen = _first_state_dir(scratch, temp, user_state_dir or _user_state_dir)
    parent = temp
    if parent is None and scratch and not _writable(scratch):
        parent = os.path.abspath(scratch)
    if parent is None:
        parent = os.path.join(chosen, "tmp")
        _writable(parent)  # inside the state dir: creatable
    if parent != temp:
        LOG.warning(
            "no writable temp folder (TMPDIR, /tmp): scratch files in %s", parent
        )
    return Places(chosen, parent)


def _first_state_dir(
    scratch: str, temp: str | None, user_state_dir: Callable[[], str]
) -> str:
    """The first writable candidate; what was wrong with the ones before it
    is logged (nothing, when it is the user's state directory)."""
    candidates: list[tuple[str, Callable[[], str] | None, str]] = [
        ("home", user_state_dir, ""),
        (
            "scratch",
            (lambda: os.path.join(scratch, "deepaas", "state")) if scratch else None,
            "$SCRATCH: not set",
        ),
        (
            "temp",
            (lambda: os.path.join(temp, f"deepaas-state-{os.getuid()}"))
            if temp is not None
            else None,
            "the temp folder: none writable",
        ),
    ]
    tried: list[str] = []
    for what, where, unset in candidates:
        if where is None:
            tried.append(unset)
            continue
        path = os.path.abspath(where())
        problem = _writable(path)
        if problem:
            tried.append(f"{path}: {problem}")
            continue
        if tried:
            LOG.log(
                logging.WARNING if what == "temp" else logging.INFO,
                "state directory: %s%s (not usable: %s; --state-dir to choose)",
                path,
                ", in the temp folder: training records may not outlive the job"
                if what == "temp"
                else "",
                "; ".join(tried),
            )
        return path
    raise ConfigError(
        f"no writable place for the state directory (tried {'; '.join(tried)}): "
        "pass --state-dir DIR (or set DEEPAAS_STATE_DIR, SCRATCH or TMPDIR)"
    )


def _user_state_dir() -> str:
    import platformdirs

    return platformdirs.user_state_dir("deepaas")


def temp_folder() -> str | None:
    """The temp folder Python would use: ``$TMPDIR`` when writable, else the
    first writable of ``/tmp``, ``/var/tmp``, ... (None: none is)."""
    try:
        return tempfile.gettempdir()
    except FileNotFoundError:  # "No usable temporary directory found"
        return None


def _writable(path: str) -> str:
    """Create ``path`` if needed and write a file in it: "" when that
    works, else why not (the reason as the system says it)."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".deepaas-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""
