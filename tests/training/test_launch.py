"""Joining a process group a launcher started: torchrun's and Slurm's environment.

The environment is read by :func:`deepaas.training.launch.from_env` (unit
tests, with every malformed case a clear message); the last tests simulate
two nodes on this machine: two tasks, each started with a launcher's
environment and two CPU devices, run one DDP step as one Gloo group of four
ranks (``tests/training/launched.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deepaas.training.launch import Launch, LaunchError, from_env

ROOT = Path(__file__).resolve().parents[2]
SLURM = {
    "SLURM_PROCID": "1",
    "SLURM_NTASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_ID": "1234567",
    "SLURM_JOB_NODELIST": "gpu01,gpu02",
}
TORCHRUN = {
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "gpu01",
    "MASTER_PORT": "29500",
}


def test_no_launcher_no_group() -> None:
    assert from_env({}) is None
    # A Slurm job with one task (a server, or a script run without srun).
    assert from_env({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


def test_torchrun() -> None:
    assert from_env(TORCHRUN) == Launch(3, 4, 1, "gpu01", 29500, "torchrun")
    # torchrun's variables win over Slurm's (torchrun inside an srun task).
    assert from_env({**SLURM, **TORCHRUN}).source == "torchrun"  # type: ignore[union-attr]


def test_slurm_first_node_and_port_from_the_job() -> None:
    launch = from_env(SLURM)
    assert launch == Launch(1, 4, 1, "gpu01", 15000 + 4567, "Slurm")
    assert launch.init_method == "tcp://gpu01:19567"
    assert from_env({**SLURM, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "2222"}) == (
        Launch(1, 4, 1, "10.0.0.5", 2222, "Slurm")
    )
    nodelist = {**SLURM, "SLURM_NODELIST": "gpu07"}
    del nodelist["SLURM_JOB_NODELIST"]
    assert from_env(nodelist).master_addr == "gpu07"  # type: ignore[union-attr]


def test_slurm_compressed_nodelist_through_scontrol(tmp_path: Path) -> None:
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(
        '#!/bin/sh\n[ "$*" = "show hostnames gpu[07-08]" ] && '
        'printf "gpu07\\ngpu08\\n"\n'
    )
    scontrol.chmod(0o755)
    env = {**SLURM, "SLURM_JOB_NODELIST": "gpu[07-08]", "PATH": str(tmp_path)}
    assert from_env(env).master_addr == "gpu07"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SLURM_PROCID": "x"}, "SLURM_PROCID='x' is not a whole number >= 0"),
        ({"SLURM_NTASKS": "0"}, "SLURM_NTASKS='0' is not a whole number >= 1"),
        ({"SLURM_NTASKS": "two"}, "SLURM_NTASKS='two' is not a whole number"),
        ({"SLURM_PROCID": "4"}, "SLURM_PROCID=4 is not below SLURM_NTASKS=4"),
        ({"SLURM_LOCALID": None}, "SLURM_LOCALID is not set (srun sets it"),
        ({"SLURM_LOCALID": "-1"}, "SLURM_LOCALID='-1' is not a whole number"),
        ({"SLURM_JOB_ID": None}, "no usable SLURM_JOB_ID ('')"),
        ({"MASTER_PORT": "99999"}, "MASTER_PORT='99999' is not a TCP port"),
        ({"SLURM_JOB_NODELIST": None}, "SLURM_JOB_NODELIST is not set"),
        (
            {"SLURM_JOB_NODELIST": "gpu[01-02]", "PATH": "/nonexistent"},
            "is a compressed nodelist and scontrol (which expands it) is not on "
            "PATH: export MASTER_ADDR=",
        ),
    ],
)
def test_a_malformed_slurm_environment_says_what_to_set(
    change: dict[str, str | None], message: str
) -> None:
    env = {**SLURM, **{k: v for k, v in change.items() if v is not None}}
    for key in [k for k, v in change.items() if v is None]:
        del env[key]
    with pytest.raises(LaunchError) as info:
        from_env(env)
    assert message in str(info.value)


def test_a_half_set_torchrun_environment_names_what_is_missing() -> None:
    env = {k: v for k, v in TORCHRUN.items() if k not in ("MASTER_ADDR", "LOCAL_RANK")}
    with pytest.raises(LaunchError, match="LOCAL_RANK, MASTER_ADDR not set"):
        from_env(env)
    with pytest.raises(LaunchError, match="RANK=5 is not below WORLD_SIZE=4"):
        from_env({**TORCHRUN, "RANK": "5"})


def test_run_refuses_a_malformed_environment_before_starting_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    from deepaas.training import distributed

    for key, value in {**SLURM, "SLURM_PROCID": "x"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(LaunchError, match="SLURM_PROCID='x'"):
        distributed.run(print, devices=["cpu"])


# --- two nodes, simulated: two tasks of two Gloo ranks each -------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_") and k not in TORCHRUN
    }
    env["PYTHONPATH"] = str(ROOT)
    env["DEEPAAS_DEVICES"] = "cpu,cpu"  # each "node" leases two devices
    return env


def _task_envs(launcher: str, tmp_path: Path) -> list[dict[str, str]]:
    port = str(_free_port())
    envs = []
    for task in (0, 1):
        env = _base_env()
        if launcher == "torchrun":
            env.update(RANK=str(task), WORLD_SIZE="2", LOCAL_RANK="0")
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        else:  # srun -N2 --ntasks-per-node=1, nodelist expanded by scontrol
            scontrol = tmp_path / "scontrol"
            scontrol.write_text('#!/bin/sh\nprintf "127.0.0.1\\n127.0.0.2\\n"\n')
            scontrol.chmod(0o755)
            env.update(SLURM_PROCID=str(task), SLURM_NTASKS="2", SLURM_LOCALID="0")
            env.update(SLURM_JOB_ID="77", SLURM_JOB_NODELIST="node[1-2]")
            env.update(MASTER_PORT=port, PATH=f"{tmp_path}:{env.get('PATH', '')}")
        envs.append(env)
    return envs


@pytest.mark.timeout(180)
@pytest.mark.parametrize("launcher", ["Slurm", "torchrun"])
def test_two_nodes_of_two_ranks_train_as_one_group(
    launcher: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.training.launched"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in _task_envs(launcher, tmp_path)
    ]
    outputs = []
    try:
        for task in tasks:
            out, err = task.communicate(timeout=150)
            assert task.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
                task.wait()

    first, second = outputs
    assert first == second  # each task gets every rank's result
    assert [r["rank"] for r in first] == [0, 1, 2, 3]
    assert {r["world_size"] for r in first} == {4}
    shards = [r["indices"] for r in first]
    assert shards == [[0, 4], [1, 5], [2, 6], [3, 7]]  # disjoint, all 8 items
    assert len({json.dumps(r["initial"]) for r in first}) == 1  # rank 0's weights
    assert len({json.dumps(r["final"]) for r in first}) == 1  # still identical
    assert first[0]["final"] != first[0]["initial"]


def test_a_training_job_is_never_a_task_of_a_group(tmp_path: Path) -> None:
    """deepaas-run inside a batch script with --ntasks=2: its jobs must not
    wait for a second task."""
    from deepaas.training.jobs import JobManager
    from deepaas.training.store import TrainingStore

    manager = JobManager(TrainingStore(str(tmp_path)), {}, env={**SLURM, **TORCHRUN})
    env = manager.scheduler.env
    assert from_env(env) is None
    assert env["SLURM_JOB_ID"] == SLURM["SLURM_JOB_ID"]  # the rest is kept
