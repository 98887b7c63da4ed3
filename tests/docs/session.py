"""Run a page's blocks as a reader would: one shell, one home, real servers.

Each page gets a :class:`PageSession`: one ``bash`` that runs its blocks in
order (so a variable, a file or a ``cd`` of one block is there for the
next), a home folder of its own (also the working folder: state, caches
and trained weights do not leak between pages), and the ``deepaas-run``
servers its blocks need, on free ports. What a page shows as
``127.0.0.1:5000`` (or any port it names) is a free port here, mapped
back in what the commands print, so the port is still checked.

The environment is the one the quickstart builds: a virtualenv
(:class:`DocsEnv`) that sees deepaas from this checkout and the bundled
example plugins and no other plugin, even where the test environment has
more installed; ``--devices cpu``, so what the page shows for a machine
without GPUs is what runs everywhere. pip is never run; ``pip install -e
DIR`` of a project the page wrote is done as pip would, for that page.

Servers: a block that names the page's address gets a server if none
runs there, ``deepaas-run`` with no argument (the four examples), or the
one its marker names (``server="--model-name demo"``). A ``deepaas-run``
that a block types stops the page's servers first (the reader's Ctrl-C),
except the block's own ``server=``; it runs in the background, and the
block goes on once it printed its banner or exited. Everything waits on
conditions with deadlines, never on sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from tests.deepaas_run import alive, children, free_port
from tests.docs import compare
from tests.docs.blocks import REPO_ROOT, Block, Command

#: Seconds a command, a server start or a stop may take before the test fails.
COMMAND_TIMEOUT = 90.0
SERVER_TIMEOUT = 60.0
#: The home folder the pages show.
SHOWN_HOME = "/home/you"
#: The checkout of deepaas the pages run, as they show it.
SHOWN_CHECKOUT = "/path/to/deepaas"
#: The port deepaas-run listens on when none is given.
DEFAULT_PORT = 5000

#: Where a page names a port: an address, a flag, a variable, a config key.
_PORT = re.compile(
    r"((?:localhost|127\.0\.0\.1):|--listen-port[= ]|LISTEN_PORT=|listen_port\s*=\s*)"
    r"(\d{2,5})\b"
)
_ADDRESS = re.compile(r"(?:localhost|127\.0\.0\.1):(\d{2,5})\b")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_EXITS_AT_ONCE = frozenset({"--version", "--help", "-h"})
#: pip is never run: an install would write through the docs' virtualenv
#: into the test environment's packages. ``pip install -e DIR`` alone, of
#: a project in the page's folder, is done as pip would do it (see
#: :meth:`PageSession.install_editable`).
_PIP = re.compile(r"(?:^|[\s;&|(])(?:pip3?|python3? -m pip)\s")
_PIP_EDITABLE = re.compile(
    r"\s*(?:\S*/)?(?:pip3?|python3? -m pip) install "
    r"(?P<quiet>(?:-q+ |--quiet )*)(?:-e|--editable) (?P<dir>\S+)\s*(?:#.*)?"
)


# -- the environment -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DocsEnv:
    """A virtualenv made of the test environment's packages, less every
    plugin distribution but the bundled examples of this checkout."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def environ(self, home: Path, port: int) -> dict[str, str]:
        """The environment of a page's shell and servers."""
        venv_bin = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", "").split(os.pathsep)
        path = [p for p in path if p != venv_bin]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DEEPAAS_", "OS_DEFAULT__", "XDG_", "PYTHON", "CUDA_"))
            and k not in ("VIRTUAL_ENV", "COLUMNS", "LINES")
        }
        env.update(
            HOME=str(home),
            PATH=os.pathsep.join([str(self.bin), *path]),
            VIRTUAL_ENV=str(self.root),
            # This checkout's deepaas and examples, whatever is installed.
            PYTHONPATH=os.pathsep.join(
                [str(REPO_ROOT), str(REPO_ROOT / "plugins-example")]
            ),
            PYTHONUNBUFFERED="1",  # output in the order a terminal shows it
            COLUMNS="80",  # argparse wraps --help at the terminal's width
            LC_ALL="C.UTF-8",
            DEEPAAS_DEVICES="cpu",
            no_proxy="127.0.0.1,localhost",  # the servers are here
            NO_PROXY="127.0.0.1,localhost",
            DEEPAAS_LISTEN_PORT=str(port),
        )
        return env


