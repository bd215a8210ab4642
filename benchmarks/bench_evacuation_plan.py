#!/usr/bin/env python3
"""How long the evacuation planner takes on a big synthetic fleet.

Facts are generated with a seeded random (same seed, same fleet): 1,000 hosts of differing memory, CPUs,
networks, bridges, machine types and storage pools, 10,000 VMs with tiers, anti-affinity groups, a few
host-local disks, shut-off, paused and passthrough VMs. Two plans are timed:

* drain: the first host holds about 500 VMs, the other 9,500 are spread over the rest;
* drain-everything: the first host holds all 10,000 VMs and the other 999 hosts are destinations.

Run from the repository root:  .venv/bin/python benchmarks/bench_evacuation_plan.py
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, ".tmp", "collections"))

from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import (  # noqa: E402
    plan_evacuation,
)

NETWORKS = ["lan", "dmz", "storage", "backup", "mgmt", "tenant"]
BRIDGES = ["br0", "br-app", "br-dmz"]
TIERS = ["critical", "high", "normal", "low"]
GIB = 1024


def make_fleet(seed=42, n_hosts=1000, n_vms=10000, source_share=0.05):
    """Hypervisor facts (docs/facts.md shape, only the fields the planner reads filled in)."""
    rng = random.Random(seed)
    hosts = []
    for i in range(n_hosts):
        nets = [{"name": n, "active": n == "lan" or rng.random() < 0.95}
                for n in NETWORKS if n == "lan" or rng.random() < 0.8]
        new_qemu = rng.random() < 0.85
        hosts.append({
            "name": "hv%04d" % i, "arch": "x86_64",
            "libvirt_version": "10.0.0" if new_qemu else "9.0.0",
            "hypervisor_version": "8.2.2" if new_qemu else "7.2.0",
            "cpu": {"count": rng.choice([32, 48, 64, 96, 128])},
            "domain_types": ["kvm", "qemu"],
            "machine_types": (["pc-q35-8.2"] if new_qemu else []) + ["pc-q35-7.2", "pc-i440fx-7.2", "q35", "pc"],
            "memory_total_mib": rng.choice([128, 256, 384, 512]) * GIB,
            "networks": nets,
            "bridges": ["br0"] + [b for b in BRIDGES[1:] if rng.random() < 0.7],
            "storage_pools": [
                {"name": "default", "type": "dir", "active": True, "path": "/var/lib/libvirt/images",
                 "shared": False, "capacity_bytes": 2 * 2**40, "available_bytes": rng.randrange(1, 2000) * 2**30},
                {"name": "vmstore", "type": "netfs", "active": True, "path": "/mnt/vmstore", "shared": True,
                 "capacity_bytes": 100 * 2**40, "available_bytes": 50 * 2**40}],
            "maintenance": None if rng.random() < 0.99 else {"since": "2025-01-01", "reason": "repair", "by": "x"},
            "vms": [],
        })
    hosts[0]["maintenance"] = {"since": "2025-11-20T08:00:00Z", "reason": "benchmark", "by": "bench"}
    for j in range(n_vms):
        target = hosts[0] if rng.random() < source_share else hosts[rng.randrange(1, n_hosts)]
        name = "vm%05d" % j
        state = rng.choices(["running", "shutoff", "paused"], [0.96, 0.03, 0.01])[0]
        nics = [{"type": "network", "network": rng.choice(NETWORKS[:4]), "bridge": None,
                 "mac": "52:54:00:%02x:%02x:%02x" % (j >> 16 & 255, j >> 8 & 255, j & 255), "model": "virtio"}]
        if rng.random() < 0.3:
            nics.append({"type": "bridge", "bridge": rng.choice(BRIDGES), "network": None,
                         "mac": "52:54:01:%02x:%02x:%02x" % (j >> 16 & 255, j >> 8 & 255, j & 255),
                         "model": "virtio"})
        if rng.random() < 0.05:
            disks = [{"target": "vda", "device": "disk", "type": "file", "format": "qcow2", "pool": "default",
                      "path": "/var/lib/libvirt/images/%s.qcow2" % name, "shared": False,
                      "size_bytes": rng.choice([10, 20, 40]) * 2**30}]
        else:
            disks = [{"target": "vda", "device": "disk", "type": "file", "format": "qcow2", "pool": "vmstore",
                      "path": "/mnt/vmstore/%s.qcow2" % name, "shared": True, "size_bytes": 40 * 2**30}]
        metadata = {"home": target["name"]}
        if rng.random() < 0.9:
            metadata["tier"] = rng.choices(TIERS, [0.1, 0.2, 0.5, 0.2])[0]
        if rng.random() < 0.1:
            metadata["group"] = "grp%03d" % rng.randrange(200)
        target["vms"].append({
            "name": name, "uuid": "00000000-0000-4000-8000-%012d" % j, "state": state, "persistent": True,
            "domain_type": "kvm", "machine": rng.choice(["pc-q35-7.2", "pc-q35-7.2", "pc-q35-8.2"]),
            "memory_mib": rng.choice([1, 2, 4, 4, 8, 8, 16, 32]) * GIB, "vcpus": rng.choice([1, 2, 2, 4, 4, 8]),
            "disks": disks, "nics": nics,
            "hostdevs": [{"type": "pci", "address": "0000:3b:00.0"}] if rng.random() < 0.005 else [],
            "metadata": metadata,
        })
    return hosts


# No "fail": the few passthrough VMs would make the plan not OK and hide the moves.
POLICY = {"critical": "shutdown", "high": "shutdown", "normal": "shutdown", "low": "leave"}


def timed(label, hosts, repeat):
    source = hosts[0]["name"]
    n_source = len(hosts[0]["vms"])
    runs = []
    plan = None
    for _ in range(repeat):
        started = time.perf_counter()
        plan = plan_evacuation(hosts, source, unplaceable_policy=POLICY, max_wave_size=200)
        runs.append(time.perf_counter() - started)
    print("%-17s %5d hosts %6d VMs on the source  %6d moves %4d unplaceable %3d waves  best %.2f s, median %.2f s"
          " (%d runs)" % (label, len(hosts), n_source, len(plan["moves"]), len(plan["unplaceable"]),
                          len(plan["waves"]), min(runs), statistics.median(runs), repeat))
    return plan


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("python %s" % sys.version.split()[0])
    timed("drain", make_fleet(args.seed), args.repeat)
    timed("drain-everything", make_fleet(args.seed, source_share=1.0), args.repeat)


if __name__ == "__main__":
    main()
