#!/usr/bin/env python3
"""live_migrate's engine against a hand-written `virsh migrate` loop, on the same idle VMs of the lab, in one run.

    HVMAINT_LAB_CONFIG=tests/lab/lab-migrate.json .venv/bin/python benchmarks/bench_migrate_loop.py [--vms 5]

Three ways of moving the same N idle guests from one lab host to another, the VMs going back between runs
(untimed):

  virsh loop      virsh -c <src> migrate --live --p2p --persistent --undefinesource <vm> <dest>, one after another
  engine, 1       the collection's engine (plugins/module_utils/_migration/) with max_parallel=1
  engine, 2       the same with the default max_parallel=2

For every VM: the wall time, and libvirt's own job time (time_elapsed of the completed job, read on the
destination). Overhead per VM = wall time per VM minus libvirt's job time. For the engine the wall time is split
further: inside the virDomainMigrateToURI3 call but outside libvirt's job (libvirt's own phases: connecting to the
destination, finishing there, stopping QEMU on the source), and outside the call (the engine's own work:
look-ups, verification, history).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".tmp", "collections"))

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import open_connection  # noqa: E402
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.engine import Migrator  # noqa: E402
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (  # noqa: E402
    POLICY_OPTIONS,
    validate_policy,
)


def load_lab():
    spec = importlib.util.spec_from_file_location("hvmaint_lab", os.path.join(REPO, "tests", "lab", "lab.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Lab(module.load_config())


def engine(lab, names, source, destination, max_parallel):
    policy = validate_policy({key: None for key in POLICY_OPTIONS} | {"max_parallel": max_parallel})
    started = time.monotonic()
    with Migrator(lab.uri(source), "qemu+tls://%s/system" % destination, policy, destination=destination,
              destination_connect_uri=lab.uri(destination)) as migrator:
        migrator.connect()
        plans = migrator.preflight(names)
        setup = time.monotonic() - started
        results = migrator.run(plans)
    wall = time.monotonic() - started
    bad = [r for r in results if r["outcome"] != "migrated"]
    if bad:
        raise SystemExit("engine failed: %s" % bad)
    return wall, setup, results


def job_times_on(lab, host, names):
    conn = open_connection(lab.uri(host))
    try:
        return {name: conn.lookupByName(name).jobStats(3).get("time_elapsed") for name in names}
    finally:
        conn.close()


def virsh_loop(lab, names, source, destination):
    walls = {}
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        subprocess.run(["virsh", "-q", "-c", lab.uri(source), "migrate", "--live", "--p2p", "--persistent",
                        "--undefinesource", name, "qemu+tls://%s/system" % destination], check=True)
        walls[name] = time.monotonic() - t0
    return time.monotonic() - started, walls, job_times_on(lab, destination, names)


def gather(lab, names, source):
    """Bring every VM to `source` (untimed preparation)."""
    moves = {}
    for name in names:
        running = lab.locate_guest(name)[1]
        if running != [source]:
            moves.setdefault(running[0], []).append(name)
    for host, group in moves.items():
        engine(lab, group, host, source, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=5, help="number of idle guests (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the three runs (default 1)")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    lab = load_lab()
    idle = [g["name"] for g in lab.config["guests"] if g["kind"] == "idle" and not g.get("disk_mib")]
    names = idle[:args.vms]
    if len(names) < args.vms:
        print("note: the lab has %d idle guests without disks; using %d" % (len(idle), len(names)))
    hosts = list(lab.hosts)
    source, destination = hosts[0], hosts[1]
    gather(lab, names, source)
    rows, raw = [], []
    for _round in range(args.rounds):
        wall, walls, jobs = virsh_loop(lab, names, source, destination)
        rows.append(("virsh loop", wall, [walls[n] for n in names], [jobs[n] / 1000.0 for n in names], None, None))
        raw.append({"method": "virsh loop", "wall_s": wall, "per_vm_s": walls, "job_ms": jobs})
        engine(lab, names, destination, source, 2)
        for parallel in (1, 2):
            wall, setup, results = engine(lab, names, source, destination, parallel)
            api = [r["timings_s"]["api_s"] for r in results]
            own = [r["elapsed_s"] - r["timings_s"]["api_s"] for r in results]
            rows.append(("engine, max_parallel=%d" % parallel, wall, [r["elapsed_s"] for r in results],
                         [r["libvirt_time_ms"] / 1000.0 for r in results], api, own + [setup / len(results)]))
            raw.append({"method": "engine %d" % parallel, "wall_s": wall, "setup_s": setup, "results": results})
            engine(lab, names, destination, source, 2)
    print("\n%d idle guests (%s), %s -> %s over TLS, %d round(s)\n" % (len(names), ", ".join(names), source,
                                                                    destination, args.rounds))
    print("| method | total wall | wall per VM | libvirt job per VM | overhead per VM (wall/VM - job) |"
          " of which inside the libvirt call | of which the engine's own |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == method]
        n = len(names)
        wall = statistics.median(row[1] for row in mine)
        job = statistics.median(statistics.mean(row[3]) for row in mine)
        per_vm = wall / n
        inside = own = "-"
        if mine[0][4] is not None:
            inside = "%.2f s" % statistics.median(statistics.mean(row[4]) - statistics.mean(row[3]) for row in mine)
            # The engine's own time per VM: outside the libvirt call, plus connections and pre-flight shared out.
            own = "%.0f ms" % (1000 * statistics.median(sum(row[5]) / n for row in mine))
        print("| %s | %.2f s | %.2f s | %.2f s | %.2f s | %s | %s |" % (method, wall, per_vm, job, per_vm - job,
                                                                      inside, own))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(raw, handle, indent=1)


if __name__ == "__main__":
    main()
