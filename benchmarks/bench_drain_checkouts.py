#!/usr/bin/env python3
"""The drain playbook of two checkouts of this collection, alternating, on the drain benchmark's lab: what a change
did to the drain's fixed cost (everything but its "Move the wave's VMs" tasks), measured in one run.

    HVMAINT_LAB_CONFIG=tests/lab/lab-bench.json tests/lab/lab up
    git worktree add /tmp/before <commit>; (cd /tmp/before && scripts/bootstrap)   # its .tmp/collections link
    HVMAINT_LAB_CONFIG=tests/lab/lab-bench.json .venv/bin/python benchmarks/bench_drain_checkouts.py \
        /tmp/before . --rounds 4

Each round drains the lab's first host once with each checkout (the order swaps every round), each with a ledger of
its own, and puts the VMs back (untimed) after each drain. It prints each drain's wall time, migration phase and
fixed cost, with the fixed cost split into the tasks that run a module on a host (0.3 s or more each), the other
tasks, and ansible-playbook's own start and end; then the medians of each checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_drain  # noqa: E402 - the sibling benchmark, beside this file

# A task that takes this long runs a module on a host; the quicker ones run on the controller.
MODULE_RUN_S = 0.3


def split(drain):
    tasks = [t for t in drain["tasks"] if "Move the wave" not in t["name"]]
    module_runs = sum(t["seconds"] for t in tasks if t["seconds"] >= MODULE_RUN_S)
    small = [t["seconds"] for t in tasks if t["seconds"] < MODULE_RUN_S]
    outside = drain["wall"] - sum(t["seconds"] for t in drain["tasks"])
    return module_runs, len(small), sum(small), outside


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="checkout of the collection before the change")
    parser.add_argument("after", help="checkout of the collection after the change")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--log-dir", default=os.path.join(bench_drain.REPO, ".tmp", "bench-drain-checkouts"))
    args = parser.parse_args()
    checkouts = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    os.makedirs(args.log_dir, exist_ok=True)
    lab = bench_drain.load_lab()
    source = sorted(lab.hosts)[0]
    names = [g["name"] for g in lab.config["guests"] if g["host"] == source]
    drains = {tag: [] for tag in checkouts}
    for round_no in range(1, args.rounds + 1):
        for tag in (("before", "after") if round_no % 2 else ("after", "before")):
            # bench_drain.drain runs ansible-playbook in REPO, with REPO's collection.
            bench_drain.REPO = checkouts[tag]
            ledger = os.path.join(args.log_dir, "ledger-%s-%d.jsonl" % (tag, os.getpid()))
            drain = bench_drain.drain(lab, source, ledger, args.log_dir, round_no * 10 + (tag == "after"))
            module_runs, small_count, small, outside = split(drain)
            print("round %d %s: wall %.1f s, migration phase %.1f s, fixed %.1f s (tasks running a module %.1f s, %d"
                  " other tasks %.1f s, ansible-playbook start and end %.1f s)" % (
                      round_no, tag, drain["wall"], drain["phase"], drain["fixed"], module_runs, small_count,
                      small, outside), flush=True)
            drains[tag].append(drain)
            bench_drain.put_back(lab, names, source)
    for tag, path in checkouts.items():
        runs = drains[tag]
        print("%s (%s): median wall %.1f s, migration phase %.1f s, fixed %.1f s, tasks running a module %.1f s" % (
            tag, path, statistics.median(d["wall"] for d in runs), statistics.median(d["phase"] for d in runs),
            statistics.median(d["fixed"] for d in runs), statistics.median(split(d)[0] for d in runs)))


if __name__ == "__main__":
    main()
