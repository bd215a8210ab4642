"""The report's directory and file: made with their modes, written whole, refused with a message before the run
changes anything when they cannot be."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._report_file import (
    ReportFileError,
    make_directory,
    write_file,
)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_makes_the_directory_and_its_parents_0755_whatever_the_umask(tmp_path):
    path = tmp_path / "hvmaint" / "reports"
    old = os.umask(0o077)
    try:
        assert make_directory(str(path)) is True
    finally:
        os.umask(old)
    assert path.is_dir() and mode(path) == 0o755 and mode(path.parent) == 0o755
    assert make_directory(str(path)) is False


def test_an_existing_directory_keeps_its_mode(tmp_path):
    path = tmp_path / "reports"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    assert make_directory(str(path)) is False and mode(path) == 0o700


def test_check_mode_makes_nothing(tmp_path):
    path = tmp_path / "a" / "reports"
    assert make_directory(str(path), check_mode=True) is True and not (tmp_path / "a").exists()


def test_a_directory_that_cannot_be_made_or_written_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ReportFileError, match="cannot make the report directory .*file is not a directory"):
        make_directory(str(blocker / "reports"))
    with pytest.raises(ReportFileError, match="cannot make the report directory /proc/hvmaint/reports"):
        make_directory("/proc/hvmaint/reports")
    # /proc itself exists and no one (root included) may create a file there.
    with pytest.raises(ReportFileError, match="cannot write in the report directory /proc/sys"):
        make_directory("/proc/sys")


def test_writes_the_file_whole_0644_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "drain-hv1.html"
    old = os.umask(0o077)
    try:
        assert write_file(str(path), "<p>web1 → hv2</p>\n") is True
    finally:
        os.umask(old)
    assert path.read_bytes() == "<p>web1 → hv2</p>\n".encode("utf-8") and mode(path) == 0o644
    assert os.listdir(tmp_path) == ["drain-hv1.html"]
    assert write_file(str(path), "<p>web1 → hv2</p>\n") is False
    assert write_file(str(path), "<p>other</p>", check_mode=True) is True
    assert path.read_text(encoding="utf-8") == "<p>web1 → hv2</p>\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")

    def no_rename(source, destination):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(ReportFileError, match="cannot write the report .*report.html: .*Permission denied"):
        write_file(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.html"]
    with pytest.raises(ReportFileError, match="cannot write the report"):
        write_file(str(tmp_path / "missing" / "report.html"), "new")
