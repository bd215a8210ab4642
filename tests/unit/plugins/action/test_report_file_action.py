"""The report_file action plugin: on the controller it works in its own process (no module start), elsewhere it
runs the module on the host."""

from __future__ import annotations

from unittest import mock

from ansible_collections.hvmaint.libvirt.plugins.action.report_file import ActionModule


def _action(args, transport="local", become=False, environment=None, check_mode=False):
    task = mock.MagicMock(args=args, async_val=0, check_mode=check_mode, environment=environment or [{}],
                          delegate_to="localhost")
    connection = mock.MagicMock(transport=transport)
    play_context = mock.MagicMock(become=become)
    return ActionModule(task, connection, play_context, loader=None, templar=None, shared_loader_obj=None)


def test_makes_the_directory_and_writes_the_file_in_the_controller_process(tmp_path):
    reports = tmp_path / "reports"
    with mock.patch.object(ActionModule, "_execute_module") as execute:
        made = _action({"path": str(reports), "state": "directory"}).run(task_vars={})
        written = _action({"path": str(reports / "drain-hv1.html"), "content": "<html></html>"}).run(task_vars={})
    execute.assert_not_called()
    assert made["changed"] is True and made["path"] == str(reports)
    assert written["changed"] is True and (reports / "drain-hv1.html").read_text() == "<html></html>"


def test_check_mode_writes_nothing(tmp_path):
    result = _action({"path": str(tmp_path / "reports"), "state": "directory"}, check_mode=True).run(task_vars={})
    assert result["changed"] is True and not (tmp_path / "reports").exists()
    result = _action({"path": str(tmp_path / "r.html"), "content": "x"}, check_mode=True).run(task_vars={})
    assert result["changed"] is True and not (tmp_path / "r.html").exists()


def test_bad_input_and_a_directory_that_cannot_be_made_fail_in_process(tmp_path):
    assert "content" in _action({"path": str(tmp_path / "r.html")}).run(task_vars={})["msg"]
    assert "state" in _action({"path": str(tmp_path), "state": "bogus"}).run(task_vars={})["msg"]
    result = _action({"path": "/proc/hvmaint/reports", "state": "directory"}).run(task_vars={})
    assert result["failed"] and result["msg"].startswith("cannot make the report directory /proc/hvmaint/reports")


def test_runs_the_module_on_another_host_with_become_or_with_an_environment(tmp_path):
    args = {"path": str(tmp_path / "reports"), "state": "directory"}
    for action in (_action(args, transport="ssh"), _action(args, become=True),
                   _action(args, environment=[{"TMPDIR": "/srv"}])):
        with mock.patch.object(ActionModule, "_execute_module", return_value={"changed": True}) as run:
            result = action.run(task_vars={})
        run.assert_called_once()
        assert result["changed"] is True
    assert not (tmp_path / "reports").exists()
