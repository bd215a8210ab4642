#!/usr/bin/env python3
"""One wave of a drain whose VMs go to two hosts: one call for all destinations against one call per destination
and against a hand-written virsh loop, on the same idle VMs of the lab, in one run.

    HVMAINT_LAB_CONFIG=tests/lab/lab-migrate.json .venv/bin/python benchmarks/bench_wave_destinations.py

Idle guests of the lab's first host go alternately to the second and third hosts, as the planner spreads a tier
(critical VMs one per host). Two shapes of wave: one VM per destination, and two per destination. The VMs go back
between runs (untimed).

  virsh loop                 virsh -c <src> migrate --live --p2p --persistent --undefinesource <vm> <its dest>,
                             one after another
  engine, per destination    the engine (`_migration.run.execute`, from the controller) once per destination,
                             max_parallel=2: how the drain_host role ran a wave before live_migrate took `moves`
  engine, one call           the engine once with `moves`, max_parallel=2, max_parallel_per_destination=2
  playbook, per destination  ansible-playbook, one live_migrate task looping over the destinations (the role before)
  playbook, one task         ansible-playbook, one live_migrate task with `moves` (the role now)

The playbook runs include ansible-playbook's own start (the same in both); their difference is what a drain
saves per wave.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".tmp", "collections"))

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import POLICY_OPTIONS  # noqa: E402
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import run as engine_entry  # noqa: E402
from bench_migrate_loop import load_lab  # noqa: E402 - the sibling benchmark, beside this file


def move(lab, name, destination):
    return {"name": name, "destination": destination, "destination_uri": "qemu+tls://%s/system" % destination,
            "destination_connect_uri": lab.uri(destination)}


def execute(lab, source, moves, **options):
    params = {key: None for key in POLICY_OPTIONS}
    params.update(uri=lab.uri(source), state="migrated", transport="tls", moves=moves, verify=True,
                  record_history=True)
    params.update(options)
    result = engine_entry.execute(params)
    bad = [r for r in result["migrations"] if r["outcome"] != "migrated"]
    if bad:
        raise SystemExit("engine failed: %s" % bad)
    return result


def virsh_loop(lab, source, pairs):
    for name, destination in pairs:
        subprocess.run(["virsh", "-q", "-c", lab.uri(source), "migrate", "--live", "--p2p", "--persistent",
                        "--undefinesource", name, "qemu+tls://%s/system" % destination], check=True)


def per_destination(lab, source, pairs):
    for destination in dict.fromkeys(d for _n, d in pairs):
        execute(lab, source, [move(lab, n, d) for n, d in pairs if d == destination], max_parallel=2)


def one_call(lab, source, pairs):
    execute(lab, source, [move(lab, n, d) for n, d in pairs], max_parallel=2, max_parallel_per_destination=2)


def playbook(lab, source, pairs, one_task):
    """Run the wave through ansible-playbook on the source host, as the drain_host role does."""
    if one_task:
        task = {"hvmaint.libvirt.live_migrate": {"moves": [{"name": n, "destination": d} for n, d in pairs],
                                                 "max_parallel": 2, "max_parallel_per_destination": 2}}
    else:
        by_destination = {}
        for name, destination in pairs:
            by_destination.setdefault(destination, []).append(name)
        task = {"hvmaint.libvirt.live_migrate": {"names": "{{ item.value }}", "destination": "{{ item.key }}",
                                                 "max_parallel": 2},
                "loop": "{{ %s | dict2items }}" % json.dumps(by_destination)}
    play = [{"hosts": source, "gather_facts": False, "tasks": [task]}]
    path = os.path.join(lab.state_dir, "bench-wave-play.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(play, handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".tmp", "collections"))
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
                    os.path.join(lab.state_dir, "inventory.yml"), path], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def gather(lab, names, source):
    """Bring every VM back to `source` (untimed)."""
    for name in names:
        running = lab.locate_guest(name)[1]
        if running != [source]:
            execute(lab, running[0], [move(lab, name, source)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="repeat every run (default 2)")
    args = parser.parse_args()
    lab = load_lab()
    hosts = list(lab.hosts)
    if len(hosts) < 3:
        raise SystemExit("the lab needs three hosts")
    source, destinations = hosts[0], hosts[1:3]
    idle = [g["name"] for g in lab.config["guests"]
            if g["kind"] == "idle" and not g.get("disk_mib") and not g.get("network") and g["host"] == source]
    if len(idle) < 4:
        raise SystemExit("the lab needs 4 idle guests on %s" % source)
    methods = (("virsh loop", virsh_loop), ("engine, per destination", per_destination),
               ("engine, one call", one_call),
               ("playbook, per destination", lambda lab, src, pairs: playbook(lab, src, pairs, False)),
               ("playbook, one task", lambda lab, src, pairs: playbook(lab, src, pairs, True)))
    for count in (2, 4):
        names = idle[:count]
        pairs = [(name, destinations[i % 2]) for i, name in enumerate(names)]
        walls = {label: [] for label, _f in methods}
        for _round in range(args.rounds):
            for label, function in methods:
                gather(lab, names, source)
                started = time.monotonic()
                function(lab, source, pairs)
                walls[label].append(time.monotonic() - started)
        gather(lab, names, source)
        print("\n%d idle guests from %s: %s; %d round(s), median\n" % (
            len(names), source, ", ".join("%s->%s" % pair for pair in pairs), args.rounds))
        print("| method | wave wall time | per VM | against the virsh loop |")
        print("| --- | --- | --- | --- |")
        base = statistics.median(walls["virsh loop"])
        for label, _f in methods:
            wall = statistics.median(walls[label])
            print("| %s | %.2f s | %.2f s | %.2f |" % (label, wall, wall / len(names), wall / base))
        print("\nall runs: %s" % {label: [round(w, 2) for w in values] for label, values in walls.items()})


if __name__ == "__main__":
    main()
