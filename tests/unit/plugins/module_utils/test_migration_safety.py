"""The engine's safety rules where libvirt cannot be asked in a unit test: what the repair may do with what it
knows, when post-copy counts as started, which destination names match. The lab proves the rest
(tests/integration/test_faults.py, test_destination_identity.py)."""

from __future__ import annotations

import time

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Migrator
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.lookups import same_host_name
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.preflight import Plan

from .test_migration import RUNNING_16S, escalator

UNKNOWN = {"defined": None, "running": None, "persistent": None, "error": "Cannot recv data: Connection reset"}
ABSENT = {"defined": False, "running": False, "persistent": False}
RUNNING = {"defined": True, "running": True, "persistent": True}
TRANSIENT = {"defined": True, "running": True, "persistent": False}


class FakeConn:
    def __init__(self):
        self.defined = []

    def defineXML(self, xml):  # noqa: N802 - libvirt's name
        self.defined.append(xml)

    def lookupByUUIDString(self, uuid):  # noqa: N802 - libvirt's name
        raise AssertionError("the repair must not touch %s here" % uuid)


class FakeJob:
    def __init__(self):
        self.started = time.monotonic()
        self.result = {}
        self.escalator = escalator()


def repair(src, dst):
    engine = Migrator.__new__(Migrator)
    engine.sconn, engine.dconn, engine.source, engine.destination = FakeConn(), FakeConn(), "hv1", "hv2"
    plan = Plan("db1")
    plan.uuid, plan.inactive_xml, plan.offline, plan.destination_defined = "u-1", "<domain/>", False, False
    job = FakeJob()
    engine._repair(plan, job, {"source": dict(src), "destination": dict(dst)})
    return engine, job


def test_defined_again_only_when_both_hosts_answered_and_neither_has_it():
    engine, job = repair(ABSENT, ABSENT)
    assert engine.sconn.defined == ["<domain/>"] and "needs_attention" not in job.result


@pytest.mark.parametrize("src, dst", [(ABSENT, UNKNOWN), (UNKNOWN, ABSENT), (UNKNOWN, UNKNOWN)])
def test_a_host_that_could_not_be_read_is_never_taken_for_absent(src, dst):
    engine, job = repair(src, dst)
    assert engine.sconn.defined == [] and engine.dconn.defined == []
    assert "could not be read" in job.result["needs_attention"]


def test_a_transient_vm_is_made_persistent_only_when_the_other_host_answered():
    engine, job = repair(TRANSIENT, UNKNOWN)
    assert engine.sconn.defined == [] and "needs_attention" in job.result
    engine, job = repair(TRANSIENT, ABSENT)
    assert engine.sconn.defined == ["<domain/>"]
    engine, job = repair(UNKNOWN, TRANSIENT)
    assert engine.dconn.defined == [] and "needs_attention" in job.result


def test_a_vm_safe_on_its_source_needs_no_attention_when_the_destination_is_unreadable():
    engine, job = repair(RUNNING, UNKNOWN)
    assert engine.sconn.defined == [] and "needs_attention" not in job.result


def test_post_copy_counts_only_once_libvirt_accepted_it():
    esc = escalator(timeout_s=10.0, escalation={"post_copy": True}, completion_timeout_action="postcopy")
    assert esc.observe(RUNNING_16S, 11.0)[0][0] == "postcopy"
    assert not esc.postcopy and "postcopy" not in [s["action"] for s in esc.steps]
    esc.postcopy_started(11.2)
    assert esc.postcopy and esc.steps[-1]["action"] == "postcopy"
    assert esc.observe(RUNNING_16S, 500.0) == [] and esc.fired is None


def test_a_refused_post_copy_leaves_the_timeouts_in_force():
    esc = escalator(timeout_s=10.0, escalation={"post_copy": True}, completion_timeout_action="postcopy")
    assert esc.observe(RUNNING_16S, 11.0)[0][0] == "postcopy"
    esc.postcopy_refused(11.2, "operation not supported")
    assert not esc.postcopy and esc.steps[-1]["action"] == "error"
    assert esc.observe(RUNNING_16S, 12.0) == [("abort", "not completed within 10 s (completion timeout)")]
    assert esc.fired == "completion_timeout"


def test_post_copy_is_asked_for_once_while_libvirt_answers():
    esc = escalator(escalation={"downtime_steps": [600], "post_copy": True, "iterations_per_step": 1})
    actions = [esc.observe(dict(RUNNING_16S, memory_iteration=i, data_processed=i), float(i)) for i in range(2, 7)]
    assert actions[0] == [("downtime", 600)]
    assert actions[1] == [("postcopy", "not converging")]
    assert actions[2:] == [[], [], []]


