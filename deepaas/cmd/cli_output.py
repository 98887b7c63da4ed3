"""What ``deepaas-cli`` writes: the result (on stdout, or streamed to a file
with ``--deepaas_method_output``) and the errors that end a command with an
exit status (0 done, 1 the model failed, 2 a usage error); training
progress is :mod:`deepaas.cmd.cli_progress`'s."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO

from deepaas.model.v2.results import PredictResult
from deepaas.model.v2.wrapper import JSON_TYPES

PROG = "deepaas-cli"
OUTPUT_OPTION = "--deepaas_method_output"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Ends the command with ``message`` on stderr and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _chunks(result: PredictResult) -> Iterator[bytes]:
    if result.body is not None:
        yield result.body
        return
    assert result.path is not None
    with open(result.path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip() in JSON_TYPES


def _is_text(content_type: str) -> bool:
    return _is_json(content_type) or content_type.startswith("text/")


def emit(result: PredictResult, target: str | None, stdout: IO[str]) -> None:
    if target is not None:
        size = 0
        try:
            with open(target, "wb") as out:
                for chunk in _chunks(result):
                    out.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise CliError(f"cannot write {target!r}: {exc.strerror}") from None
        print(
            f"{PROG}: wrote {size} bytes ({result.content_type}) to {target}",
            file=sys.stderr,
        )
        return
    if not _is_text(result.content_type) and stdout.isatty():
        raise CliError(
            f"the result is {result.content_type}, not text: write it to a file "
            f"with {OUTPUT_OPTION} PATH or redirect stdout",
            EXIT_USAGE,
        )
    stdout.flush()
    binary: IO[bytes] | None = getattr(stdout, "buffer", None)
    last = b""
    for chunk in _chunks(result):
        if binary is not None:
            binary.write(chunk)
        else:
            stdout.write(chunk.decode("utf-8", "replace"))
        last = chunk[-1:] or last
    if _is_json(result.content_type) and last != b"\n":
        if binary is not None:
            binary.write(b"\n")
        else:
            stdout.write("\n")
    if binary is not None:
        binary.flush()
    stdout.flush()


def remove_result(result: PredictResult | None) -> None:
    if result is not None and result.delete and result.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(result.path)
