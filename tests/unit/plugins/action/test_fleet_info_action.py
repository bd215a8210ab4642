"""The fleet_info action plugin: each host's reader gets the task's options, the run's own jobs included."""

from __future__ import annotations

from unittest import mock

from ansible_collections.hvmaint.libvirt.plugins.action import fleet_info
from ansible_collections.hvmaint.libvirt.plugins.action.fleet_info import ActionModule


def test_each_host_is_read_with_the_runs_own_jobs_so_a_host_another_job_holds_is_not_waited_for():
    task = mock.MagicMock(args={"uris": {"kvm1": "qemu+tls://kvm1/system", "kvm2": "qemu+tls://kvm2/system"},
                                "migration_wait_retries": 7, "own_jobs": ["drain-kvm9-1"]},
                          async_val=0, check_mode=True)
    action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    calls = []

    def read_over_libvirt(uri, wait_retries=0, own_jobs=()):
        calls.append((uri, wait_retries, list(own_jobs)))
        return {"changed": False, "hypervisor": {"name": uri.split("/")[2]}}

    with mock.patch.object(fleet_info, "read_over_libvirt", read_over_libvirt), \
            mock.patch.object(fleet_info, "LIBVIRT_IMPORT_ERROR", None):
        result = action.run(task_vars={})
    assert result["read"] == ["kvm1", "kvm2"] and result["left_out"] == []
    assert sorted(calls) == [("qemu+tls://kvm1/system", 7, ["drain-kvm9-1"]),
                             ("qemu+tls://kvm2/system", 7, ["drain-kvm9-1"])]
