"""A drain and a return while one hypervisor of the fleet cannot be reached, on the lab."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import REPO, recap, run_ansible, where_is

pytestmark = pytest.mark.lab

DRAINED, UNREACHABLE = "hv1", "hv3"


def test_drain_and_return_leave_an_unreachable_host_out_and_succeed(lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    # hv3 cannot be reached: in a copy of the lab's inventory its SSH port is one nobody listens on (connection
    # refused, as for a host whose sshd is down). The lab itself is untouched, so there is nothing to repair.
    with open(os.path.join(lab.state_dir, "inventory.yml"), encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    inventory["all"]["children"]["hypervisors"]["hosts"][UNREACHABLE]["ansible_port"] = 1
    inventory_path = tmp_path / "inventory.yml"
    inventory_path.write_text(yaml.safe_dump(inventory))
    ledger = str(tmp_path / "ledger.jsonl")
    moved_out = [g["name"] for g in lab.config["guests"] if g["host"] == DRAINED]
    on_unreachable = [g["name"] for g in lab.config["guests"] if g["host"] == UNREACHABLE]

    def playbook(name, extra):
        return run_ansible(["ansible-playbook", "-i", str(inventory_path), os.path.join(REPO, "playbooks", name),
                            "-e", json.dumps(extra)], ansible_env, check=False)

    drain = playbook("drain_host.yml", {"drain_host_host": DRAINED, "drain_host_ledger": ledger})
    print(drain.stdout[-3000:])
    # The drain succeeds (exit status 0), names the host it left out and why, and never sends a VM there.
    assert drain.returncode == 0, drain.stdout[-3000:]
    assert "left out: %s (unreachable" % UNREACHABLE in drain.stdout
    assert recap(drain.stdout)[UNREACHABLE]["failed"] == 0
    for name in moved_out:
        defined, running = where_is(lab, name)
        assert defined == ["hv2"], "%s is on %s" % (name, defined)
    for name in on_unreachable:
        assert where_is(lab, name)[0] == [UNREACHABLE]
    with open(ledger, encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    assert entries and {e["destination"] for e in entries} == {"hv2"}

    back = playbook("return_host.yml", {"return_host_host": DRAINED, "return_host_ledger": ledger})
    print(back.stdout[-2000:])
    assert back.returncode == 0, back.stdout[-3000:]
    for name in moved_out:
        assert where_is(lab, name)[1] == [DRAINED], "%s did not come home" % name
