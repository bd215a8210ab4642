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
records every task's time); its fixed cost is the rest. A method that fails in a round (a migration error, no end
within METHOD_TIMEOUT_S) is named at the end and left out of that method's medians; the run goes on with the next
method once the VMs are back on the source, and stops only when they cannot be put back. The engine's CPU time is sampled from /proc on the
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
LEASE = "/var/lib/libvirt/hvmaint/lease.json"
# A method that takes longer than this is stuck: it fails its round, and the run goes on.
METHOD_TIMEOUT_S = 600
# Putting the VMs back is what every later method relies on: tried a few times before the run stops.
PUT_BACK_ATTEMPTS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def virsh_command(lab, source, name, destination):
    return ["virsh", "-q", "-c", lab.uri(source), "migrate", "--live", "--p2p", "--tls", "--persistent",
            "--undefinesource", name, "qemu+tls://%s/system" % destination]


class EngineCpu:
    """Samples the CPU time of every live_migrate module process (on any lab host) while a drain runs: under
    async_wrapper the module's own process (AnsiballZ_live_migrate on its command line), in a detached run the
    process that migrates (its stdout is the run's result file, hvmaint_live_migrate_*.result.json.tmp). The
    detached run's first process, which only starts it (under a second), is not counted."""

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
                        if b"AnsiballZ_live_migrate" not in handle.read() and not _writes_a_migration_result(pid):
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


def _writes_a_migration_result(pid):
    try:
        return "hvmaint_live_migrate_" in os.readlink("/proc/%s/fd/1" % pid)
    except OSError:
        return False


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
    log = os.path.join(log_dir, "drain-%d.log" % round_no)
    with open(log, "w", encoding="utf-8") as out, EngineCpu() as cpu:
        started = time.monotonic()
        try:
            subprocess.run(command, cwd=REPO, env=env, check=True, stdout=out, stderr=subprocess.STDOUT,
                           timeout=METHOD_TIMEOUT_S)
        except subprocess.CalledProcessError as error:
            raise RuntimeError("ansible-playbook exited %d (%s): %s" % (error.returncode, log, why_failed(log))) from None
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


