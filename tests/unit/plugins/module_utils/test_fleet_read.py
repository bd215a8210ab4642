"""Reading the fleet from one process (plugins/module_utils/_fleet_read.py): bounded threads, hosts that hang or
fail left out with why, the wait for migrations; and the lookup's view of such a read (_fleet.py)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _fleet_read
from ansible_collections.hvmaint.libvirt.plugins.module_utils._fleet import Fleet
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")


@pytest.fixture
def lab_facts():
    with open(FIXTURE, encoding="utf-8") as handle:
        return {facts["name"]: facts for facts in json.load(handle)}


def test_at_most_max_workers_at_once_and_every_host_answered():
    running, peak, lock = [0], [0], threading.Lock()

    def reader(name):
        def read():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
            return {"hypervisor": {"name": name}}
        return read

    results = _fleet_read.read_fleet({"h%d" % i: reader("h%d" % i) for i in range(12)}, max_workers=3, timeout_s=30)
    assert sorted(results) == sorted("h%d" % i for i in range(12))
    assert all(results[h]["hypervisor"]["name"] == h for h in results)
    assert peak[0] == 3


def test_a_host_that_hangs_or_raises_is_left_out_named_and_the_others_are_read():
    stuck = threading.Event()
    readers = {"ok": lambda: {"hypervisor": {"name": "ok"}},
               "hangs": lambda: stuck.wait(30) and {},
               "raises": lambda: 1 / 0}
    started = time.monotonic()
    summary = _fleet_read.summary(_fleet_read.read_fleet(readers, max_workers=3, timeout_s=1))
    stuck.set()
    assert time.monotonic() - started < 10
    assert summary["read"] == ["ok"]
    assert summary["left_out"] == [
        {"host": "hangs", "error": "no answer within 1 s"},
        {"host": "raises", "error": "reading raises failed: ZeroDivisionError: division by zero"}]
    assert summary["hosts"]["hangs"]["unreachable"] and summary["hosts"]["raises"]["failed"]


def test_waits_for_migrations_under_way_then_reads(monkeypatch, lab_facts):
    migrating = dict(lab_facts["hv1"], vms=[dict(vm, job="migration_out") for vm in lab_facts["hv1"]["vms"]])
    answers = [migrating, migrating, lab_facts["hv1"]]
    closed, slept = [], []
    monkeypatch.setattr(_fleet_read, "open_connection", lambda uri: "conn to %s" % uri)
    monkeypatch.setattr(_fleet_read, "close_quietly", closed.append)

    def gather(conn, state_over_libvirt):
        assert state_over_libvirt, "over a remote URI the mark and the lease must be read, not assumed absent"
        return answers.pop(0)
    monkeypatch.setattr(_fleet_read, "gather", gather)
    result = _fleet_read.read_over_libvirt("qemu+tls://hv1/system", wait_retries=5, sleep=slept.append)
    assert result == {"changed": False, "hypervisor": lab_facts["hv1"]}
    assert slept == [5, 5] and closed == ["conn to qemu+tls://hv1/system"]

    answers[:] = [migrating] * 3
    result = _fleet_read.read_over_libvirt("qemu+tls://hv1/system", wait_retries=2, sleep=slept.append)
    assert result["failed"] and "migrations still under way after 10 s" in result["msg"]


def test_a_host_another_job_holds_is_returned_at_once_given_the_runs_own_jobs(monkeypatch, lab_facts):
    # As the per-host read's wait (fleet_facts' `until`): the run is refused on a host another job holds, so its
    # migrations (that job's) are not waited for; without own_jobs, or when the lease is the run's own, it waits.
    def iso(epoch):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    lease = {"job": "other-job-4711", "by": "bob", "operation": "drain", "role": "source",
             "expires": iso(time.time() + 600)}
    migrating = dict(lab_facts["hv1"], lease=lease,
                     vms=[dict(vm, job="migration_out") for vm in lab_facts["hv1"]["vms"]])
    monkeypatch.setattr(_fleet_read, "open_connection", lambda uri: object())
    monkeypatch.setattr(_fleet_read, "close_quietly", lambda conn: None)
    monkeypatch.setattr(_fleet_read, "gather", lambda conn, state_over_libvirt: migrating)
    slept = []

    def read(own_jobs):
        del slept[:]
        return _fleet_read.read_over_libvirt("qemu+tls://hv1/system", wait_retries=3, sleep=slept.append,
                                             own_jobs=own_jobs)

    assert read(["drain-hv2-1"]) == {"changed": False, "hypervisor": migrating} and slept == []
    assert read([])["failed"] and slept == [5, 5, 5]
    assert read(["drain-hv2-1", "other-job-4711"])["failed"] and slept == [5, 5, 5]
    # An expired lease holds nothing: the run may take the host, so its migrations are waited for.
    migrating["lease"] = dict(lease, expires=iso(time.time() - 1))
    assert read(["drain-hv2-1"])["failed"] and slept == [5, 5, 5]
    # The module's way in (read_uris) passes the option on.
    migrating["lease"] = lease
    params = {"uris": {"kvm1": "qemu+tls://hv1/system"}, "max_workers": 1, "timeout": 30,
              "migration_wait_retries": 3, "own_jobs": ["drain-hv2-1"]}
    assert _fleet_read.read_uris(params, sleep=slept.append)["read"] == ["kvm1"]


def test_cannot_connect_is_unreachable_and_cannot_read_is_failed(monkeypatch):
    def refuse(uri):
        raise HvmaintError("cannot connect to libvirt at %s: Connection refused" % uri)
    monkeypatch.setattr(_fleet_read, "open_connection", refuse)
    result = _fleet_read.read_over_libvirt("qemu+tls://hv3/system")
    refused = "cannot connect to libvirt at qemu+tls://hv3/system: Connection refused"
    assert result == {"unreachable": True, "msg": refused}

    def no_state(conn, state_over_libvirt):
        raise HvmaintError("cannot read the maintenance mark and the lease in hv3:/var/lib/libvirt/hvmaint")
    monkeypatch.setattr(_fleet_read, "open_connection", lambda uri: object())
    monkeypatch.setattr(_fleet_read, "gather", no_state)
    result = _fleet_read.read_over_libvirt("qemu+tls://hv3/system")
    assert result["failed"] and "maintenance mark" in result["msg"]


def test_the_lookup_reads_the_fleet_read_and_ignores_what_an_earlier_read_left(lab_facts):
    fleet_read = _fleet_read.summary({
        "kvm1": {"changed": False, "hypervisor": lab_facts["hv1"]},
        "kvm2": {"changed": False, "hypervisor": lab_facts["hv2"]},
        "kvm3": {"failed": True, "msg": "cannot read the maintenance mark and the lease in hv3"}})
    stale = {"changed": False, "hypervisor": lab_facts["hv3"]}
    skipped = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
    # Run once, the fleet read is registered on every host; the per-host read, skipped, leaves a skipped result.
    host_vars = {host: {"fleet_facts__fleet": fleet_read, "fleet_facts__info": skipped} for host in fleet_read["hosts"]}
    host_vars["kvm3"]["fleet_facts__info"] = stale
    fleet = Fleet(list(host_vars), host_vars.__getitem__)
    assert [facts["name"] for facts in fleet.hypervisors] == ["hv1", "hv2"]
    assert fleet.hypervisors[0] is lab_facts["hv1"]
    why = "its facts could not be read: cannot read the maintenance mark and the lease in hv3"
    assert fleet.left_out == [{"host": "kvm3", "error": why}]
    # The other way round: a per-host read after a fleet read, whose skipped result no longer holds hosts.
    host_vars = {host: {"fleet_facts__fleet": skipped, "fleet_facts__info": {"hypervisor": lab_facts[name]}}
                 for host, name in (("kvm1", "hv1"), ("kvm3", "hv3"))}
    assert Fleet(list(host_vars), host_vars.__getitem__).get("names") == {"kvm1": "hv1", "kvm3": "hv3"}


def test_option_limits():
    params = {"max_workers": 0, "timeout": 10, "migration_wait_retries": -1}
    assert _fleet_read.check_limits(params) == ("max_workers must be at least 1, not 0; migration_wait_retries"
                                                " must be 0 or more, not -1")
    assert _fleet_read.deadline_s({"timeout": 300, "migration_wait_retries": 120}) == 900
