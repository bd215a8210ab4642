#!/usr/bin/env python3
"""How long cpu_compat's check_matrix takes for 1,000 guests against 100 hosts.

Built from the twenty real CPU definitions in tests/unit/fixtures/cpu (ten processors, five Intel, five AMD:
a host-model guest CPU and a host capabilities CPU each), resolved through libvirt 11.3.0's CPU map. Three fleets,
from the most to the least sharing of CPU definitions:

* replicated: the 10 guest definitions and 10 host definitions copied under new names (10 and 9 distinct CPUs;
  two of the AMD hosts report the same CPU);
* toggled: as replicated, but most copies differ by one feature (a guest disables one of ten common features,
  a host reports one more, as firmware and microcode updates do), about 90 distinct guest CPUs and 90 distinct
  host CPUs, like a real fleet's templates and host generations;
* all-distinct: every guest and nearly every host is a different CPU (combinations of disabled or extra
  features), so verdicts can hardly be shared: the worst case.

Each pair's full result (verdict, sorted missing features, reasons with names) is built. Wall clock with
time.perf_counter, best of --repeat runs, XML parsing included.

Run from the repository root:  .venv/bin/python benchmarks/bench_cpu_matrix.py
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, ".tmp", "collections"))

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _cpu_compat  # noqa: E402

FIXTURES = os.path.join(_ROOT, "tests", "unit", "fixtures", "cpu")
CPU_MAP = os.path.join(FIXTURES, "cpu_map-11.3.0")
CPUS = ["Core2-E6850", "Xeon-E5-2650-v3", "Xeon-Gold-6148", "Xeon-Platinum-8268", "Ice-Lake-Server",
        "Opteron-6282", "Ryzen-7-1800X-Eight-Core", "EPYC-7601-32-Core", "EPYC-7502-32-Core", "FX-8150"]
# Features every fixture CPU has (the Core2's model covers them), so disabling one changes every guest CPU.
TOGGLES = ["sse2", "sse", "mmx", "fxsr", "cx8", "pae", "mce", "pge", "cmov", "pat"]
# Features a host may report after a firmware or microcode update (some fixture hosts have some already).
HOST_EXTRAS = ["md-clear", "stibp", "ssbd", "arch-capabilities", "rdctl-no", "mds-no", "pschange-mc-no",
               "hypervisor", "umip", "tsx-ctrl"]


def _read(cpu, kind):
    with open(os.path.join(FIXTURES, "x86_64-cpuid-%s-%s.xml" % (cpu, kind))) as handle:
        return handle.read()


def _disable(xml, names):
    return xml.replace("</cpu>", "".join("<feature policy='disable' name='%s'/>" % n for n in names) + "</cpu>")


def _with_extra(xml, names):
    return xml.replace("</cpu>", "".join("<feature name='%s'/>" % n for n in names) + "</cpu>")


def make_fleet(kind, n_guests=1000, n_hosts=100):
    guests_xml = [_read(c, "guest") for c in CPUS]
    hosts_xml = [_read(c, "host") for c in CPUS]
    guests, hosts = [], []
    for i in range(n_guests):
        base, copy = guests_xml[i % 10], i // 10
        if kind == "replicated":
            xml = base
        elif kind == "toggled":
            xml = _disable(base, [TOGGLES[copy % 11 - 1]] if copy % 11 else [])
        else:  # all-distinct: copy numbers 0..99 as bit patterns over seven toggles
            xml = _disable(base, [TOGGLES[b] for b in range(7) if copy >> b & 1])
        guests.append({"name": "vm%04d" % i, "xml": xml})
    for i in range(n_hosts):
        base, copy = hosts_xml[i % 10], i // 10
        if kind == "replicated":
            xml = base
        elif kind == "toggled":
            xml = _with_extra(base, [HOST_EXTRAS[copy - 1]] if copy else [])
        else:  # all-distinct: copy numbers 0..9 over four extras, and the twin AMD hosts made to differ
            xml = _with_extra(base, [HOST_EXTRAS[b] for b in range(4) if copy >> b & 1] + (["topoext"] if i % 10 == 9
                                                                                          else []))
            xml = _disable(xml, [TOGGLES[copy]] if copy >= 5 else [])
        hosts.append({"name": "hv%03d" % i, "xml": xml})
    return guests, hosts


def measure(kind, repeat):
    guests, hosts = make_fleet(kind)
    best = None
    matrix = None
    for _ in range(repeat):
        start = time.perf_counter()
        matrix = _cpu_compat.check_matrix(guests, hosts, CPU_MAP)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    session = _cpu_compat._Session(CPU_MAP)
    distinct_guests = len({id(cpu) for _name, cpu in session.guests(guests)})
    distinct_hosts = len({id(cpu) for _name, cpu in session.hosts(hosts)})
    counts = collections.Counter(pair["result"] for pair in matrix)
    return {
        "fleet": kind,
        "pairs": len(matrix),
        "distinct": "%d x %d" % (distinct_guests, distinct_hosts),
        "best_s": best,
        "us_per_pair": best / len(matrix) * 1e6,
        "results": ", ".join("%s %d" % (r, counts[r]) for r in _cpu_compat.RESULTS if counts[r]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per fleet; the best is reported (default 3)")
    parser.add_argument("--fleet", choices=["replicated", "toggled", "all-distinct"], action="append",
                        help="only these fleets (default: all three)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("check_matrix, 1,000 guests x 100 hosts, best of %d, Python %s, %d CPUs, load average %.2f at start"
          % (args.repeat, sys.version.split()[0], os.cpu_count() or 0, load))
    print("| fleet | distinct CPUs (guests x hosts) | pairs | best | per pair | results |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in args.fleet or ["replicated", "toggled", "all-distinct"]:
        row = measure(kind, args.repeat)
        print("| %(fleet)s | %(distinct)s | %(pairs)d | %(best_s).2f s | %(us_per_pair).1f us | %(results)s |" % row)


if __name__ == "__main__":
    main()
