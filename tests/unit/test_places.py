"""Choosing the state directory and the scratch parent (deepaas.places).

Unwritable places are paths under a regular file: every mkdir there fails
(ENOTDIR), for root too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from deepaas import places
from deepaas.config import ConfigError


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker


def test_the_user_state_dir_first(tmp_path: Path) -> None:
    home_state = tmp_path / "home" / ".local" / "state" / "deepaas"
    chosen = places.choose("", {"SCRATCH": str(tmp_path)}, lambda: str(home_state))
    assert chosen.state_dir == str(home_state)
    assert home_state.is_dir()


def test_scratch_then_the_temp_folder(
    tmp_path: Path, blocked: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="deepaas.places")
    home = lambda: str(blocked / "state")  # noqa: E731
    scratch = tmp_path / "scratch"
    chosen = places.choose("", {"SCRATCH": str(scratch)}, home)
    assert chosen.state_dir == str(scratch / "deepaas" / "state")
    [record] = caplog.records
    assert record.levelno == logging.INFO
    caplog.clear()
    chosen = places.choose("", {"SCRATCH": str(blocked / "scratch")}, home)
    assert Path(chosen.state_dir).parent == Path(places.temp_folder() or "")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "may not outlive the job" in record.getMessage()


def test_nothing_writable_is_one_line_naming_the_flag(
    blocked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(places, "temp_folder", lambda: None)
    with pytest.raises(ConfigError) as info:
        places.choose("", {}, lambda: str(blocked / "state"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no writable place for the state directory (tried ")
    assert f"{blocked}/state: Not a directory" in message
    assert "$SCRATCH: not set" in message
    assert "the temp folder: none writable" in message
    assert message.endswith(
        "pass --state-dir DIR (or set DEEPAAS_STATE_DIR, SCRATCH or TMPDIR)"
    )


def test_without_a_temp_folder_scratch_goes_to_scratch_or_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(places, "temp_folder", lambda: None)
    state = tmp_path / "state"
    chosen = places.choose(str(state), {"SCRATCH": str(tmp_path / "s")})
    assert chosen.scratch_parent == str(tmp_path / "s")
    chosen = places.choose(str(state), {})
    assert chosen.scratch_parent == str(state / "tmp")
    assert (state / "tmp").is_dir()
