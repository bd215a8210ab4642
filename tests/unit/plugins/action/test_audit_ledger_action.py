"""The audit_ledger action plugin: on the controller it appends in its own process (no module start), elsewhere it
runs the module on the host."""

from __future__ import annotations

import json
from unittest import mock

from ansible_collections.hvmaint.libvirt.plugins.action.audit_ledger import ActionModule


def _action(args, transport="local", become=False, environment=None, check_mode=False):
    task = mock.MagicMock(args=args, async_val=0, check_mode=check_mode, environment=environment or [{}],
                          delegate_to="localhost")
    connection = mock.MagicMock(transport=transport)
    play_context = mock.MagicMock(become=become)
    return ActionModule(task, connection, play_context, loader=None, templar=None, shared_loader_obj=None)


def _migration(name):
    return {"name": name, "uuid": "u-" + name, "source": "hv1", "destination": "hv2", "outcome": "migrated",
            "elapsed_s": 1.5, "downtime_ms": 40, "data_bytes": 1024}


def test_appends_in_the_controller_process_when_the_task_runs_on_the_controller(tmp_path):
    path = tmp_path / "ledger" / "ledger.jsonl"
    action = _action({"path": str(path), "migrations": [_migration("web1")], "operation": "drain", "by": "alice"})
    with mock.patch.object(ActionModule, "_execute_module") as execute:
        result = action.run(task_vars={})
    execute.assert_not_called()
    assert result["changed"] is True and result["appended"] == 1
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["vm"], e["destination"], e["operation"], e["by"]) for e in entries] == [("web1", "hv2", "drain", "alice")]


def test_check_mode_and_ready_write_nothing_in_process(tmp_path):
    path = tmp_path / "ledger.jsonl"
    result = _action({"path": str(path), "migrations": [_migration("web1")]}, check_mode=True).run(task_vars={})
    assert result["appended"] == 1 and not path.exists()
    result = _action({"path": str(path), "state": "ready"}, check_mode=True).run(task_vars={})
    assert not result.get("failed") and not path.exists()
    result = _action({"path": str(path), "state": "ready"}).run(task_vars={})
    assert result["changed"] is True and path.exists() and path.read_text() == ""


def test_bad_input_and_unwritable_ledger_fail_in_process(tmp_path):
    assert "state" in _action({"path": str(tmp_path / "l"), "state": "bogus"}).run(task_vars={})["msg"]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _action({"path": str(blocker / "ledger.jsonl"), "state": "ready"}).run(task_vars={})
    assert result["failed"] and result["msg"].startswith("cannot use the audit ledger at %s" % (blocker / "ledger.jsonl"))


def test_runs_the_module_on_another_host_with_become_or_with_an_environment(tmp_path):
    args = {"path": str(tmp_path / "ledger.jsonl"), "state": "ready"}
    for action in (_action(args, transport="ssh"), _action(args, become=True),
                   _action(args, environment=[{"JOB_ID": "7"}])):
        with mock.patch.object(ActionModule, "_execute_module", return_value={"changed": True, "appended": 0}) as run:
            result = action.run(task_vars={})
        run.assert_called_once()
        assert result["appended"] == 0
    assert not (tmp_path / "ledger.jsonl").exists()