def why_failed(log):
    """The first task failure of a drain's output (its "fatal:" line and message), to name in the report."""
    with open(log, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("fatal:") or line.startswith("failed:"):
            message = next((m.strip() for m in lines[index:index + 40] if m.strip().startswith("msg:")), "")
            return (line.strip() + " " + message)[:400]
    return "no failed task in the output"


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
        subprocess.run(virsh_command(lab, source, name, destination), check=True,
                       timeout=max(1.0, METHOD_TIMEOUT_S - (time.monotonic() - started)))
    return time.monotonic() - started


def xargs(lab, source, pairs):
    # xargs runs virsh itself with each line's two words as its last arguments; no shell sees the names.
    command = ["xargs", "-P%d" % CONCURRENCY, "-n2"] + virsh_command(lab, source, "", "")[:-2]
    lines = "".join("%s qemu+tls://%s/system\n" % pair for pair in pairs)
    started = time.monotonic()
    subprocess.run(command, input=lines, text=True, check=True, timeout=METHOD_TIMEOUT_S)
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
    """Every VM running on `source` again, no maintenance mark and no lease (untimed). A lease left behind (by a
    drain that failed before it could give it back) is named, then removed, so that the next round can drain."""
    lab.in_host(source, ["rm", "-f", MARK])
    for host in lab.hosts:
        left = lab.in_host(host, ["cat", LEASE], check=False)  # tests/lab/lab.py run(): captured, as text
        if left.returncode == 0 and left.stdout.strip():
            print("  (a lease was left on %s, removed: %s)" % (host, left.stdout.strip()[:200]), flush=True)
            lab.in_host(host, ["rm", "-f", LEASE])
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


def describe(error):
    if isinstance(error, subprocess.CalledProcessError):
        return "%s exited %s" % (os.path.basename(str(error.cmd[0])), error.returncode)
    if isinstance(error, subprocess.TimeoutExpired):
        return "no end after %d s" % error.timeout
    return ("%s: %s" % (type(error).__name__, error)).strip()[:300]


def jobs_or_none(lab, pairs, failures, round_no, method):
    try:
        return job_times(lab, pairs)
    except Exception as error:  # noqa: BLE001 - the wall time stands; only the bound is lost
        failures.append("round %d, %s job times: %s" % (round_no, method, describe(error)))
        return None


def attempt_put_back(lab, names, source, failures, round_no):
    for tried in range(1, PUT_BACK_ATTEMPTS + 1):
        try:
            put_back(lab, names, source)
            return True
        except (Exception, SystemExit) as error:  # noqa: BLE001 - retried; the run stops only if it never works
            failures.append("round %d, putting the VMs back (attempt %d): %s" % (round_no, tried, describe(error)))
            print("  putting the VMs back failed (attempt %d): %s" % (tried, describe(error)), flush=True)
            time.sleep(5)
    return False


def print_round(result):
    def wall(value):
        return "failed" if value is None else "%.1f s" % value

    d = result["drain"]
    drain = ("failed" if d is None else "%.1f s (migration phase %.1f s, engine span %.1f s, fixed %.1f s, predicted "
             "%s s)" % (d["wall"], d["phase"], d["span"], d["fixed"], (d["predicted"] or ("?",))[0]))
    print("round %d: drain %s, virsh loop %s, xargs -P2 %s, bound %s; %s moves; CPUs busy %s" % (
        result["round"], drain, wall(result.get("virsh")), wall(result.get("xargs")), wall(result.get("bound")),
        len(result["pairs"] or ()), ", ".join("%d%%" % (100 * result[m + "_busy"]) for m in ("drain", "virsh", "xargs")
                                               if m + "_busy" in result)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--max-seconds", type=float, default=0,
                        help="start no round that would, at the pace of the last one, end after this many seconds"
                             " from the start (for a bounded hold of the lab); 0: no limit")
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
    failures = []
    if not attempt_put_back(lab, names, source, failures, 0):
        raise SystemExit("the VMs cannot be put back on %s before the first round: %s" % (source, failures))
    good_pairs = None
    run_started, round_s = time.monotonic(), 0.0
    for round_no in range(1, args.rounds + 1):
        if args.max_seconds and time.monotonic() - run_started + round_s > args.max_seconds:
            print("round %d not started: it would end after --max-seconds %d" % (round_no, args.max_seconds), flush=True)
            break
        round_started = time.monotonic()
        result = {"round": round_no, "failed": []}
        rounds.append(result)

        def timed(method, function, *call_args):
            # One method of one round, its CPU share and job times; a failure is recorded and counted out of the
            # medians, never the end of the run (the next round starts from the VMs put back on the source).
            busy = Busy()
            try:
                result[method] = function(*call_args)
            except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure of the method fails its round only
                result[method] = None
                result["failed"].append(method)
                failures.append("round %d, %s: %s" % (round_no, method, describe(error)))
                print("round %d: %s failed: %s" % (round_no, method, describe(error)), flush=True)
            result[method + "_busy"] = busy.since()
            return result[method] is not None

        if timed("drain", drain, lab, source, ledger, log_dir, round_no):
            pairs = [(e["vm"], e["destination"]) for e in result["drain"]["entries"]]
            result["drain_jobs"] = jobs_or_none(lab, pairs, failures, round_no, "drain")
            good_pairs = pairs
        # The one-liners move what the drain of this round moved; after a failed drain, what an earlier one did.
        pairs = good_pairs
        result["pairs"] = pairs
        for method, function in (("virsh", virsh_loop), ("xargs", xargs)):
            if not attempt_put_back(lab, names, source, failures, round_no):
                break
            if pairs is None:
                result[method] = None
                continue
            if timed(method, function, lab, source, pairs):
                result[method + "_jobs"] = jobs_or_none(lab, pairs, failures, round_no, method)
        else:
            jobs = result.get("xargs_jobs")
            result["bound"] = sum(t for t, _d in jobs.values()) / CONCURRENCY if jobs else None
            if attempt_put_back(lab, names, source, failures, round_no):
                if args.json:
                    with open(args.json, "w", encoding="utf-8") as handle:
                        json.dump(rounds, handle, indent=1, default=str)
                print_round(result)
                round_s = time.monotonic() - round_started
                continue
        print("the VMs could not be put back on %s: the run stops after round %d" % (source, round_no), flush=True)
        break
    report(rounds, source, names, failures)


def report(rounds, source, names, failures):
    """Medians over the rounds where the method succeeded; a failed method of a round is named and left out."""
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def seconds(value):
        return "-" if value is None else "%.1f s" % value

    drains = [r["drain"] for r in rounds if r.get("drain")]
    counted = {m: sum(1 for r in rounds if r.get(m) is not None) for m in ("drain", "virsh", "xargs", "bound")}
    xargs_wall = med(r.get("xargs") for r in rounds)
    rows = [("drain playbook (whole)", med(d["wall"] for d in drains), "drain"),
            ("drain: migration phase (Move the wave's VMs tasks)", med(d["phase"] for d in drains), "drain"),
            ("drain: engine span (first start to last end)", med(d["span"] for d in drains), "drain"),
            ("drain: first wave's module start (task start to first migration)",
             med(d["module_start"] for d in drains), "drain"),
            ("drain: fixed cost (whole - migration phase)", med(d["fixed"] for d in drains), "drain"),
            ("sequential virsh loop", med(r.get("virsh") for r in rounds), "virsh"),
            ("xargs -P2", xargs_wall, "xargs"),
            ("lower bound (sum of job times / 2)", med(r.get("bound") for r in rounds), "bound")]
    pairs = next((r["pairs"] for r in rounds if r.get("pairs")), None) or []
    print("\n%d VMs from %s (%s), %d rounds alternating, medians over the rounds each method succeeded in\n" % (
        len(names), source, ", ".join("%s->%s" % p for p in pairs), len(rounds)))
    print("| what | wall time | against xargs -P2 | rounds counted |")
    print("| --- | --- | --- | --- |")
    for label, value, method in rows:
        ratio = "%.2f" % (value / xargs_wall) if value is not None and xargs_wall else "-"
        print("| %s | %s | %s | %d of %d |" % (label, seconds(value), ratio, counted[method], len(rounds)))
    if failures:
        print("\nfailures (left out of the medians):\n  " + "\n  ".join(failures))
    if not drains:
        print("\nno drain succeeded: nothing more to report")
        return
    drain_wall = med(d["wall"] for d in drains)
    if xargs_wall is not None:
        print("\nwhole drain - xargs -P2: %.1f s" % (drain_wall - xargs_wall))
    predicted = [(r["round"], r["drain"]["predicted"]) for r in rounds if r.get("drain") and r["drain"]["predicted"]]
    print("predicted migration time of the drain against actual, by round (round 1 plans with an empty ledger): %s" % (
        ", ".join("round %d: %.1f s / %.1f s (%+.0f %%)" % (n, p, a, 100.0 * (p - a) / a) for n, (p, a) in predicted)))
    per_vm = [d for d in drains if d["entries"]]
    if per_vm:
        print("CPU seconds per migrated VM: engine (module process on the host) %.3f, live_migrate action plugin %.3f,"
              " whole controller (ansible-playbook and its children) %.3f" % (
                  med(d["engine_cpu"] / len(d["entries"]) for d in per_vm),
                  med(d["plugin_cpu"] / len(d["entries"]) for d in per_vm),
                  med(d["controller_cpu"] / len(d["entries"]) for d in per_vm)))
    downtimes = [d for r in rounds for _t, d in (r.get("drain_jobs") or {}).values() if d is not None]
    if downtimes:
        print("drain downtime: %d-%d ms (median %d ms)" % (min(downtimes), max(downtimes), med(downtimes)))
    # Where the fixed cost goes: each task outside the migration phase (summed over its runs in a drain), median
    # over the drains, longest first; module runs are the tasks that take about a second or more here.
    task_names = []
    for d in drains:
        for task in d["tasks"]:
            if task["name"] not in task_names and "Move the wave" not in task["name"]:
                task_names.append(task["name"])
    per_task = []
    for name in task_names:
        per_round = [sum(t["seconds"] for t in d["tasks"] if t["name"] == name) for d in drains]
        runs = max(sum(1 for t in d["tasks"] if t["name"] == name) for d in drains)
        per_task.append((med(per_round), runs, name))
    per_task.sort(reverse=True)
    print("\nfixed cost by task (median over the drains, summed over the task's runs in one drain):")
    print("| task | runs | seconds |")
    print("| --- | --- | --- |")
    for spent, runs, name in per_task:
        if spent >= 0.5:
            print("| %s | %d | %.2f |" % (name.split(" : ", 1)[-1][:90], runs, spent))
    small = [p for p in per_task if p[0] < 0.5]
    print("| %d other tasks (includes, facts set, asserts, messages) | %d | %.2f |" % (
        len(small), sum(p[1] for p in small), sum(p[0] for p in small)))
    print("| ansible-playbook's own start and end (whole - sum of tasks) | | %.2f |" % med(
        d["wall"] - sum(t["seconds"] for t in d["tasks"]) for d in drains))

    def rounded(value):
        return None if value is None else round(value, 1)

    print("\nall rounds: %s" % [{"drain": rounded((r.get("drain") or {}).get("wall")),
                                 "phase": rounded((r.get("drain") or {}).get("phase")),
                                 "virsh": rounded(r.get("virsh")), "xargs": rounded(r.get("xargs")),
                                 "bound": rounded(r.get("bound"))} for r in rounds])


if __name__ == "__main__":
    main()
