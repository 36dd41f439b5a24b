"""RunLayout's claim of a run directory: a started run is protected, resumed only with its own config."""

import pytest

from robustft.errors import UserError
from robustft.layout import RunLayout


def _started(tmp_path, *, finished_epoch: bool) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    layout.config.write_text("method: full\n")
    if finished_epoch:
        layout.last.write_bytes(b"state")
    return layout


def test_a_new_or_empty_directory_is_claimed_as_a_new_run(tmp_path):
    assert not RunLayout(tmp_path / "absent").claim(False, lambda p: True, print)
    assert not RunLayout(tmp_path).claim(False, lambda p: True, print)


def test_a_config_without_a_finished_epoch_starts_anew(tmp_path):
    said = []
    assert not _started(tmp_path, finished_epoch=False).claim(False, lambda p: False, said.append)
    assert "no finished epoch" in said[0]


def test_a_started_run_needs_resume_and_the_same_config(tmp_path):
    layout = _started(tmp_path, finished_epoch=True)
    assert layout.started()
    with pytest.raises(UserError, match="pass --resume"):
        layout.claim(False, lambda p: True, print)
    with pytest.raises(UserError, match="config differs"):
        layout.claim(True, lambda p: False, print)
    assert layout.claim(True, lambda p: p == layout.config, print)


def test_a_stage_s_finished_epoch_counts_as_started(tmp_path):
    layout = _started(tmp_path, finished_epoch=False)
    (layout.root / "stage1_lp").mkdir()
    (layout.root / "stage1_lp" / "last.pt").write_bytes(b"state")
    assert layout.started()


def test_a_directory_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a robustft run directory"):
        RunLayout(tmp_path).claim(True, lambda p: True, print)
