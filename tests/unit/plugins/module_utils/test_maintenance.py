"""The maintenance mark on a host: set once, kept, updated, cleared; check mode writes nothing."""

from __future__ import annotations

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _maintenance as maintenance


def test_mark_then_mark_again_is_unchanged(tmp_path):
    path = str(tmp_path / "hvmaint" / "maintenance.json")
    first = maintenance.apply_mark("present", "firmware", "alice", path, now="2026-11-25T10:00:00Z")
    assert first["changed"] and first["previous"] is None
    assert maintenance.read_mark(path)["since"] == "2026-11-25T10:00:00Z"
    again = maintenance.apply_mark("present", "firmware", None, path, now="2026-11-25T11:00:00Z")
    assert not again["changed"]
    assert again["maintenance"]["since"] == "2026-11-25T10:00:00Z"
    assert again["maintenance"]["by"] == "alice"


def test_new_reason_updates_the_mark_and_keeps_since(tmp_path):
    path = str(tmp_path / "m.json")
    maintenance.apply_mark("present", "firmware", "alice", path, now="2026-11-25T10:00:00Z")
    updated = maintenance.apply_mark("present", "kernel", "bob", path)
    assert updated["changed"]
    assert maintenance.read_mark(path) == dict(updated["maintenance"], since="2026-11-25T10:00:00Z")
    assert updated["maintenance"]["by"] == "bob"


def test_clear_and_check_mode(tmp_path):
    path = str(tmp_path / "m.json")
    assert maintenance.apply_mark("present", "x", "a", path, check_mode=True)["changed"]
    assert maintenance.read_mark(path) is None
    maintenance.apply_mark("present", "x", "a", path)
    cleared = maintenance.apply_mark("absent", None, None, path, check_mode=True)
    assert cleared["changed"] and maintenance.read_mark(path) is not None
    assert maintenance.apply_mark("absent", None, None, path)["changed"]
    assert maintenance.read_mark(path) is None
    assert not maintenance.apply_mark("absent", None, None, path)["changed"]


def test_unreadable_mark_still_counts_as_maintenance(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{not json")
    mark = maintenance.read_mark(str(path))
    assert mark is not None and "unreadable" in mark["reason"]


def test_the_mark_keeps_the_awx_job_that_set_it(tmp_path):
    path = str(tmp_path / "m.json")
    mark = maintenance.apply_mark("present", "firmware", "alice", path, job="4711")["maintenance"]
    assert (mark["by"], mark["job"]) == ("alice", "4711")
    assert maintenance.read_mark(path)["job"] == "4711"


def test_a_file_that_is_not_a_mark_is_never_removed_or_overwritten(tmp_path):
    others = {"text": "root:x:0:0:root:/root:/bin/bash\n", "json list": "[1, 2]", "other json": '{"a": 1}',
              "damaged mark": "{not json"}
    for label, content in others.items():
        path = tmp_path / label.replace(" ", "-")
        path.write_text(content)
        for state in ("absent", "present"):
            for check_mode in (False, True):
                with pytest.raises(maintenance.NotAMarkError, match="is not a maintenance mark"):
                    maintenance.apply_mark(state, "x", "a", str(path), check_mode=check_mode)
        assert path.read_text() == content, label
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(maintenance.NotAMarkError, match="not a regular file"):
        maintenance.apply_mark("absent", None, None, str(directory))
    target = tmp_path / "target"
    target.write_text('{"since": "x", "reason": "y"}')
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(maintenance.NotAMarkError, match="not a regular file"):
        maintenance.apply_mark("absent", None, None, str(link))
    assert link.is_symlink() and target.exists()
