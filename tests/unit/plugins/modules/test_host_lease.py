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
