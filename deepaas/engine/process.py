"""One supervisor for every child process: predict workers and training jobs.

A child is a fresh interpreter (``python -m <module> CONFIG``, never a fork
of the server: CUDA and TensorFlow break under fork) in its own session, so
signalling its process group reaches anything it started. It talks to us
over one end of a Unix socketpair (:class:`Channel`, framed messages from
:mod:`deepaas.engine.protocol`) and gets its device environment before
Python starts (:func:`child_env`).

The parent's side is :func:`spawn`, which returns a :class:`Child`:
``child.exited`` resolves the moment the process ends (a Linux pidfd read
by the event loop; a 50 ms poll elsewhere), :meth:`Child.ended` waits for
its last messages too, and :meth:`Child.terminate` asks it to stop and kills
its group after a grace period. The child's side is :func:`child_main`.

Stopping a child cleanly is a half-close (:meth:`Channel.finish`): it reads
end-of-file, answers what it had already read, exits 0 and closes its end;
we read until then. End-of-file is how a child tells "stop" from "the
parent went away" (a reset or broken connection: it exits ``EXIT_FAILED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, NoReturn

from deepaas.engine import orphans
from deepaas.engine.channel import Channel
from deepaas.engine.devices import Device

LOG = logging.getLogger(__name__)

POLL_S = 0.05  # how often exit is checked where there is no pidfd
LINGER_S = 2.0  # a child that closed its socket gets this long to exit
EOF_WAIT_S = 2.0  # after exit, its last messages get this long to arrive
EXIT_FAILED = 3  # a child's exit status when it could not start its work

OutputSink = Callable[[str], None]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (in our PID namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended, in words a user understands."""
    if returncode is None:
        return "closed its connection"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def device_env(devices: Sequence[Device]) -> dict[str, str]:
    """The variables that point a child at its devices.

    The child sees only its own GPUs, so to the framework they are always
    ``cuda:0``, ``cuda:1``, ...: ``DEEPAAS_DEVICE`` is the first,
    ``DEEPAAS_DEVICES`` all of them (``cpu`` without GPUs). Each GPU is
    named as :meth:`Device.cuda_name` says (its UUID when known: CUDA
    numbers GPUs fastest-first unless told otherwise, NVML by PCI bus; with
    NVML indices we ask CUDA for PCI order, so an index means what
    ``nvidia-smi`` shows).
    """
    gpus = [d for d in devices if d.kind == "cuda"]
    if not gpus:
        return {
            "CUDA_VISIBLE_DEVICES": "",
            "DEEPAAS_DEVICE": "cpu",
            "DEEPAAS_DEVICES": "cpu",
        }
    env = {
        "DEEPAAS_DEVICE": "cuda:0",
        "DEEPAAS_DEVICES": ",".join(f"cuda:{i}" for i in range(len(gpus))),
    }
    names = [d.cuda_name() for d in gpus]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(name for name, _ in names)
    if any(pci_order for _, pci_order in names):
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def child_env(
    base: Mapping[str, str],
    devices: Sequence[Device],
    extra: Mapping[str, str] | None = None,
    extra_path: Sequence[str] = (),
) -> dict[str, str]:
    """A child's whole environment: ``base``, its devices, ``extra``, and
    ``extra_path`` before ``PYTHONPATH`` (tests serve uninstalled plugins)."""
    env = dict(base)
    env.update(device_env(devices))
    env["PYTHONUNBUFFERED"] = "1"
    # A lone surrogate (a client's JSON "\ud800" reaches the plugin as it
    # does in DEEPaaS 2.x) printed by plugin code is written escaped, not a
    # UnicodeEncodeError failing the call or the training that printed it.
    env.setdefault("PYTHONIOENCODING", "utf-8:backslashreplace")
    env.update(extra or {})
    if extra_path:
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([*extra_path, *([old] if old else [])])
    return env


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """What to start: ``python -m module CONFIG``.

    ``config`` is JSON-able; the child finds it (plus ``fd``, its socket,
    and ``parent_pid``) in ``argv[1]``. ``output`` receives the child's
    stdout and stderr: a function called with each line, or the path of a
    file they are appended to.
    """

    module: str
    config: Mapping[str, Any]
    env: Mapping[str, str]
    label: str
    output: OutputSink | str
    cwd: str | None = None
    pass_fds: tuple[int, ...] = ()


