#!/usr/bin/env python3
"""How long the rebalance planner takes on a big synthetic fleet (the goal: 1,000 hosts, 10,000 VMs in under 5 s).

The fleet is bench_evacuation_plan.py's (same seed, same fleet: hosts of differing memory, CPUs, networks,
bridges, machine types and pools; VMs with tiers, anti-affinity groups, host-local disks, shut-off, paused and
passthrough VMs), with no host drained and a tenth of the VMs crowded onto the first hosts, plus a measured load
per VM (seeded: CPU cores in use up to its vCPUs, memory in use 20-100 % of its allocation). Rounds alternate
balance (max_moves 10) and consolidate (max_moves 200); medians and best of each are printed.

Run from the repository root:  .venv/bin/python benchmarks/bench_rebalance_plan.py
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(os.path.dirname(_ROOT), ".tmp", "collections"))

from bench_evacuation_plan import make_fleet  # noqa: E402

from ansible_collections.hvmaint.libvirt.plugins.module_utils._rebalance_plan import plan_rebalance  # noqa: E402


def make_rebalance_fleet(seed, n_hosts=1000, n_vms=10000):
    hosts = make_fleet(seed, n_hosts=n_hosts, n_vms=n_vms, source_share=0.0)
    hosts[0]["maintenance"] = None
    rng = random.Random(seed + 1)
    # Crowd a tenth of the VMs onto the first ten hosts, so that there is imbalance to remove.
    for h in hosts[10:]:
        keep = []
        for vm in h["vms"]:
            (hosts[rng.randrange(10)]["vms"] if rng.random() < 0.1 else keep).append(vm)
        h["vms"] = keep
    loads = [{"name": h["name"], "vms": [{"name": vm["name"], "uuid": vm["uuid"],
                                          "cpu_cores": round(rng.random() * vm["vcpus"], 2),
                                          "memory_used_mib": round(vm["memory_mib"] * rng.uniform(0.2, 1.0), 1)}
                                         for vm in h["vms"] if vm["state"] != "shutoff"]} for h in hosts]
    return hosts, loads


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    hosts, loads = make_rebalance_fleet(args.seed)
    print("python %s, %d hosts, %d VMs" % (sys.version.split()[0], len(hosts), sum(len(h["vms"]) for h in hosts)))
    runs = {"balance": [], "consolidate": []}
    last = {}
    for _ in range(args.rounds):
        for strategy, max_moves in (("balance", 10), ("consolidate", 200)):
            started = time.perf_counter()
            last[strategy] = plan_rebalance(hosts, strategy, loads=loads, max_moves=max_moves)
            runs[strategy].append(time.perf_counter() - started)
    for strategy, times in runs.items():
        plan = last[strategy]
        detail = ("imbalance %.3f -> %.3f" % (plan["imbalance_before"]["imbalance"],
                                              plan["imbalance_after"]["imbalance"]) if strategy == "balance"
                  else "%d hosts emptied, %d refused" % (len(plan["hosts_emptied"]), len(plan["refusals"])))
        print("%-12s %4d moves, %s: median %.2f s, best %.2f s (%d rounds)"
              % (strategy, len(plan["moves"]), detail, statistics.median(times), min(times), len(times)))


if __name__ == "__main__":
    main()
