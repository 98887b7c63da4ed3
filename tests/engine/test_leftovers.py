"""Which result files of an ended worker were never sent (see
:mod:`deepaas.engine.leftovers`)."""

from __future__ import annotations

from deepaas.engine import leftovers
from deepaas.model.v2.results import PredictResult


def test_only_the_files_numbered_above_the_last_received_are_removed(tmp_path):
    prefix = leftovers.new_prefix()
    other = leftovers.new_prefix()  # another worker's: left alone
    names = [f"{prefix}1-aa", f"{prefix}2-bb", f"{prefix}3-cc", f"{other}9-dd"]
    names += ["upload-x", f"{prefix}x-zz"]  # not a numbered result file
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = leftovers.remove_unsent(str(tmp_path), prefix, received=1)
    assert sorted(removed) == [str(tmp_path / names[1]), str(tmp_path / names[2])]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([names[0], names[3], "upload-x", f"{prefix}x-zz"])


def test_last_received_reads_the_numbers_of_delivered_files_only():
    prefix = "result-abc-"
    items = [
        (1, True, PredictResult("a/b", path=f"/t/{prefix}4-q", delete=True)),
        (2, True, PredictResult("a/b", path="/own/plugin/file", delete=False)),
        (3, True, PredictResult("a/b", body=b"{}")),
        (4, True, {"output": [1]}),  # an infer call's arrays
        (5, False, ("not", "a", "result")),
    ]
    assert leftovers.last_received(items, prefix, 2) == 4
    assert leftovers.last_received(items, prefix, 7) == 7


def test_a_missing_scratch_dir_removes_nothing(tmp_path):
    assert leftovers.remove_unsent(str(tmp_path / "gone"), "result-x-", 0) == []