def _site_packages(root: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return root / "lib" / version / "site-packages"


def write_dist_info(site: Path, project: Path) -> str:
    """What an install of the project at ``project`` leaves for
    ``importlib.metadata`` to find in ``site``: its name, version and entry
    points (``[project.entry-points]`` of its pyproject.toml, sorted as
    setuptools writes them: the order models are served in). Its
    ``name-version``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta.get("version", "0")
    info = site / f"{re.sub(r'[-.]+', '_', name)}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    groups = meta.get("entry-points", {})
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n"
            + "".join(f"{k} = {v}\n" for k, v in sorted(points.items()))
            + "\n"
            for group, points in groups.items()
        )
    )
    return f"{name}-{version}"


def build_env(root: Path) -> DocsEnv:
    """Create the docs' virtualenv in ``root`` (a second or so: links, no
    copies, no pip)."""
    venv.EnvBuilder(symlinks=True, with_pip=False, clear=True).create(root)
    target = _site_packages(root)
    source = Path(sys.prefix) / target.relative_to(root)
    hidden: set[str] = set()
    for dist in metadata.distributions(path=[str(source)]):
        if any(ep.group == "deepaas.v2.model" for ep in dist.entry_points):
            hidden.update(Path(str(f)).parts[0] for f in dist.files or ())
    for entry in source.iterdir():
        if entry.name not in hidden and not (target / entry.name).exists():
            (target / entry.name).symlink_to(entry)
    write_dist_info(target, REPO_ROOT / "plugins-example")
    # the commands, run by this environment's Python (pytest: for the tests
    # of a plugin a page scaffolds, where the test environment has it)
    commands = [
        ("deepaas-run", "deepaas.cmd.run:main"),
        ("deepaas-cli", "deepaas.cmd.cli:main"),
    ]
    if importlib.util.find_spec("pytest") is not None:
        commands.append(("pytest", "pytest:console_main"))
    for name, point in commands:
        module, function = point.split(":")
        script = root / "bin" / name
        script.write_text(
            f"#!{root / 'bin' / 'python'}\nimport sys\n"
            f"from {module} import {function}\nsys.exit({function}())\n"
        )
        script.chmod(0o755)
    return DocsEnv(root)


# -- servers -------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    """A ``deepaas-run`` of a page, started by the runner (a marker's
    ``server=``, or ``""``: the default) or typed in a block (``typed``)."""

    pid: int
    port: int
    log: Path
    args: list[str]
    typed: bool = False
    proc: subprocess.Popen[bytes] | None = None
    workers: set[int] = dataclasses.field(default_factory=set)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return alive(self.pid)

    def banner_or_exit(self, timeout: float = SERVER_TIMEOUT) -> bool:
        """Wait until the server printed its whole banner (True) or exited
        (False)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.output()
            if re.search(r"ready in .*\n(?:.*\n)*?  spec: .*\n", text):
                self.workers.update(children(self.pid))
                return True
            if not self.running():
                return False
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"deepaas-run (pid {self.pid}) neither served nor exited "
                    f"in {timeout:.0f}s:\n{text}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (as Ctrl-C would), then whatever is left is killed: the
        server's process group and its workers'."""
        if self.running():
            self.workers.update(children(self.pid))
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + SERVER_TIMEOUT
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
        for pgid in (self.pid, *self.workers):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)


# -- a page ----------------------------------------------------------------------


class BlockFailed(AssertionError):
    """A command printed something else than its page shows."""


class PageSession:
    """A page's shell, home folder and servers (see the module's docstring)."""

    def __init__(self, page: str, blocks: list[Block], env: DocsEnv, tmp: Path):
        self.page = page
        self.blocks = blocks
        self.next = 0  # index of the first block not run yet
        self.home = tmp / "home"
        self.work = tmp / "run"  # scripts, outputs and logs of the runner
        self.home.mkdir(parents=True)
        self.work.mkdir()
        (self.home / ".venv").symlink_to(env.root)
        (self.home / "README.md").write_bytes((REPO_ROOT / "README.md").read_bytes())
        # curl shows no progress meter when its output goes to a terminal,
        # as the pages show it; here it goes to a file
        (self.home / ".curlrc").write_text("no-progress-meter\n")
        shown = {DEFAULT_PORT}
        for block in blocks:
            shown.update(int(m.group(2)) for m in _PORT.finditer(block.content))
        self.ports = {p: free_port() for p in sorted(shown)}
        self.ids: dict[str, str] = {}  # ids shown -> ids printed (learned)
        self.env = env.environ(self.home, self.ports[DEFAULT_PORT])
        self.deepaas_run = str(env.bin / "deepaas-run")
        self.servers: list[Server] = []
        self.typed_here = False  # a block typed a deepaas-run
        self.count = 0
        self.shell_errors = (self.work / "bash.stderr").open("wb")
        self.shell = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.shell_errors,
            cwd=self.home,
            env=self.env,
            start_new_session=True,
        )
        self._send('__docs_rc() { return "$1"; }\n')

    # -- substitution ------------------------------------------------------

    def to_here(self, text: str) -> str:
        """The page's ports and the ids it learned, as they are here."""
        text = _PORT.sub(
            lambda m: m.group(1) + str(self.ports.get(int(m.group(2)), m.group(2))),
            text,
        )
        for shown, real in self.ids.items():
            text = text.replace(shown, real)
        return text

    def as_shown(self, text: str) -> str:
        """Output as the page would show it: its ports, home folder and
        checkout of deepaas."""
        for shown, real in self.ports.items():
            text = re.sub(rf"\b{real}\b", str(shown), text)
        text = text.replace(str(self.home), SHOWN_HOME)
        return text.replace(str(REPO_ROOT), SHOWN_CHECKOUT)

    # -- the shell ----------------------------------------------------------

    def _send(self, line: str) -> None:
        assert self.shell.stdin is not None
        self.shell.stdin.write(line.encode())
        self.shell.stdin.flush()

    def _answer(self, tag: str, timeout: float, what: str) -> int:
        """Read the shell's stdout until its ``tag`` line; the number on it."""
        assert self.shell.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.shell.stdout.fileno()
        buffer = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise BlockFailed(f"timed out after {timeout:.0f}s: {what}")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                err = (self.work / "bash.stderr").read_text(errors="replace")
                raise BlockFailed(f"the shell exited during: {what}\n{err}")
            buffer += chunk
            for line in buffer.decode(errors="replace").split("\n"):
                if line.startswith(tag + " "):
                    return int(line.split()[1])

    def _script(self, text: str) -> Path:
        self.count += 1
        path = self.work / f"cmd-{self.count}.sh"
        path.write_text(text + "\n")
        return path

    def shell_run(self, text: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
        """Run ``text`` in the page's shell: (exit status, stdout + stderr).
        ``$?`` is left as the command left it, for a block's ``echo $?``."""
        editable = _PIP_EDITABLE.fullmatch(text)
        if editable:
            rc, said = self.install_editable(editable.group("dir"))
            return rc, "" if rc == 0 and editable.group("quiet") else said
        if _PIP.search(text):
            raise BlockFailed(
                f"pip is not run by the docs tests: put `{text}` in a block of "
                "its own (it is no deepaas command) or mark the block skipped"
            )
        script = self._script(text)
        out = self.work / f"out-{self.count}.txt"
        self._send(
            f"source {script} > {out} 2>&1 < /dev/null; __docs_s=$?; "
            f'echo "__docs_done__ $__docs_s"; __docs_rc $__docs_s\n'
        )
        rc = self._answer("__docs_done__", timeout, text)
        return rc, out.read_text(errors="replace")

    def install_editable(self, where: str) -> tuple[int, str]:
        """``pip install -e DIR``, as pip does it and without pip: the
        project's metadata and entry points (written into the page's own
        ``~/.docs-site``) and its folder on the path, for the page's shell
        and servers, so that ``deepaas-run --model-name NAME`` serves it."""
        _, cwd = self.shell_run("pwd")
        project = (Path(cwd.strip()) / where).resolve()
        if not (project / "pyproject.toml").is_file():
            return 1, f"ERROR: {where} has no pyproject.toml\n"
        site = self.home / ".docs-site"
        installed = write_dist_info(site, project)
        paths = [
            site,
            project,
            *([project / "src"] if (project / "src").is_dir() else []),
        ]
        added = os.pathsep.join(str(p) for p in paths)
        self.env["PYTHONPATH"] = f"{added}{os.pathsep}{self.env['PYTHONPATH']}"
        self.shell_run(f"export PYTHONPATH={shlex.quote(self.env['PYTHONPATH'])}")
        return 0, f"Successfully installed {installed}\n"

    # -- servers --------------------------------------------------------------

    def _port_of(self, command: str) -> int:
        match = re.search(r"(?:--listen-port[= ]|LISTEN_PORT=)(\d+)", command)
        return int(match.group(1)) if match else self.ports[DEFAULT_PORT]

    def _serving(self, port: int) -> Server | None:
        for server in self.servers:
            if server.port == port and server.running():
                return server
        return None

    def stop_servers(self, keep: Server | None = None) -> None:
        for server in list(self.servers):
            if server is not keep:
                server.stop()
                self.servers.remove(server)

    def ensure_server(self, args: str | None, port: int) -> Server:
        """A server on ``port``: the one running there when ``args`` is
        None, else ``deepaas-run ARGS`` (started unless one runs already,
        typed in a block or not)."""
        current = self._serving(port)
        wanted = shlex.split(self.to_here(args or ""))
        if current is not None and (args is None or current.args == wanted):
            return current
        if current is not None:
            current.stop()
            self.servers.remove(current)
        self.count += 1
        log = self.work / f"server-{self.count}.log"
        env = dict(self.env, DEEPAAS_LISTEN_PORT=str(port))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [self.deepaas_run, *wanted],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                env=env,
                start_new_session=True,
            )
        server = Server(proc.pid, port, log, wanted, proc=proc)
        self.servers.append(server)
        if not server.banner_or_exit():
            raise BlockFailed(f"deepaas-run {args} did not start:\n{server.output()}")
        return server

    def start_typed_server(self, text: str) -> tuple[int, str]:
        """A ``deepaas-run`` a block typed: in the background, in a process
        group of its own; the block goes on once it served or exited."""
        # exec: the shell's pid becomes the server's (after VAR=value words)
        assignments = re.match(r"(?:[A-Za-z_]\w*=\S*\s+)*", text)
        split = assignments.end() if assignments else 0
        script = self._script(f"{text[:split]}exec {text[split:]}")
        log = self.work / f"server-{self.count}.log"
        self._send(
            f"set -m; ( source {script} ) > {log} 2>&1 < /dev/null & "
            f'echo "__docs_pid__ $!"; set +m\n'
        )
        pid = self._answer("__docs_pid__", COMMAND_TIMEOUT, text)
        server = Server(
            pid, self._port_of(text), log, _server_args(text) or [], typed=True
        )
        self.servers.append(server)
        if server.banner_or_exit():
            self._send("__docs_rc 0\n")
            return 0, server.output()
        self._send(
            f'wait {pid}; __docs_s=$?; echo "__docs_done__ $__docs_s"; '
            "__docs_rc $__docs_s\n"
        )
        rc = self._answer("__docs_done__", COMMAND_TIMEOUT, text)
        self.servers.remove(server)
        return rc, server.output()

    # -- blocks ---------------------------------------------------------------

    def run_through(self, block: Block) -> None:
        """Run the page's blocks before ``block`` that have not run (a
        test selected alone gets the state its page built), then it."""
        index = self.blocks.index(block)
        while self.next < index:
            earlier = self.blocks[self.next]
            self.next += 1
            if earlier.action in ("run", "file") and self._available(earlier) is None:
                with contextlib.suppress(BlockFailed):
                    self.run_block(earlier)
        self.next = index + 1
        self.run_block(block)

    @staticmethod
    def _available(block: Block) -> str | None:
        """Why the block cannot run here (a module it needs is missing)."""
        for name in filter(None, block.attrs.get("needs", "").split(",")):
            if importlib.util.find_spec(name.strip()) is None:
                return f"needs {name.strip()}, which is not installed"
        return None

    def run_block(self, block: Block) -> None:
        """Write it (``file=``), or run its commands, each checked against
        the output the page shows; with ``retry=``, again until they all
        match or the time is up (a page's state, polled to a deadline)."""
        attrs = block.attrs
        if "file" in attrs:
            path = self.home / attrs["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.to_here(block.content))
            return
        if "setup" in attrs:
            rc, out = self.shell_run(self.to_here(attrs["setup"]))
            if rc:
                raise BlockFailed(f"setup {attrs['setup']!r} failed ({rc}):\n{out}")
        commands = block.commands()
        deadline = time.monotonic() + float(attrs.get("retry") or 0)
        while True:
            if "server" in attrs:
                self.ensure_server(attrs["server"], self.ports[DEFAULT_PORT])
            self.typed_here = False
            try:
                for command in commands:
                    self._run_command(block, command)
                return
            except BlockFailed:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)  # polling a page's state until it shows what it says

    def _serve_for(self, block: Block, command: Command) -> None:
        """Before a command that names the page's address: a server there.
        The block's ``server=``; else one typed earlier in the block; else
        the page's server if it names one, else whichever serves there
        (typed in an earlier block), else plain ``deepaas-run``."""
        if "server" in block.attrs or self.typed_here:
            return
        for shown in sorted({int(p) for p in _ADDRESS.findall(command.text)}):
            if shown in self.ports:
                self.ensure_server(block.defaults.get("server"), self.ports[shown])

    def _run_command(self, block: Block, command: Command) -> None:
        """Run one command (a Python block is one) as the page shows it,
        its ports made this session's; BlockFailed, naming the page and
        line, when it printed something else than the page shows, or failed
        where the page shows no output."""
        text = self.to_here(command.text)
        if not _is_server(command.text) or block.is_python:
            self._serve_for(block, command)
        if block.is_python:
            source = self.work / f"block-{block.line}.py"
            source.write_text(text)
            rc, out = self.shell_run(f"python3 {source}")
        elif _is_server(command.text):
            if "server" not in block.attrs:
                self.stop_servers()
            else:
                self.stop_servers(keep=self._serving(self.ports[DEFAULT_PORT]))
            rc, out = self.start_typed_server(text)
            self.typed_here = True
        else:
            rc, out = self.shell_run(text)
        shown = self.as_shown(out)
        where = f"{block.page}:{command.line}"
        typed = "python3 <the block>" if block.is_python else command.text
        if not command.expected:
            if rc != 0:
                raise BlockFailed(
                    f"{where}: exit status {rc} (the page shows no output, so the "
                    f"command must succeed)\n$ {typed}\n{shown}"
                )
            return
        mode = block.attrs.get("compare", "")
        if not compare.matches(command.expected, shown, mode):
            raise BlockFailed(
                f"{where}: the output differs from the page"
                f"{' (contains)' if mode else ''}\n$ {typed}\n"
                f"--- the page shows:\n{command.expected}\n"
                f"--- printed (exit status {rc}):\n{shown}"
            )
        self.ids.update(compare.learned_ids(command.expected, out))

    def close(self) -> None:
        self.stop_servers()
        if self.shell.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.shell.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.shell.wait(timeout=10)
        for pipe in (self.shell.stdin, self.shell.stdout, self.shell_errors):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _server_args(text: str) -> list[str] | None:
    """The arguments of a command that starts ``deepaas-run`` to serve
    (not ``--version``); None for any other command."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    if not words or Path(words[0]).name != "deepaas-run":
        return None
    return None if _EXITS_AT_ONCE.intersection(words[1:]) else words[1:]


def _is_server(text: str) -> bool:
    return _server_args(text) is not None


def sessions_by_page(blocks: list[Block]) -> Mapping[str, list[Block]]:
    pages: dict[str, list[Block]] = {}
    for block in blocks:
        pages.setdefault(block.page, []).append(block)
    return pages
