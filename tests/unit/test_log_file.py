"""``--log-file`` whose folder goes away (deepaas.log.LogFile)."""

from __future__ import annotations

import logging

from deepaas.log import LogFile


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord(
        "deepaas.test", logging.WARNING, __file__, 1, message, (), None
    )


def test_a_log_file_that_cannot_be_reopened_never_raises(tmp_path, capsys):
    """logrotate with ``olddir``, or a cleaned folder: WatchedFileHandler
    raised FileNotFoundError out of every logging call (requests hung, then
    the event loop's exception handler raised it too and the server died)."""
    folder = tmp_path / "logs"
    folder.mkdir()
    handler = LogFile(str(folder / "deepaas.log"))
    try:
        handler.handle(record("before"))
        folder.rename(tmp_path / "logs.old")
        handler.handle(record("lost"))  # no raise
        handler.handle(record("lost too"))
        folder.mkdir()
        handler.handle(record("after"))
    finally:
        handler.close()
    assert (folder / "deepaas.log").read_text() == "after\n"
    assert (tmp_path / "logs.old" / "deepaas.log").read_text() == "before\n"
    err = capsys.readouterr().err
    assert err.count("cannot write the log file") == 1, err
    assert err.count("writing the log file") == 1, err