class _LineForwarder(asyncio.Protocol):
    """Reads a child's stdout/stderr pipe and hands it on line by line."""

    MAX_LINE = 65536  # a longer line without a newline is handed on in pieces

    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > self.MAX_LINE:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self.sink(line.decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self.sink(self.partial.decode(errors="replace"))
            self.partial = b""


class Child:
    """A running child process: its pid, its channel, its exit."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        channel: Channel,
        label: str,
        orphan_mark: str | None = None,
    ) -> None:
        self.process = process
        self.channel = channel
        self.label = label
        self.orphan_mark = orphan_mark  # in its environment: see engine/orphans
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd: int | None = None
        self._poller: asyncio.TimerHandle | None = None
        self._watch()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def describe_exit(self) -> str:
        return describe_exit(self.process.returncode)

    # -- signals --------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """Signal the child's process group (it and anything it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL its whole group now."""
        self.signal(signal.SIGKILL)

    async def terminate(self, grace: float) -> int:
        """SIGTERM its group, SIGKILL after ``grace`` seconds; its exit status."""
        if not self.exited.done():
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
            except asyncio.TimeoutError:
                self.kill()
        return await self.exited

    async def ended(self) -> int:
        """Wait until it exited and its last messages are read; its status.

        A child that closed its socket but lingers is killed after
        ``LINGER_S``; one whose socket is held open by something it left
        behind gets ``EOF_WAIT_S`` for its last messages, then is cut off.
        Anything left in its process group is killed, and so are the
        processes its plugin started in sessions of their own, found by
        the mark they inherit (see :mod:`deepaas.engine.orphans`).
        """
        closed = self.channel.closed
        await asyncio.wait([self.exited, closed], return_when=asyncio.FIRST_COMPLETED)
        if not self.exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), LINGER_S)
            except asyncio.TimeoutError:
                LOG.warning("%s closed its connection but did not exit", self.label)
                self.kill()
        returncode = await self.exited
        self.kill()  # anything it left behind in its group
        if not closed.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), EOF_WAIT_S)
        self.channel.abort()
        if self.orphan_mark is not None:
            await orphans.sweep(f"{self.label} ended", self.orphan_mark)
        return returncode

    # -- exit watch -----------------------------------------------------------

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._pidfd = pidfd_open(self.process.pid)
            except OSError:
                self._pidfd = None
        if self._pidfd is not None:
            loop.add_reader(self._pidfd, self._check)
        else:
            self._poller = loop.call_later(POLL_S, self._check)

    def _check(self) -> None:
        returncode = self.process.poll()
        if returncode is None:
            if self._pidfd is None:
                loop = asyncio.get_running_loop()
                self._poller = loop.call_later(POLL_S, self._check)
            return
        self._unwatch()
        if not self.exited.done():
            self.exited.set_result(returncode)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None


async def spawn(spec: ChildSpec, on_message: Callable[[Any], None]) -> Child:
    """Start a child; its messages go to ``on_message``.

    Raises :class:`OSError` when the process cannot be started (no memory,
    no such interpreter, too many processes); nothing is left open then.
    """
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    log_file: IO[bytes] | None = None
    try:
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        config = {
            **spec.config,
            "fd": theirs.fileno(),
            "parent_pid": os.getpid(),
        }
        if isinstance(spec.output, str):
            log_file = open(spec.output, "ab")  # noqa: SIM115 - closed below
            stdout: Any = log_file
        else:
            stdout = subprocess.PIPE
        env = dict(spec.env)
        mark = orphans.new_mark()
        if mark is not None:  # it and all below it, forked or exec'd, carry it
            env[orphans.ENV] = mark
        process = subprocess.Popen(
            [sys.executable, "-m", spec.module, json.dumps(config)],
            pass_fds=(theirs.fileno(), *spec.pass_fds),
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signalled whole
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if log_file is not None:
            log_file.close()
    channel = Channel(spec.label, on_message)
    try:
        await loop.create_unix_connection(lambda: channel, sock=ours)
        if process.stdout is not None:
            sink = spec.output
            assert callable(sink)
            await loop.connect_read_pipe(lambda: _LineForwarder(sink), process.stdout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        ours.close()
        process.wait()
        raise
    return Child(process, channel, spec.label, mark)


# -- the child's side -----------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill us if the server dies, so no child is orphaned."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent_pid:  # it died before we asked
        os._exit(EXIT_FAILED)


def child_main(run: Callable[[dict[str, Any], socket.socket], int]) -> NoReturn:
    """The ``main()`` of a child: ``run(config, sock)``, then exit with its status.

    The child dies with its parent, ignores SIGINT (its
    parent decides when it stops: Ctrl-C reaches the whole terminal's
    process group), and exits without interpreter shutdown, so stray plugin
    threads cannot keep it alive, whatever ``run`` raised (its traceback is
    printed first, and the status is ``EXIT_FAILED``). A parent that went
    away (reset or broken socket) ends it quietly, with ``EXIT_FAILED``: a
    parent that wants it to stop sends end-of-file (:meth:`Channel.finish`),
    on which ``run`` returns its own status.
    """
    config = json.loads(sys.argv[1])
    _die_with_parent(config["parent_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=config["fd"])
    os.set_inheritable(sock.fileno(), False)
    code = EXIT_FAILED
    try:
        code = run(config, sock)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the server went away: nothing left to answer
    except BaseException:  # said, then the same exit: no interpreter shutdown
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):  # the plugin may have closed them
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