@pytest.mark.parametrize("named, reported, same", [
    ("hv2", "hv2", True), ("kvm02", "kvm02.example.com", True), ("kvm02.example.com", "kvm02", True),
    ("10.77.0.12", "hv2", True), ("hv2", "hv3", False), ("kvm02.example.com", "kvm03.example.com", False)])
def test_destination_names(named, reported, same):
    assert same_host_name(named, reported) is same


# What the lab showed after a cut link (tests/integration/test_faults.py, link_cut): the source still runs the VM
# and the destination holds the incoming copy, paused and transient (virsh domstate --reason: paused (migration)).
INCOMING = {"defined": False, "running": True, "persistent": False}


@pytest.mark.parametrize("src, dst", [(RUNNING, INCOMING), (TRANSIENT, TRANSIENT), (RUNNING, RUNNING),
                                      (TRANSIENT, INCOMING)])
def test_a_vm_active_on_both_hosts_needs_attention_and_nothing_is_defined(src, dst):
    engine, job = repair(src, dst)
    assert engine.sconn.defined == [] and engine.dconn.defined == []
    assert "active on both hv1 and hv2" in job.result["needs_attention"]


class LocateScript:
    """A Migrator whose _locate answers the states recorded on the lab, one per call."""

    def __init__(self, states):
        self.states = list(states)
        self.calls = 0

    def __call__(self, _plan):
        self.calls += 1
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"source": dict(state[0]), "destination": dict(state[1])}


def test_a_failed_migration_waits_for_the_destination_to_drop_its_incoming_copy(monkeypatch):
    from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import verification

    monkeypatch.setattr(verification, "INCOMING_CLEANUP_POLL_S", 0.0)
    engine = Migrator.__new__(Migrator)
    engine.sconn, engine.dconn, engine.source, engine.destination = FakeConn(), FakeConn(), "hv1", "hv2"
    engine._locate = LocateScript([(RUNNING, INCOMING), (RUNNING, INCOMING), (RUNNING, ABSENT)])
    plan = Plan("work1")
    plan.uuid = "u-1"
    where = engine._settled(plan, engine._locate(plan))
    assert where["destination"] == ABSENT and engine._locate.calls == 3


def test_an_incoming_copy_that_stays_is_reported_not_waited_for_for_ever(monkeypatch):
    from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import verification

    monkeypatch.setattr(verification, "INCOMING_CLEANUP_WAIT_S", 0.05)
    monkeypatch.setattr(verification, "INCOMING_CLEANUP_POLL_S", 0.01)
    engine = Migrator.__new__(Migrator)
    engine._locate = LocateScript([(RUNNING, INCOMING)])
    plan = Plan("work1")
    where = engine._settled(plan, engine._locate(plan))
    assert where["destination"] == INCOMING
    engine.sconn, engine.dconn, engine.source, engine.destination = FakeConn(), FakeConn(), "hv1", "hv2"
    job = FakeJob()
    plan.uuid, plan.inactive_xml, plan.offline, plan.destination_defined = "u-1", "<domain/>", False, False
    engine._repair(plan, job, where)
    assert "active on both" in job.result["needs_attention"]


class Domain:
    def __init__(self, active, persistent=True):
        self.active, self.persistent, self.undefined = active, persistent, False

    def isActive(self):  # noqa: N802 - libvirt's name
        return self.active

    def isPersistent(self):  # noqa: N802 - libvirt's name
        return self.persistent

    def undefine(self):
        self.undefined = True


class SourceWith(FakeConn):
    def __init__(self, dom):
        super().__init__()
        self.dom = dom

    def lookupByUUIDString(self, _uuid):  # noqa: N802 - libvirt's name
        return self.dom


def test_a_vm_still_active_on_its_source_after_a_reported_success_needs_attention():
    engine = Migrator.__new__(Migrator)
    left = Domain(active=True)
    engine.sconn, engine.dconn, engine.source, engine.destination = SourceWith(left), FakeConn(), "hv1", "hv2"
    plan = Plan("work1")
    plan.uuid, plan.offline = "u-1", False
    job = FakeJob()
    problems = engine._verify_moved(plan, Domain(active=True), job)
    assert problems == ["work1 still runs on hv1 after the migration"]
    assert "active on both hv1 and hv2" in job.result["needs_attention"] and not left.undefined
