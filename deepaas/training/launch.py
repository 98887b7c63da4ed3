"""A process group that a launcher started: torchrun's or Slurm's environment.

When ``torchrun`` or Slurm's ``srun`` starts the training script on several
nodes, each process it starts (a *task*) finds who it is in its
environment; :func:`deepaas.training.distributed.run` then joins their
process group instead of starting one of its own on this host.

torchrun (PyTorch docs, "torchrun (Elastic Launch)", environment variables)
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; all five are needed, and win over Slurm's.

Slurm (``srun`` man page, "OUTPUT ENVIRONMENT VARIABLES") sets
``SLURM_PROCID`` (the task's rank), ``SLURM_NTASKS`` (how many), and
``SLURM_LOCALID`` (its rank on its node). It is a group only with more than
one task: a server, or a script run without ``srun`` inside a batch job,
also sees these variables, with ``SLURM_NTASKS=1``. The master is the first
node of ``SLURM_JOB_NODELIST`` (as the common recipe ``scontrol show
hostnames $SLURM_JOB_NODELIST | head -n 1`` finds it), unless
``MASTER_ADDR`` says otherwise: a plain list (``gpu01,gpu02``) is read
here; a compressed one (``gpu[01-04]``) is expanded by ``scontrol show
hostnames`` (no nodelist parser of our own), and without ``scontrol`` on
``PATH`` it is an error asking for ``MASTER_ADDR``. The port is
``MASTER_PORT``, else 15000 plus the last four digits of ``SLURM_JOB_ID``
(PyTorch Lightning's ``SLURMEnvironment`` convention), so every task of a
job computes the same one and two jobs on a node rarely collide.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Mapping

__all__ = ["Launch", "LaunchError", "from_env", "outside_any_group"]

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_PORT_BASE = 15000
_PLAIN_HOSTS = re.compile(r"[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*")
_SCONTROL_TIMEOUT_S = 30.0


class LaunchError(ValueError):
    """The launcher's environment is incomplete or malformed; the message
    names the variable and what to set."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """This task's place in a process group a launcher started."""

    rank: int  # this task's rank among the tasks
    tasks: int  # how many tasks the launcher started
    local_rank: int  # this task's rank on its node
    master_addr: str
    master_port: int
    source: str  # "torchrun" or "Slurm": said in logs and errors

    @property
    def init_method(self) -> str:
        """Where rank 0's rendezvous store listens."""
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr
        return f"tcp://{host}:{self.master_port}"


def from_env(env: Mapping[str, str]) -> Launch | None:
    """The group ``env`` defines, or None (start ranks on this host).

    Raises :class:`LaunchError` for a malformed one: a half-set torchrun
    environment, a Slurm variable that is not a number, a rank out of range,
    a master that cannot be found.
    """
    if any(name in env for name in ("RANK", "WORLD_SIZE")):
        return _torchrun(env)
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        tasks = _number(env, "SLURM_NTASKS", minimum=1)
        if tasks > 1:
            return _slurm(env, tasks)
    return None


