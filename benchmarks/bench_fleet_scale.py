#!/usr/bin/env python3
"""The shipped playbooks over simulated fleets of growing size: wall time and the controller's peak memory.

For each fleet size (default 100, 300 and 1,000 hosts with 10 VMs each, tests/sim/simulated_fleet.py), runs
through the real roles and modules: the drain of sim0000 in check mode (facts, CPU check, plan, dry-run, mark,
waves, report), the return of sim0001 in check mode, the preflight of sim0000 and the report. Sizes alternate
within each round, and the median of the rounds is kept. Peak memory is the largest resident set of any
controller process of the run (ansible-playbook and its workers, getrusage of the children). The row "drain
--check, until planned" is the drain's run up to the end of its plan (facts, CPU check, plan): the time from the
start of ansible-playbook to the start of the task that shows the plan.

`--reads on_each_host from_controller` runs each playbook both ways of reading the facts (the role fleet_facts'
fleet_facts_read: hypervisor_info on every host, or fleet_info once on the controller), alternating in each round.

Run from the repository root, with the environment of COMMON/README (ANSIBLE_CONFIG, ANSIBLE_COLLECTIONS_PATH):
    .venv/bin/python benchmarks/bench_fleet_scale.py --sizes 100 300 1000 --rounds 1 --forks 10
    .venv/bin/python benchmarks/bench_fleet_scale.py --only "drain --check" --reads on_each_host from_controller
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "sim"))

from simulated_fleet import write_fleet  # noqa: E402

RUNS = [
    ("drain --check", "drain_host.yml", ["-e", "drain_host_host=sim0000", "--check"]),
    ("return --check", "return_host.yml", ["-e", "return_host_host=sim0001", "--check"]),
    ("preflight", "preflight.yml", ["-e", "preflight_host=sim0000"]),
    ("report", "report.yml", []),
]


PLAN_SHOWN = "hvmaint.libvirt.drain_host : Show the plan"
FACTS_AND_PLAN = "drain --check, until planned"


def planned_label(label):
    """The row of a drain's run up to its plan: "drain --check, until planned", with the run's way of reading."""
    return FACTS_AND_PLAN + label[len("drain --check"):] if label.startswith("drain --check") else None


def run_playbook(inventory, playbook, extra, forks, ledger, times):
    """Wall seconds, peak RSS (MiB) and the seconds until the plan was shown (None without a plan) of one
    ansible-playbook run, in a child process of its own so that getrusage(RUSAGE_CHILDREN) measures this run alone.
    Task start times come from the callback benchmarks/callback_plugins/bench_task_times.py."""
    code = (
        "import resource, subprocess, sys, time\n"
        "epoch, start = time.time(), time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT).returncode\n"
        "wall = time.perf_counter() - start\n"
        "print(rc, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, epoch)\n")
    args = [sys.executable, "-c", code, "ansible-playbook", "-i", inventory, "-f", str(forks),
            os.path.join(REPO, "playbooks", playbook), "-e", "drain_host_ledger=%s" % ledger,
            "-e", "return_host_ledger=%s" % ledger] + extra
    env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "benchmarks", "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="bench_task_times", HVMAINT_BENCH_TIMES=times)
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout.split()
    rc, wall, rss_kib, epoch = int(out[0]), float(out[1]), int(out[2]), float(out[3])
    if rc != 0:
        raise SystemExit("%s failed (rc %d): rerun it by hand to see why: %s" % (playbook, rc, " ".join(args[3:])))
    with open(times, encoding="utf-8") as handle:
        shown = [task["started_at"] for task in json.load(handle)["tasks"] if task["name"] == PLAN_SHOWN]
    return wall, rss_kib / 1024.0, (shown[0] - epoch if shown else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--vms-per-host", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--only", choices=[label for label, _, _ in RUNS], nargs="+")
    parser.add_argument("--reads", choices=["on_each_host", "from_controller"], nargs="+", default=["on_each_host"])
    args = parser.parse_args()
    runs = []
    for label, playbook, extra in RUNS:
        if args.only and label not in args.only:
            continue
        for read in args.reads:
            runs.append((label if len(args.reads) == 1 else "%s [%s]" % (label, read), playbook,
                         extra + ["-e", "fleet_facts_read=%s" % read]))
    with tempfile.TemporaryDirectory(prefix="hvmaint-fleet-") as tmp:
        inventories = {size: write_fleet(os.path.join(tmp, str(size)), size, args.vms_per_host)
                       for size in args.sizes}
        figures = {}
        for round_no in range(args.rounds):
            for label, playbook, extra in runs:
                for size in args.sizes:
                    wall, rss, planned = run_playbook(inventories[size], playbook, extra, args.forks,
                                                      os.path.join(tmp, "ledger.jsonl"), os.path.join(tmp, "times.json"))
                    figures.setdefault((label, size), []).append((wall, rss))
                    if planned is not None:
                        # The same run up to the end of its plan (the task that shows it starts): the target.
                        figures.setdefault((planned_label(label), size), []).append((planned, rss))
                    # The machine is shared: the load during each run says how far to trust its time.
                    print("round %d  %-15s %5d hosts  %7.1f s  %7.0f MiB  load %.1f" % (
                        round_no + 1, label, size, wall, rss, os.getloadavg()[0]), flush=True)
        print()
        print("| run | " + " | ".join("%d hosts, %d VMs" % (s, s * args.vms_per_host) for s in args.sizes)
              + " | per 100 hosts (first to last size) |")
        print("| --- |" + " --- |" * (len(args.sizes) + 1))
        for label in [label for label, _, _ in runs] + [planned_label(label) for label, _, _ in runs]:
            if (label, args.sizes[0]) not in figures:
                continue
            cells, walls, peaks = [], [], []
            for size in args.sizes:
                wall = statistics.median(w for w, _ in figures[(label, size)])
                rss = max(r for _, r in figures[(label, size)])
                walls.append(wall)
                peaks.append(rss)
                cells.append("%.1f s, %.0f MiB" % (wall, rss))
            span = (args.sizes[-1] - args.sizes[0]) / 100.0 if len(walls) > 1 else 0
            slope = "%.1f s, %.0f MiB" % ((walls[-1] - walls[0]) / span, (peaks[-1] - peaks[0]) / span) if span else "-"
            print("| %s | %s | %s |" % (label, " | ".join(cells), slope))
    print("load average at the end: %.1f %.1f %.1f" % os.getloadavg())


if __name__ == "__main__":
    main()
