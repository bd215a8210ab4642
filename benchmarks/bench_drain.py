#!/usr/bin/env python3
"""The drain playbook against the `virsh migrate` one-liners it replaces, on the same VMs and destinations, in one
run, alternating.

    HVMAINT_LAB_CONFIG=tests/lab/lab-bench.json tests/lab/lab up
    HVMAINT_LAB_CONFIG=tests/lab/lab-bench.json .venv/bin/python benchmarks/bench_drain.py --rounds 3

Every round, with the lab's first host holding all its guests again before each method (put back untimed):

  drain       ansible-playbook playbooks/drain_host.yml -e drain_host_host=<first host>, with its own ledger
  virsh loop  virsh -c <src> migrate --live --p2p --tls --persistent --undefinesource <vm> qemu+tls://<dest>/system,
              one after another, the VMs and destinations the drain of this round chose (read from its ledger), in
              the order it started them
  xargs -P2   the same commands through `xargs -P2`
  bound       the lower bound: the sum of libvirt's job times (time_elapsed of each completed job) of the xargs
              run divided by the concurrency (2)

The drain's migration phase is the wall time of its "Move the wave's VMs" tasks (a callback beside this file
records every task's time); its fixed cost is the rest. The engine's CPU time is sampled from /proc on the
hosts (the lab's hosts share this machine's process table); the controller's is the ansible-playbook run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".tmp", "collections"))

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import open_connection  # noqa: E402
from bench_migrate_loop import load_lab  # noqa: E402 - the sibling benchmark, beside this file
from bench_wave_destinations import execute, move  # noqa: E402

CONCURRENCY = 2
MARK = "/var/lib/libvirt/hvmaint/maintenance.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def virsh_command(lab, source, name, destination):
    return ["virsh", "-q", "-c", lab.uri(source), "migrate", "--live", "--p2p", "--tls", "--persistent",
            "--undefinesource", name, "qemu+tls://%s/system" % destination]


class EngineCpu:
    """Samples the CPU time of every live_migrate module process (on any lab host) while a drain runs."""

    def __init__(self):
        self.seen = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.1):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        if b"AnsiballZ_live_migrate" not in handle.read():
                            continue
                    with open("/proc/%s/stat" % pid, encoding="ascii") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # utime and stime (fields 14 and 15 of stat, counted after the command name)
                self.seen[pid] = (int(fields[11]) + int(fields[12])) / float(CLOCK_TICKS)

    @property
    def seconds(self):
        return sum(self.seen.values())


class Busy:
    """How busy the machine's CPUs were (all processes, ours and anybody else's) since this was made: the lab
    shares two cores with other work, and a method that ran while something else did is not comparable."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)  # busy (all but idle and iowait), total

    def since(self):
        busy, total = self._read()
        return round((busy - self.start[0]) / float(max(1, total - self.start[1])), 2)


def drain(lab, source, ledger, log_dir, round_no):
    times_path = os.path.join(log_dir, "drain-times-%d.json" % round_no)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".tmp", "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "benchmarks", "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="bench_task_times", HVMAINT_BENCH_TIMES=times_path)
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
               os.path.join(lab.state_dir, "inventory.yml"), "playbooks/drain_host.yml",
               "-e", "drain_host_host=%s" % source, "-e", "drain_host_ledger=%s" % ledger]
    before = len(read_ledger(ledger))
    usage = os.times()
    with open(os.path.join(log_dir, "drain-%d.log" % round_no), "w", encoding="utf-8") as out, EngineCpu() as cpu:
        started = time.monotonic()
        subprocess.run(command, cwd=REPO, env=env, check=True, stdout=out, stderr=subprocess.STDOUT)
        wall = time.monotonic() - started
    after = os.times()
    controller_cpu = (after.children_user - usage.children_user) + (after.children_system - usage.children_system)
    with open(times_path, encoding="utf-8") as handle:
        times = json.load(handle)
    with open(os.path.join(log_dir, "drain-%d.log" % round_no), encoding="utf-8") as handle:
        output = handle.read()
    entries = [e for e in read_ledger(ledger)[before:] if e.get("outcome") == "migrated"]
    entries.sort(key=lambda e: e.get("started_at") or 0)
    waves = [t for t in times["tasks"] if "Move the wave" in t["name"]]
    phase = sum(t["seconds"] for t in waves)
    span = (max(e["started_at"] + e["duration_s"] for e in entries) - min(e["started_at"] for e in entries)
            if entries else 0.0)
    plugin_cpu = sum((m.get("progress_polling") or {}).get("cpu_s") or 0 for m in times["live_migrate"])
    # The module's start on the host: from the task's start to its first migration's.
    startup = (min(e["started_at"] for e in entries) - waves[0]["started_at"]) if entries and waves else None
    return {"wall": wall, "phase": phase, "module_start": startup, "span": span, "fixed": wall - phase,
            "entries": entries, "predicted": predicted_total(output), "controller_cpu": controller_cpu, "engine_cpu": cpu.seconds,
            "plugin_cpu": plugin_cpu, "tasks": times["tasks"]}


