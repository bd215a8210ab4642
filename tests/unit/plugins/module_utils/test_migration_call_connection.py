# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each migration's long libvirt call goes on a connection of its own (as each `virsh migrate` of `xargs -P2` has):
on one shared connection, concurrent calls were measured returning together on the lab. The whole path is proven
on the lab (tests/integration/test_live_migrate.py); this is which connection the engine picks."""

from __future__ import annotations

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, libvirt
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import engine as engine_module
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Migrator
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLICY_OPTIONS, validate_policy
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.preflight import Plan

pytestmark = pytest.mark.skipif(libvirt is None, reason="needs libvirt-python")

UUID = "8fec1a3e-823d-5031-83b3-070f0841785f"


class Connection:
    def __init__(self, name, known=True):
        self.name, self.known, self.closed = name, known, False

    def getHostname(self):  # noqa: N802 - libvirt's name
        return "hv1"

    def lookupByUUIDString(self, uuid):  # noqa: N802 - libvirt's name
        if not self.known:
            raise libvirt.libvirtError("Domain not found: no domain with matching uuid '%s'" % uuid)
        return ("domain on", self.name)

    def close(self):
        self.closed = True


def engine_and_job(monkeypatch, opened):
    monkeypatch.setattr(engine_module, "open_connection", opened)
    shared = Connection("shared")
    engine = Migrator("qemu:///system", "qemu+tls://hv2/system", validate_policy(dict.fromkeys(POLICY_OPTIONS)),
                      destination="hv2", record_history=False, source_conn=shared)
    plan = Plan("work1")
    plan.uuid, plan.dom = UUID, ("domain on", "shared")

    class Job:
        pass

    job = Job()
    job.plan = plan
    return engine, job


def test_a_migration_call_gets_a_connection_of_its_own(monkeypatch):
    opened = []

    def open_connection(uri):
        opened.append(Connection("own %d" % len(opened)))
        assert uri == "qemu:///system"
        return opened[-1]

    engine, job = engine_and_job(monkeypatch, open_connection)
    first = engine._call_connection(job)
    second = engine._call_connection(job)
    assert first == (opened[0], ("domain on", "own 0")) and second == (opened[1], ("domain on", "own 1"))


def test_the_shared_connection_serves_when_no_other_can_be_had(monkeypatch):
    def refuse(uri):
        raise HvmaintError("cannot connect to libvirt at %s" % uri)

    engine, job = engine_and_job(monkeypatch, refuse)
    assert engine._call_connection(job) == (None, ("domain on", "shared"))
    stranger = Connection("own", known=False)
    engine, job = engine_and_job(monkeypatch, lambda uri: stranger)
    assert engine._call_connection(job) == (None, ("domain on", "shared"))
    assert stranger.closed, "a connection that cannot see the VM is closed, not leaked"
