"""The fleet's facts read from the controller over libvirt (fleet_facts_read=from_controller), on the lab: the same
facts as the per-host read, the maintenance mark and another job's lease seen through libvirt, and a drain and a
return that plan from them."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import (
    REPO,
    ansible_module_json,
    assert_fleet_invariants,
    clear_maintenance_marks,
    lease_of,
    mark_of,
    recap,
    run_ansible,
    where_is,
)

pytestmark = pytest.mark.lab

DRAINED, MARKED = "hv1", "hv3"
OTHER_JOB = "other-job-4711"


def inventory_with_uris(lab, tmp_path):
    """The lab's inventory with each host's libvirt URI for the controller (TLS, the lab's client certificate)."""
    with open(os.path.join(lab.state_dir, "inventory.yml"), encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    for name, host in inventory["all"]["children"]["hypervisors"]["hosts"].items():
        host["hvmaint_libvirt_uri"] = lab.uri(name)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return str(path)


@pytest.fixture
def marked_and_held(lab_at_home, ansible_env):
    """hv3 under maintenance and held by another job, written by the collection's own modules on hv3."""
    lab = lab_at_home
    clear_maintenance_marks(lab)
    ansible_module_json(lab, MARKED, "hvmaint.libvirt.maintenance_mode", {"reason": "firmware CHG-11", "by": "alice"},
                        ansible_env)
    ansible_module_json(lab, MARKED, "hvmaint.libvirt.host_lease",
                        {"job": OTHER_JOB, "by": "bob", "operation": "drain", "subject": MARKED, "role": "source"},
                        ansible_env)
    yield lab
    clear_maintenance_marks(lab)


def test_the_controller_reads_what_each_host_reads_mark_and_lease_included(marked_and_held, ansible_env, tmp_path):
    lab = marked_and_held
    out = tmp_path / "facts.json"
    play = [{"hosts": "hypervisors", "gather_facts": False, "tasks": [
        {"name": "per host", "hvmaint.libvirt.hypervisor_info": {}, "register": "per_host"},
        {"name": "from the controller", "hvmaint.libvirt.fleet_info": {}, "register": "fleet", "run_once": True},
        {"name": "save", "delegate_to": "localhost", "run_once": True, "ansible.builtin.copy": {
            "dest": str(out), "content": "{{ {'fleet': fleet, 'per_host': dict(ansible_play_hosts | zip("
                                         "ansible_play_hosts | map('extract', hostvars, 'per_host')))} | to_json }}"}},
    ]}]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    run_ansible(["ansible-playbook", "-i", inventory_with_uris(lab, tmp_path), str(playbook)], ansible_env)
    saved = json.loads(out.read_text())
    fleet = saved["fleet"]
    assert fleet["read"] == sorted(lab.hosts) and fleet["left_out"] == []
    for host in lab.hosts:
        remote = fleet["hosts"][host]["hypervisor"]
        local = saved["per_host"][host]["hypervisor"]
        assert remote["uri"] == lab.uri(host)
        # Free memory moves between two reads a moment apart; the URI is the one each read used.
        differing = sorted(key for key in set(remote) | set(local)
                           if key not in ("uri", "memory_free_mib") and remote.get(key) != local.get(key))
        assert differing == [], "%s: %s" % (host, {key: (local.get(key), remote.get(key)) for key in differing})
    marked = fleet["hosts"][MARKED]["hypervisor"]
    assert marked["maintenance"]["reason"] == "firmware CHG-11" and marked["maintenance"]["by"] == "alice"
    assert marked["lease"]["job"] == OTHER_JOB and marked["lease"]["operation"] == "drain"
    assert fleet["hosts"][DRAINED]["hypervisor"]["maintenance"] is None
    # The transient pool the read used is gone again: each host's pools are what they were.
    for host in lab.hosts:
        assert "hvmaint-state" not in lab.virsh(host, ["pool-list", "--all", "--name"]).stdout.split()


def test_drain_and_return_plan_from_the_controller_read(marked_and_held, ansible_env, tmp_path):
    lab = marked_and_held
    inventory = inventory_with_uris(lab, tmp_path)
    ledger = str(tmp_path / "ledger.jsonl")
    moved_out = [g["name"] for g in lab.config["guests"] if g["host"] == DRAINED]

    def playbook(name, extra):
        return run_ansible(["ansible-playbook", "-i", inventory, os.path.join(REPO, "playbooks", name), "-e",
                            json.dumps(dict(extra, fleet_facts_read="from_controller"))], ansible_env, check=False)

    drain = playbook("drain_host.yml", {"drain_host_host": DRAINED, "drain_host_ledger": ledger})
    print(drain.stdout[-3000:])
    assert drain.returncode == 0, drain.stdout[-3000:]
    assert "Read every hypervisor's facts from the controller over libvirt" in drain.stdout
    assert "3 hypervisors read" in drain.stdout
    # hv3 is under maintenance (seen through libvirt): everything goes to hv2, nothing to hv3.
    for name in moved_out:
        assert where_is(lab, name)[0] == ["hv2"], "%s is on %s" % (name, where_is(lab, name)[0])
    # Nothing ran on hv3 (every task of the drain runs on the drained host or for it): its mark and the other
    # job's lease are as they were.
    assert recap(drain.stdout).get(MARKED, {}).get("changed", 0) == 0
    assert mark_of(lab, MARKED)["reason"] == "firmware CHG-11"
    assert lease_of(lab, MARKED)["job"] == OTHER_JOB
    with open(ledger, encoding="utf-8") as handle:
        assert {json.loads(line)["destination"] for line in handle if line.strip()} == {"hv2"}

    back = playbook("return_host.yml", {"return_host_host": DRAINED, "return_host_ledger": ledger})
    print(back.stdout[-2000:])
    assert back.returncode == 0, back.stdout[-3000:]
    for name in moved_out:
        assert where_is(lab, name)[1] == [DRAINED], "%s did not come home" % name
    assert_fleet_invariants(lab, back.stdout, ledger)