def predicted_total(output):
    """(predicted, actual) migration time of the drain, from its report's last line ("total: predicted 22.4 s,
    took 20.3 s": the waves, each from its first start to its last end)."""
    found = re.search(r"total: predicted ([\d.]+) s, took ([\d.]+) s", output)
    return (float(found.group(1)), float(found.group(2))) if found else None


def read_ledger(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def virsh_loop(lab, source, pairs):
    started = time.monotonic()
    for name, destination in pairs:
        subprocess.run(virsh_command(lab, source, name, destination), check=True)
    return time.monotonic() - started


def xargs(lab, source, pairs):
    # xargs runs virsh itself with each line's two words as its last arguments; no shell sees the names.
    command = ["xargs", "-P%d" % CONCURRENCY, "-n2"] + virsh_command(lab, source, "", "")[:-2]
    lines = "".join("%s qemu+tls://%s/system\n" % pair for pair in pairs)
    started = time.monotonic()
    subprocess.run(command, input=lines, text=True, check=True)
    return time.monotonic() - started


def job_times(lab, pairs):
    """libvirt's job time and downtime of each VM's completed migration, read on its destination."""
    found = {}
    for destination in dict.fromkeys(d for _n, d in pairs):
        conn = open_connection(lab.uri(destination))
        try:
            for name, _d in [p for p in pairs if p[1] == destination]:
                stats = conn.lookupByName(name).jobStats(1 | 2)
                found[name] = (stats.get("time_elapsed", 0) / 1000.0, stats.get("downtime"))
        finally:
            conn.close()
    return found


def put_back(lab, names, source):
    """Every VM running on `source` again, no maintenance mark (untimed)."""
    lab.in_host(source, ["rm", "-f", MARK])
    where = {}
    for host in lab.hosts:
        conn = open_connection(lab.uri(host))
        try:
            for dom in conn.listAllDomains(1):  # active ones
                if dom.name() in names:
                    where[dom.name()] = host
        finally:
            conn.close()
    missing = sorted(set(names) - set(where))
    if missing:
        raise SystemExit("not running anywhere: %s" % ", ".join(missing))
    for host in dict.fromkeys(where.values()):
        if host != source:
            execute(lab, host, [move(lab, n, source) for n, h in where.items() if h == host], max_parallel=2,
                    max_parallel_per_destination=2, tls_stream=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--log-dir", default=os.path.join(REPO, ".tmp", "bench-drain"),
                        help="the drains' output, task times and ledger (default .tmp/bench-drain)")
    args = parser.parse_args()
    lab = load_lab()
    source = list(lab.hosts)[0]
    names = [g["name"] for g in lab.config["guests"] if g["host"] == source]
    log_dir = args.log_dir
    os.makedirs(log_dir, exist_ok=True)
    ledger = os.path.join(log_dir, "ledger.jsonl")
    if os.path.exists(ledger):
        os.unlink(ledger)
    rounds = []
    put_back(lab, names, source)
    for round_no in range(1, args.rounds + 1):
        busy = Busy()
        result = {"drain": drain(lab, source, ledger, log_dir, round_no)}
        result["drain_busy"] = busy.since()
        pairs = [(e["vm"], e["destination"]) for e in result["drain"]["entries"]]
        result["drain_jobs"] = job_times(lab, pairs)
        put_back(lab, names, source)
        busy = Busy()
        result["virsh"] = virsh_loop(lab, source, pairs)
        result["virsh_busy"] = busy.since()
        result["virsh_jobs"] = job_times(lab, pairs)
        put_back(lab, names, source)
        busy = Busy()
        result["xargs"] = xargs(lab, source, pairs)
        result["xargs_busy"] = busy.since()
        result["xargs_jobs"] = job_times(lab, pairs)
        result["bound"] = sum(t for t, _d in result["xargs_jobs"].values()) / CONCURRENCY
        put_back(lab, names, source)
        result["pairs"] = pairs
        rounds.append(result)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(rounds, handle, indent=1, default=str)
        d = result["drain"]
        print("round %d: drain %.1f s (migration phase %.1f s, engine span %.1f s, fixed %.1f s, predicted %s s),"
              " virsh loop %.1f s, xargs -P2 %.1f s, bound %.1f s; %d moves; CPUs busy %d%%, %d%%, %d%%" % (
                  round_no, d["wall"], d["phase"], d["span"], d["fixed"], (d["predicted"] or ("?",))[0], result["virsh"],
                  result["xargs"], result["bound"], len(pairs), 100 * result["drain_busy"],
                  100 * result["virsh_busy"], 100 * result["xargs_busy"]), flush=True)
    report(rounds, source, names)


def report(rounds, source, names):
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    xargs_wall = med(r["xargs"] for r in rounds)
    rows = [("drain playbook (whole)", med(r["drain"]["wall"] for r in rounds)),
            ("drain: migration phase (Move the wave's VMs tasks)", med(r["drain"]["phase"] for r in rounds)),
            ("drain: engine span (first start to last end)", med(r["drain"]["span"] for r in rounds)),
            ("drain: first wave's module start (task start to first migration)",
             med(r["drain"]["module_start"] for r in rounds)),
            ("drain: fixed cost (whole - migration phase)", med(r["drain"]["fixed"] for r in rounds)),
            ("sequential virsh loop", med(r["virsh"] for r in rounds)),
            ("xargs -P2", xargs_wall),
            ("lower bound (sum of job times / 2)", med(r["bound"] for r in rounds))]
    pairs = rounds[0]["pairs"]
    print("\n%d VMs from %s (%s), %d rounds alternating, medians\n" % (
        len(names), source, ", ".join("%s->%s" % p for p in pairs), len(rounds)))
    print("| what | wall time | against xargs -P2 |")
    print("| --- | --- | --- |")
    for label, value in rows:
        print("| %s | %.1f s | %.2f |" % (label, value, value / xargs_wall))
    moved = len(pairs)
    predicted = [r["drain"]["predicted"] for r in rounds if r["drain"]["predicted"]]
    print("\nwhole drain - xargs -P2: %.1f s" % (med(r["drain"]["wall"] for r in rounds) - xargs_wall))
    print("predicted migration time of the drain against actual, by round (the first with an empty ledger): %s" % (
        ", ".join("%.1f s / %.1f s (%+.0f %%)" % (p, a, 100.0 * (p - a) / a) for p, a in predicted)))
    print("CPU seconds per migrated VM: engine (module process on the host) %.3f, live_migrate action plugin %.3f,"
          " whole controller (ansible-playbook and its children) %.3f" % (
              med(r["drain"]["engine_cpu"] for r in rounds) / moved,
              med(r["drain"]["plugin_cpu"] for r in rounds) / moved,
              med(r["drain"]["controller_cpu"] for r in rounds) / moved))
    downtimes = [d for r in rounds for _t, d in r["drain_jobs"].values() if d is not None]
    if downtimes:
        print("drain downtime: %d-%d ms (median %d ms)" % (min(downtimes), max(downtimes), med(downtimes)))
    # Where the fixed cost goes: each task outside the migration phase (summed over its runs in a drain), median
    # over the rounds, longest first; module runs are the tasks that take about a second or more here.
    names = []
    for r in rounds:
        for task in r["drain"]["tasks"]:
            if task["name"] not in names and "Move the wave" not in task["name"]:
                names.append(task["name"])
    per_task = []
    for name in names:
        per_round = [sum(t["seconds"] for t in r["drain"]["tasks"] if t["name"] == name) for r in rounds]
        runs = max(sum(1 for t in r["drain"]["tasks"] if t["name"] == name) for r in rounds)
        per_task.append((med(per_round), runs, name))
    per_task.sort(reverse=True)
    print("\nfixed cost by task (median over rounds, summed over the task's runs in one drain):")
    print("| task | runs | seconds |")
    print("| --- | --- | --- |")
    for seconds, runs, name in per_task:
        if seconds >= 0.5:
            print("| %s | %d | %.2f |" % (name.split(" : ", 1)[-1][:90], runs, seconds))
    small = [p for p in per_task if p[0] < 0.5]
    print("| %d other tasks (includes, facts set, asserts, messages) | %d | %.2f |" % (
        len(small), sum(p[1] for p in small), sum(p[0] for p in small)))
    print("| ansible-playbook's own start and end (whole - sum of tasks) | | %.2f |" % med(
        r["drain"]["wall"] - sum(t["seconds"] for t in r["drain"]["tasks"]) for r in rounds))
    print("\nall rounds: %s" % [{"drain": round(r["drain"]["wall"], 1), "phase": round(r["drain"]["phase"], 1),
                                 "virsh": round(r["virsh"], 1), "xargs": round(r["xargs"], 1),
                                 "bound": round(r["bound"], 1)} for r in rounds])


if __name__ == "__main__":
    main()
