"""outputs.py: a directory is replaced only when it holds nothing but the files its command writes."""

from __future__ import annotations

import pytest
from support import tree_digest

from unified_action.outputs import OutputError, OutputKind, check_output, fresh_tmp, replace_dir

KIND = OutputKind("a test output", r"a\.txt|b_\d+\.png")


def _build(out):
    tmp = fresh_tmp(out, KIND)
    (tmp / "a.txt").write_text("new")
    return tmp


def test_new_empty_and_own_directories_are_replaced(tmp_path):
    for out in (tmp_path / "new", tmp_path / "empty", tmp_path / "ours"):
        if out.name != "new":
            out.mkdir()
        if out.name == "ours":
            (out / "a.txt").write_text("old")
            (out / "b_7.png").write_bytes(b"old")
        replace_dir(_build(out), out, KIND)
        assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "new"
        assert not out.with_name(out.name + ".tmp").exists()


@pytest.mark.parametrize("plant", ["foreign file", "subdirectory", "link", "foreign tmp"])
def test_anything_else_is_refused_before_and_at_the_rename(tmp_path, plant):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    if plant == "foreign file":
        (out / "notes.txt").write_text("mine")
    elif plant == "subdirectory":
        (out / "b_1.png").mkdir()  # our name, but not a file
    elif plant == "link":
        (out / "a.txt").symlink_to(tmp_path / "elsewhere")
    else:
        (tmp_path / "out.tmp").mkdir()
        (tmp_path / "out.tmp" / "keep.me").write_text("mine")
    before = tree_digest(tmp_path)
    with pytest.raises(OutputError, match="nothing was changed") as e:
        fresh_tmp(out, KIND)
    assert "\n" not in str(e.value) and tree_digest(tmp_path) == before
    if plant != "foreign tmp":  # appeared while the command ran: its own tmp goes, the foreign file stays
        tmp = tmp_path / "built.tmp"
        tmp.mkdir()
        with pytest.raises(OutputError, match="changed while this command ran"):
            replace_dir(tmp, out, KIND)
        assert tree_digest(tmp_path) == before


def test_an_input_of_the_job_is_never_the_output(tmp_path):
    data = tmp_path / "runs" / "data"
    data.mkdir(parents=True)
    for out in (data, tmp_path / "runs", tmp_path):
        with pytest.raises(OutputError, match="holds an input of this job"):
            check_output(out, KIND, [data])
    check_output(tmp_path / "runs" / "report", KIND, [data])  # beside it: fine