def outside_any_group(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what makes :func:`from_env` see a group.

    For a deepaas training job: one process with its own lease, never a task
    of a launcher's group, even when the server runs inside one
    (``deepaas-run`` in a batch script with ``--ntasks=2`` inherits
    ``SLURM_NTASKS=2`` and ``SLURM_PROCID=0``: its jobs would wait for a
    second task that never comes).
    """
    return {k: v for k, v in env.items() if k not in _GROUP_MARKERS}


_GROUP_MARKERS = ("RANK", "WORLD_SIZE", "SLURM_PROCID")


def _torchrun(env: Mapping[str, str]) -> Launch:
    missing = [name for name in TORCHRUN if not env.get(name, "").strip()]
    if missing:
        raise LaunchError(
            f"torchrun's environment is incomplete: {', '.join(missing)} not set "
            f"(a process group needs all of {', '.join(TORCHRUN)}); start the "
            "script with torchrun, or unset RANK and WORLD_SIZE"
        )
    tasks = _number(env, "WORLD_SIZE", minimum=1)
    rank = _number(env, "RANK", minimum=0)
    _check_rank(rank, "RANK", tasks, "WORLD_SIZE")
    return Launch(
        rank,
        tasks,
        _number(env, "LOCAL_RANK", minimum=0),
        env["MASTER_ADDR"].strip(),
        _port(env, "MASTER_PORT"),
        "torchrun",
    )


def _slurm(env: Mapping[str, str], tasks: int) -> Launch:
    rank = _number(env, "SLURM_PROCID", minimum=0)
    _check_rank(rank, "SLURM_PROCID", tasks, "SLURM_NTASKS")
    if "SLURM_LOCALID" not in env:
        raise LaunchError(
            "Slurm's environment is incomplete: SLURM_LOCALID is not set "
            "(srun sets it for each task); start the tasks with srun"
        )
    local_rank = _number(env, "SLURM_LOCALID", minimum=0)
    if env.get("MASTER_PORT", "").strip():
        port = _port(env, "MASTER_PORT")
    else:
        job = env.get("SLURM_JOB_ID", "").strip()
        if not job.isdigit():
            raise LaunchError(
                f"Slurm's environment has no usable SLURM_JOB_ID ({job!r}) to "
                "choose the rendezvous port from: export MASTER_PORT=<free port>"
            )
        port = SLURM_PORT_BASE + int(job[-4:])
    addr = env.get("MASTER_ADDR", "").strip() or _first_node(env)
    return Launch(rank, tasks, local_rank, addr, port, "Slurm")


def _first_node(env: Mapping[str, str]) -> str:
    """The first host of the job's nodelist: rank 0's, by Slurm's task layout."""
    name = "SLURM_JOB_NODELIST" if "SLURM_JOB_NODELIST" in env else "SLURM_NODELIST"
    nodes = env.get(name, "").strip()
    if not nodes:
        raise LaunchError(
            "Slurm's environment names no node (SLURM_JOB_NODELIST is not set) "
            "to find the rendezvous host: export MASTER_ADDR=<first node>"
        )
    if _PLAIN_HOSTS.fullmatch(nodes):
        return nodes.split(",")[0]
    scontrol = shutil.which("scontrol", path=env.get("PATH"))
    if scontrol is None:
        raise LaunchError(
            f"{name}={nodes!r} is a compressed nodelist and scontrol (which "
            "expands it) is not on PATH: export MASTER_ADDR=$(scontrol show "
            'hostnames "$SLURM_JOB_NODELIST" | head -n 1) before starting'
        )
    try:
        done = subprocess.run(
            [scontrol, "show", "hostnames", nodes],
            capture_output=True,
            text=True,
            timeout=_SCONTROL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(
            f"scontrol show hostnames {nodes!r} failed ({exc}): export MASTER_ADDR"
        ) from None
    hosts = done.stdout.split()
    if done.returncode != 0 or not hosts:
        said = done.stderr.strip() or f"exit code {done.returncode}"
        raise LaunchError(
            f"scontrol show hostnames {nodes!r} gave no host ({said}): export "
            "MASTER_ADDR=<first node>"
        )
    return hosts[0]


def _number(env: Mapping[str, str], name: str, *, minimum: int) -> int:
    value = env.get(name, "").strip()
    if not value.isdigit() or int(value) < minimum:
        raise LaunchError(
            f"{name}={env.get(name, '')!r} is not a whole number >= {minimum}; "
            "it is set by the launcher (torchrun or srun): do not set it by hand"
        )
    return int(value)


def _port(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "").strip()
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise LaunchError(f"{name}={env.get(name, '')!r} is not a TCP port (1-65535)")
    return int(value)


def _check_rank(rank: int, rank_name: str, tasks: int, tasks_name: str) -> None:
    if rank >= tasks:
        raise LaunchError(
            f"{rank_name}={rank} is not below {tasks_name}={tasks}: the launcher's "
            "environment is inconsistent"
        )
