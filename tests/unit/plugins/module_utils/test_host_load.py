"""Measured load from two samples of libvirt's domain statistics, in the shape getAllDomainStats returns them
(the recorded pair is from the lab: work1, a busy Linux guest under TCG, and idle1, an idle firmware guest)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._host_load import (
    check_window,
    load_from_samples,
    memory_in_use,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "libvirt", "hv1-domain-stats.json")


def recorded():
    with open(FIXTURE, encoding="utf-8") as handle:
        return json.load(handle)


def test_recorded_lab_samples_tell_the_busy_guest_from_the_idle_one():
    data = recorded()
    first, second = data["samples"]
    load = load_from_samples(first, second, {"name": data["hostname"], "cpu_count": data["info"][2],
                                             "memory_total_mib": data["info"][1]})
    vms = {vm["name"]: vm for vm in load["vms"]}
    assert vms["work1"]["cpu_cores"] > 0.2 and vms["work1"]["cpu_cores"] > 10 * vms["idle1"]["cpu_cores"]
    assert vms["idle1"]["cpu_fraction"] < 0.05
    # QEMU reports each VM's RSS; the firmware guests have no balloon driver to report from inside.
    assert {vm["memory_source"] for vm in vms.values()} <= {"rss", "guest"}
    assert vms["work1"]["memory_used_mib"] > vms["idle1"]["memory_used_mib"]
    assert load["window_s"] == pytest.approx(second["at"] - first["at"], abs=1e-3)
    assert load["vms_cpu_cores"] == pytest.approx(sum(vm["cpu_cores"] for vm in vms.values()), abs=0.01)
    assert 0 <= load["host_cpu_busy_fraction"] <= 1


def sample(at, vms, user=0, kernel=0):
    return {"at": at, "host_cpu_ns": {"user": user, "kernel": kernel, "idle": 0, "iowait": 0},
            "vms": {uuid: {"name": name, "stats": stats} for uuid, (name, stats) in vms.items()}}


def test_cpu_is_the_time_delta_over_the_window_and_a_vm_seen_once_has_none():
    first = sample(10.0, {"u1": ("a", {"cpu.time": 1_000_000_000, "vcpu.current": 2, "balloon.current": 1048576})},
                   user=0, kernel=0)
    second = sample(14.0, {"u1": ("a", {"cpu.time": 7_000_000_000, "vcpu.current": 2, "balloon.current": 1048576}),
                           "u2": ("b", {"cpu.time": 5, "balloon.current": 524288})},
                    user=8_000_000_000, kernel=0)
    load = load_from_samples(first, second, {"name": "hv9", "cpu_count": 4, "memory_total_mib": 8192})
    a, b = load["vms"]
    assert (a["cpu_seconds"], a["cpu_cores"], a["cpu_fraction"]) == (6.0, 1.5, 0.75)
    assert (a["memory_used_mib"], a["memory_source"]) == (1024.0, "allocation")
    # b started during the window: no rate for it.
    assert b["name"] == "b" and b["cpu_cores"] is None
    assert load["host_cpu_busy_fraction"] == 0.5


def test_memory_in_use_prefers_the_guest_then_rss_then_allocation():
    assert memory_in_use({"balloon.available": 2097152, "balloon.unused": 1048576, "balloon.rss": 3000000}) == (
        1024.0, "guest")
    assert memory_in_use({"balloon.rss": 307200, "balloon.current": 262144}) == (300.0, "rss")
    assert memory_in_use({"balloon.current": 262144}) == (256.0, "allocation")


@pytest.mark.parametrize("window", [0, 0.5, 301, "soon", None])
def test_window_out_of_range_is_refused(window):
    with pytest.raises(HvmaintError, match="window_s"):
        check_window(window)
