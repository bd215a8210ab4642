"""host_lease as Ansible runs it: arguments in, JSON out; a refusal fails naming the holder."""

from __future__ import annotations

from ansible_collections.hvmaint.libvirt.plugins.modules.host_lease import main

from .utils import run_module


def test_take_refuse_release(tmp_path):
    path = str(tmp_path / "lease.json")
    taken, code = run_module(main, {"job": "4711", "by": "alice", "operation": "drain", "subject": "hv1",
                                    "path": path, "_ansible_diff": True})
    assert code == 0 and taken["changed"] and taken["lease"]["job"] == "4711"
    assert taken["diff"]["before"] == {"lease": None}
    refused, code = run_module(main, {"job": "4712", "subject": "hv2", "role": "destination", "path": path})
    assert code == 1 and refused["failed"]
    assert "job 4711" in refused["msg"] and "nothing was changed" in refused["msg"]
    assert refused["holder"]["by"] == "alice"
    released, code = run_module(main, {"job": "4711", "state": "absent", "path": path})
    assert code == 0 and released["changed"] and released["lease"] is None


def test_check_mode_and_bad_ttl(tmp_path):
    path = tmp_path / "lease.json"
    checked, code = run_module(main, {"job": "4711", "path": str(path), "_ansible_check_mode": True})
    assert code == 0 and checked["changed"] and not path.exists()
    bad, code = run_module(main, {"job": "4711", "path": str(path), "ttl": 1})
    assert code == 1 and "ttl" in bad["msg"]


def test_release_that_cannot_read_the_host_still_gives_it_back(tmp_path):
    # The roles read each host in the run that gives it back (read_facts): a host whose libvirt cannot be read
    # must not keep the lease, or it would block every other job until the lease lapses.
    path = tmp_path / "lease.json"
    run_module(main, {"job": "4711", "by": "alice", "path": str(path)})
    # libvirt's test driver has no host memory statistics, so reading its facts fails.
    released, code = run_module(main, {"job": "4711", "state": "absent", "path": str(path), "read_facts": True,
                                       "uri": "test:///default"})
    assert code == 0 and released["changed"] and released["lease"] is None and not path.exists()
    assert "cannot read the facts of test:///default" in released["facts_error"]
    assert "hypervisor" not in released


def test_release_reads_nothing_unless_asked(tmp_path):
    path = tmp_path / "lease.json"
    run_module(main, {"job": "4711", "path": str(path)})
    released, code = run_module(main, {"job": "4711", "state": "absent", "path": str(path), "uri": "test:///default"})
    assert code == 0 and released["changed"]
    assert "hypervisor" not in released and "facts_error" not in released
