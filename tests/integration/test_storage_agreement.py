"""One storage vocabulary on the lab: for every disk of every running lab VM, the copy the planner predicts (from
hypervisor_info's facts, as migration_readiness and evacuation_plan read them) is the copy live_migrate's engine
decides in its pre-flight (copy_storage=auto). Only pre-flight runs: nothing moves.
"""

from __future__ import annotations

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._hypervisor_facts import gather
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import open_connection
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Migrator
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLICY_OPTIONS, validate_policy
from ansible_collections.hvmaint.libvirt.plugins.module_utils._readiness import local_disks

pytestmark = pytest.mark.lab


def test_planner_prediction_and_engine_decision_agree_for_every_lab_disk(lab):
    policy = validate_policy({key: None for key in POLICY_OPTIONS})
    compared = []
    for host in lab.hosts:
        conn = open_connection(lab.uri(host))
        try:
            vms = [vm for vm in gather(conn)["vms"] if vm["state"] == "running"]
        finally:
            conn.close()
        destination = next(name for name in lab.hosts if name != host)
        with Migrator(lab.uri(host), "qemu+tls://%s/system" % destination, policy, destination=destination,
                      destination_connect_uri=lab.uri(destination)) as migrator:
            migrator.connect()
            plans = migrator.preflight([vm["name"] for vm in vms])
        for vm, plan in zip(vms, plans):
            predicted = [d["target"] for d in local_disks(vm)]
            decided = (plan.migrate_disks or []) if plan.copy_storage else []
            compared.append((host, vm["name"], [d["target"] for d in vm["disks"]], predicted, decided))
    print("\n" + "\n".join("%s %s: disks %s, planner copies %s, engine copies %s" % row for row in compared))
    assert any(row[2] for row in compared), "the lab has no VM with a disk: nothing was compared"
    assert any(row[4] for row in compared), "no lab disk is copied: the copy decision was not exercised"
    for host, name, _disks, predicted, decided in compared:
        assert predicted == decided, "%s on %s: planner predicts %s, engine copies %s" % (
            name, host, predicted, decided)
