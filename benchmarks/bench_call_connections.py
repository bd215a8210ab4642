#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Concurrent migrateToURI3 calls on one shared source connection against one connection per call, on the default
lab (tests/lab/lab.json, idle guests of hv1), in one run, alternating:

    flock /tmp/hvmaint-lab.lock .venv/bin/python benchmarks/bench_call_connections.py --rounds 4

Each round moves the same idle guests hv1 -> hv2 at once (one thread each) and back, once with every call on one
connection and once with a connection per call, and prints when the last call returned. The engine
(plugins/module_utils/_migration/engine.py, `_call_connection`) gives each call its own connection because of
what this measured. The VMs end where they started.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import libvirt

PKI = "?pkipath=/var/tmp/hvmaint-lab/pki/controller"
HOSTS = {"hv1": "qemu+tls://10.77.0.11/system" + PKI, "hv2": "qemu+tls://10.77.0.12/system" + PKI}
FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_TLS)


def move_all(vms, source, destination, shared):
    """Seconds from the first call's start to the last call's return."""
    shared_conn = libvirt.open(HOSTS[source])
    ends, errors = [], []

    def one(name):
        conn = shared_conn if shared else libvirt.open(HOSTS[source])
        try:
            conn.lookupByName(name).migrateToURI3("qemu+tls://%s/system" % destination, {}, FLAGS)
            ends.append(time.monotonic())
        except libvirt.libvirtError as exc:
            errors.append("%s: %s" % (name, exc))
        finally:
            if conn is not shared_conn:
                conn.close()

    threads = [threading.Thread(target=one, args=(name,)) for name in vms]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared_conn.close()
    if errors:
        raise SystemExit("; ".join(errors))
    return max(ends) - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--vms", nargs="+", default=["idle1", "idle2", "idle3"])
    args = parser.parse_args()
    times = {True: [], False: []}
    for round_no in range(1, args.rounds + 1):
        for shared in (True, False) if round_no % 2 else (False, True):
            for source, destination in (("hv1", "hv2"), ("hv2", "hv1")):
                seconds = move_all(args.vms, source, destination, shared)
                times[shared].append(seconds)
                print("round %d, %s, %s -> %s: last call returned after %.2f s" % (
                    round_no, "one shared connection" if shared else "a connection per call", source, destination,
                    seconds), flush=True)
    print("%d guests at once, %d moves each way, medians: one shared connection %.2f s, a connection per call %.2f s"
          % (len(args.vms), len(times[True]), statistics.median(times[True]), statistics.median(times[False])))


if __name__ == "__main__":
    main()
