#!/usr/bin/env python3
"""A site evacuation over the rate-limited WAN link of the sites lab, against its bound (bytes to move / link rate).

    HVMAINT_LAB_CONFIG=tests/lab/lab-sites.json tests/lab/lab up
    HVMAINT_LAB_CONFIG=tests/lab/lab-sites.json .venv/bin/python benchmarks/bench_site_evacuation.py --rounds 3

Each round runs the shipped playbooks, alternating: evacuate_site (site_east to site_west), then failback_site,
each with a ledger of its own. From the ledger:

  move phase  wall time from the first move's start to the last move's end (both sites' hosts send at once, and
              share the one link)
  bytes       what the moves sent (libvirt's data_transferred_bytes: memory passes and the copied disks)
  bound       bytes / link rate (the router's tbf rate, read from the lab config): no evacuation over this link can
              be faster
  playbook    the whole ansible-playbook run (facts, CPU checks, plan, dry-run, leases, marks, report)

It prints the medians of each direction and the ratio of the move phase to the bound. The lab is left as it was
(every VM at home).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.environ.get("HVMAINT_LAB_CONFIG", os.path.join(REPO, "tests", "lab", "lab-sites.json"))
MAPPING = {"networks": {"lan": "lan-west"}, "pools": {"default": "west-images"}}
UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def link_rate_bytes_s(config):
    rate = config["router"]["rate"].lower()
    match = re.fullmatch(r"([0-9.]+)(kbit|mbit|gbit)", rate)
    if not match:
        raise SystemExit("cannot read the router's rate %r" % rate)
    return float(match.group(1)) * UNITS[match.group(2)] / 8.0


def run_round(config, playbook, ledger):
    inventory = os.path.join(config["state_dir"], "inventory.yml")
    extra = {"evacuate_site_from": "site_east", "evacuate_site_to": "site_west", "evacuate_site_mapping": MAPPING,
             "evacuate_site_ledger": ledger}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".tmp", "collections"))
    started = time.monotonic()
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory,
                             os.path.join(REPO, "playbooks", playbook), "-e", json.dumps(extra)], cwd=REPO, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (playbook, result.stdout[-4000:]))
    with open(ledger, encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    moved = [e for e in entries if e.get("outcome") == "migrated"]
    if not moved:
        raise SystemExit("%s moved nothing" % playbook)
    start = min(e["started_at"] for e in moved)
    end = max(e["started_at"] + e["duration_s"] for e in moved)
    return {"playbook_s": wall, "move_s": end - start, "bytes": sum(e.get("data_bytes") or 0 for e in moved),
            "vms": len(moved)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with open(CONFIG, encoding="utf-8") as handle:
        config = json.load(handle)
    rate = link_rate_bytes_s(config)
    results = {"evacuate_site.yml": [], "failback_site.yml": []}
    # The machine is shared: the load average says how far the figures are from a quiet controller's.
    print("load average at the start: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    with tempfile.TemporaryDirectory() as work:
        for number in range(args.rounds):
            for playbook in results:
                ledger = os.path.join(work, "%s-%d.jsonl" % (playbook, number))
                figures = run_round(config, playbook, ledger)
                figures["bound_s"] = figures["bytes"] / rate
                results[playbook].append(figures)
                print("round %d %-18s %d VMs, %.1f MiB sent, move phase %.1f s, bound %.1f s (x%.2f), playbook"
                      " %.1f s" % (number + 1, playbook, figures["vms"], figures["bytes"] / 1048576.0,
                                   figures["move_s"], figures["bound_s"], figures["move_s"] / figures["bound_s"],
                                   figures["playbook_s"]), flush=True)
    print("load average at the end: %.2f %.2f %.2f" % os.getloadavg())
    print("link: %s (%.1f MiB/s)" % (config["router"]["rate"], rate / 1048576.0))
    for playbook, rounds in results.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in ("move_s", "bytes", "bound_s", "playbook_s")}
        print("%-18s median of %d: %.1f MiB sent, move phase %.1f s, bound %.1f s, ratio %.2f, playbook %.1f s" % (
            playbook, len(rounds), med["bytes"] / 1048576.0, med["move_s"], med["bound_s"],
            statistics.median(r["move_s"] / r["bound_s"] for r in rounds), med["playbook_s"]))


if __name__ == "__main__":
    main()
