"""The one atomic, durable write: the target holds the old file or the new one, never half."""

import os
import stat

import pytest

from cdr_pipeline import durable


def test_write_bytes_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.html"
    durable.write_text(target, "first")
    durable.write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_failed_write_keeps_old_content_and_removes_temporary(tmp_path):
    target = tmp_path / "calls.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), durable.writing(target) as out:
        out.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["calls.parquet"]


def test_private_mode_is_applied(tmp_path):
    target = tmp_path / "salt"
    old = os.umask(0o077)
    try:
        durable.write_bytes(target, b"x", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_replace_moves_finished_file(tmp_path):
    source = tmp_path / "staged.parquet"
    source.write_bytes(b"data")
    target = tmp_path / "lake" / "call_date=2026-11-02" / "calls.parquet"
    durable.replace(source, target)
    assert target.read_bytes() == b"data" and not source.exists()
