"""live_migrate on the lab: what a person moving VMs off a host would check.

Runs against whichever lab HVMAINT_LAB_CONFIG names (default tests/lab/lab.json). Host names, guests and
addresses come from the lab's config; each test finds where a VM is before moving it, and a fixture puts every
guest back where it was when the test started.

Most tests call the engine (plugins/module_utils/_migration/) from the controller, as the module would on the
source host; the progress and interruption tests run the module through ansible-playbook on the source host.
Figures (downtime, ping gaps, timings) are printed: run with -s to see them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from conftest import lab_module, revive_linux_guests

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError, open_connection
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import engine as migration_engine
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import policy as migration_policy
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import run as migration_run
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import read_domain_metadata

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Longest ping gap allowed beyond the policy's max downtime: the ping interval (10 ms), the time QEMU on the
# destination needs after the switch-over to announce the VM's MAC (self-announce) so the bridges learn its new
# port, and scheduling noise on a 2-CPU machine running TCG guests. Measured gaps stay well inside it.
PING_MARGIN_MS = 700
# libvirt's own downtime figure may exceed the limit a little: QEMU estimates the final pause from the bandwidth
# it measured, and the lab's TCG guests make that estimate noisy.
DOWNTIME_MARGIN_MS = 300


# ---- helpers ---------------------------------------------------------------------------------------------------

def guests(lab, kind=None, disk=None):
    found = []
    for guest in lab.config["guests"]:
        if kind and guest["kind"] != kind:
            continue
        if disk is not None and bool(guest.get("disk_mib")) != disk:
            continue
        found.append(guest)
    return found


def linux_guest(lab):
    candidates = [g for g in guests(lab, "linux") if g.get("ip") and g.get("dirty_mib_s")]
    if not candidates:
        pytest.skip("the lab has no Linux workload guest")
    return candidates[0]


def where(lab, name):
    """(defined_on, running_on) for a guest, from virsh on every host."""
    return lab.locate_guest(name)


def home_of(lab, name):
    defined, running = where(lab, name)
    assert len(running) == 1 and defined == running, "%s: defined on %s, running on %s" % (name, defined, running)
    return running[0]


def other_host(lab, host, avoid=()):
    for name in lab.hosts:
        if name != host and name not in avoid:
            return name
    for name in lab.hosts:
        if name != host:
            return name
    pytest.skip("the lab has a single host")


def policy(**options):
    return migration_policy.validate_policy({key: options.get(key) for key in migration_policy.POLICY_OPTIONS})


def migrator(lab, source, destination, **options):
    return migration_engine.Migrator(lab.uri(source), "qemu+tls://%s/system" % destination, policy(**options),
                                     destination=destination, destination_connect_uri=lab.uri(destination),
                                     progress=options.get("progress"))


def migrate(lab, names, source, destination, **options):
    with migrator(lab, source, destination, **options) as engine:
        engine.connect()
        return engine.run(engine.preflight(list(names)))


def execute(lab, source, destination, **params):
    """The module's own code path (execute), from the controller."""
    check_mode = params.pop("_check_mode", False)
    full = {"uri": lab.uri(source), "state": "migrated", "transport": "tls"}
    if destination is not None:
        full.update(destination=destination, destination_uri="qemu+tls://%s/system" % destination,
                    destination_connect_uri=lab.uri(destination))
    full.update(params)
    return migration_run.execute(full, check_mode=check_mode)


def assert_exactly_one(lab, name, host):
    defined, running = where(lab, name)
    assert running == [host], "%s should run on %s only; runs on %s" % (name, host, running)
    assert defined == [host], "%s should be defined on %s only; defined on %s" % (name, host, defined)


def source_has_no_job(lab, host, name):
    conn = open_connection(lab.uri(host))
    try:
        return conn.lookupByName(name).jobInfo()[0] == 0
    finally:
        conn.close()


@pytest.fixture
def restore(lab):
    """Put every guest back on the host it ran on when the test started."""
    revive_linux_guests(lab)
    start = {g["name"]: where(lab, g["name"]) for g in lab.config["guests"]}
    yield start
    for host in lab.hosts:
        if lab.daemon_pid(host, "libvirtd") is None:
            lab.wait_for_libvirt(host)  # restarts a libvirtd a test killed
    moves = {}
    for name, (_defined, running) in start.items():
        if len(running) != 1:
            continue
        now = where(lab, name)[1]
        if len(now) == 1 and now[0] != running[0]:
            moves.setdefault((now[0], running[0]), []).append(name)
    for (source, destination), names in moves.items():
        results = migrate(lab, names, source, destination, max_parallel=2)
        bad = [r for r in results if r["outcome"] != "migrated"]
        assert not bad, "could not put %s back: %s" % (names, bad)


class Pinger:
    """ping -D -i 0.01 in the background; the longest gap between replies tells how long the VM was unreachable."""

    def __init__(self, address):
        self.process = subprocess.Popen(["ping", "-D", "-n", "-i", "0.01", "-W", "1", address],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        out = self.process.communicate(timeout=10)[0]
        stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        return {"replies": len(stamps), "longest_gap_ms": round(max(gaps) * 1000, 1) if gaps else None}


def wait_for_job(lab, host, name, timeout=60, moving=True):
    """Wait until the VM's migration job on `host` has started moving data."""
    conn = open_connection(lab.uri(host))
    try:
        dom = conn.lookupByName(name)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                stats = dom.jobStats(0)
            except Exception:  # noqa: BLE001 - the job may be starting or ending
                stats = {}
            if stats.get("type") and (not moving or stats.get("memory_processed", 0) > 0):
                return stats
            time.sleep(0.1)
    finally:
        conn.close()
    raise AssertionError("no migration job of %s on %s within %d s" % (name, host, timeout))


def run_in_thread(function, *args, **kwargs):
    box = {}

    def target():
        try:
            box["result"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def playbook(lab, host, task, work):
    inventory = os.path.join(lab.state_dir, "inventory.yml")
    play = [{"hosts": host, "gather_facts": False, "tasks": [dict(task, register="result", ignore_errors=True), {
        "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": os.path.join(work, "result.json")},
        "delegate_to": "localhost"}]}]
    path = os.path.join(work, "play.yml")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(play, handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".tmp", "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PYTHONUNBUFFERED="1")
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return subprocess.Popen([binary, "-i", inventory, path], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


WALL_MINUS_MONOTONIC = time.time() - time.monotonic()


def read_lines_with_time(process):
    lines = []
    for line in process.stdout:
        lines.append((time.monotonic(), line.rstrip("\n")))
    process.wait()
    return lines


# ---- the tests -------------------------------------------------------------------------------------------------

def test_linux_guest_under_load_with_pinger(lab, restore):
    guest = linux_guest(lab)
    source = home_of(lab, guest["name"])
    destination = other_host(lab, source)
    pinger = Pinger(guest["ip"])
    time.sleep(1.5)
    result = migrate(lab, [guest["name"]], source, destination, max_downtime_ms=300)[0]
    time.sleep(1.5)
    ping = pinger.stop()
    print("\n%s %s->%s under %d MiB/s dirtying: libvirt downtime %s ms, longest ping gap %s ms (%d replies),"
          " %s iterations, %.1f MiB sent, %.2f s" % (
              guest["name"], source, destination, guest["dirty_mib_s"], result["downtime_ms"],
              ping["longest_gap_ms"], ping["replies"], result["memory_iterations"],
              result["data_transferred_bytes"] / 2.0 ** 20, result["elapsed_s"]))
    assert result["outcome"] == "migrated", result
    assert_exactly_one(lab, guest["name"], destination)
    assert result["dirty_rate_pages_s"] is not None and result["memory_iterations"] >= 2
    assert ping["replies"] > 100, "the pinger saw too few replies to judge"
    assert result["downtime_ms"] <= 300 + DOWNTIME_MARGIN_MS
    assert ping["longest_gap_ms"] <= 300 + PING_MARGIN_MS


def test_batch_of_idle_guests_respects_concurrency_bound(lab, restore):
    by_host = {}
    for guest in guests(lab, "idle", disk=False):
        by_host.setdefault(home_of(lab, guest["name"]), []).append(guest["name"])
    source, names = max(by_host.items(), key=lambda item: len(item[1]))
    if len(names) < 3:
        pytest.skip("fewer than 3 idle guests on one host")
    destination = other_host(lab, source)
    observed, stop = [], threading.Event()

    def sample():
        # Count, from outside the engine, the VMs of the batch that have a migration job on the source and do not
        # run on the destination yet: once a VM runs there, libvirt only stops the source's QEMU, and the engine
        # starts the next VM meanwhile.
        conn = open_connection(lab.uri(source))
        dconn = open_connection(lab.uri(destination))
        doms = {name: conn.lookupByName(name) for name in names}

        def runs_on_destination(name):
            try:
                return dconn.lookupByName(name).state()[0] == 1  # VIR_DOMAIN_RUNNING
            except Exception:  # noqa: BLE001 - not there yet
                return False

        try:
            while not stop.is_set():
                active = []
                for name, dom in doms.items():
                    try:
                        if dom.jobInfo()[0] != 0 and not runs_on_destination(name):
                            active.append(name)
                    except Exception:  # noqa: BLE001 - the domain left the source
                        pass
                observed.append((time.monotonic(), active))
                time.sleep(0.02)
        finally:
            conn.close()
            dconn.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(0.2)
    started = time.monotonic()
    results = migrate(lab, names, source, destination, max_parallel=2)
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    most = max(len(active) for _t, active in observed)
    # The same bound seen in the results' own times: a migration holds its slot from its start until the engine saw
    # its VM run on the destination (switched_over_at); libvirt's clean-up of the source after that holds no slot.
    edges = sorted([(r["started_at"], 1) for r in results]
                   + [(r.get("switched_over_at") or r["finished_at"], -1) for r in results])
    overlap, peak = 0, 0
    for _t, step in edges:
        overlap += step
        peak = max(peak, overlap)
    print("\nbatch of %d idle guests %s->%s, max_parallel=2: %.2f s wall (%.2f s per VM), at most %d migration jobs"
          " seen on the source in %d samples, at most %d overlapping in the results; per VM: %s" % (
              len(names), source, destination, wall, wall / len(names), most, len(observed), peak,
              ", ".join("%s %.2f s" % (r["name"], r["elapsed_s"]) for r in results)))
    assert [r["outcome"] for r in results] == ["migrated"] * len(names)
    assert [r["name"] for r in results] == names
    # The bound, seen from outside the engine: never more than two migrations on the source at once whose VM does
    # not run on the destination yet.
    assert most <= 2
    assert most >= 1, "the sampler saw no migration job at all: it proves nothing"
    # That two did run side by side is read from the results' own times: an idle guest's libvirt job lasts well
    # under a second, so a sampler that needs ~100 ms a round does not always catch two jobs in the same round.
    assert peak >= 2, "two migrations should have run at once"
    assert peak <= 2, "more than max_parallel migrations held a slot at once"
    for name in names:
        assert_exactly_one(lab, name, destination)


def qcow2_digest(path):
    with tempfile.TemporaryDirectory() as work:
        raw = os.path.join(work, "disk.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, raw], check=True)
        digest = hashlib.sha256()
        with open(raw, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def test_disk_guest_copies_local_storage(lab, restore):
    candidates = guests(lab, disk=True)
    if not candidates:
        pytest.skip("the lab has no guest with a local disk")
    name = candidates[0]["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)

    def image(host):
        return os.path.join(lab.host_dir(host), "var-lib-libvirt", "images", "%s.qcow2" % name)

    before = qcow2_digest(image(source))
    result = migrate(lab, [name], source, destination)[0]
    after = qcow2_digest(image(destination))
    print("\n%s %s->%s with its disk: %.2f s, %.1f MiB sent, downtime %s ms, steps %s" % (
        name, source, destination, result["elapsed_s"], result["data_transferred_bytes"] / 2.0 ** 20,
        result["downtime_ms"], [s["detail"] for s in result["policy_steps"]]))
    assert result["outcome"] == "migrated", result
    assert result["copy_storage"] is True
    assert any("storage pool of type dir" in s["detail"] for s in result["policy_steps"])
    assert_exactly_one(lab, name, destination)
    assert after == before, "the disk's content changed in the copy"


def _restart_libvirtd(lab, host):
    pid = lab.daemon_pid(host, "libvirtd")
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 20
        while lab.daemon_pid(host, "libvirtd") == pid and time.time() < deadline:
            time.sleep(0.1)
    lab.in_host(host, ["libvirtd", "-d", "-l", "-p", "/run/libvirt/libvirtd.pid"])
    address = lab.hosts[host]["address"]
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection((address, 16514), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("libvirtd on %s does not listen again" % host)


def test_tls_works_and_a_foreign_ca_is_refused(lab, restore, tmp_path):
    name = guests(lab, "idle", disk=False)[0]["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    # TLS for libvirt's connections and for the migration stream itself.
    result = migrate(lab, [name], source, destination, tls_stream=True)[0]
    assert result["outcome"] == "migrated", result
    assert_exactly_one(lab, name, destination)
    source, destination = destination, source
    stranger = other_host(lab, source, avoid=(destination,)) if len(lab.hosts) > 2 else destination

    # A destination whose server certificate comes from another CA.
    from hvmaint_lab import issue_cert, make_ca  # the lab's own helpers (conftest loads tests/lab/lab.py)
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    make_ca(str(ca_dir), "some other CA")
    issue_cert(str(ca_dir / "cakey.pem"), str(ca_dir / "cacert.pem"), str(tmp_path), "server", stranger, [stranger],
               [lab.hosts[stranger]["address"]])
    # libvirtd checks its own certificate against the CA it trusts when it starts, so the host gets the other CA
    # as well: a host set up by someone else's PKI.
    pki = os.path.join(lab.host_dir(stranger), "pki")
    swap = {os.path.join(pki, "libvirt", "servercert.pem"): tmp_path / "server-cert.pem",
            os.path.join(pki, "libvirt", "private", "serverkey.pem"): tmp_path / "server-key.pem",
            os.path.join(pki, "CA", "cacert.pem"): ca_dir / "cacert.pem"}
    saved = {}
    for path in swap:
        with open(path, "rb") as handle:
            saved[path] = handle.read()
    try:
        for path, replacement in swap.items():
            with open(path, "wb") as handle:
                handle.write(replacement.read_bytes())
        _restart_libvirtd(lab, stranger)
        with pytest.raises(HvmaintError) as refused:
            migrate(lab, [name], source, stranger)
        print("\nforeign CA on %s: %s" % (stranger, refused.value))
        assert "unreachable" in str(refused.value) and "certificate" in str(refused.value).lower()
        # The source's libvirtd refuses it as well when asked directly (the peer-to-peer path).
        conn = open_connection(lab.uri(source))
        try:
            import libvirt
            with pytest.raises(libvirt.libvirtError) as direct:
                conn.lookupByName(name).migrateToURI3("qemu+tls://%s/system" % stranger, {},
                                                      migration_policy.migration_flags(policy(), False))
            print("source libvirtd, directly: %s" % direct.value)
        finally:
            conn.close()
        assert_exactly_one(lab, name, source)
    finally:
        for path, content in saved.items():
            with open(path, "wb") as handle:
                handle.write(content)
        _restart_libvirtd(lab, stranger)
        lab.wait_for_libvirt(stranger)


def test_destination_libvirtd_killed_mid_migration(lab, restore):
    guest = linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    # A bandwidth below the guest's dirty rate keeps the migration running until we strike.
    thread, box = run_in_thread(migrate, lab, [name], source, destination, bandwidth_mib_s=2)
    wait_for_job(lab, source, name)
    time.sleep(1.0)
    killed = lab.daemon_pid(destination, "libvirtd")
    os.kill(killed, signal.SIGKILL)
    struck = time.monotonic()
    thread.join(120)
    assert not thread.is_alive(), "the module did not return after the destination died"
    assert "error" not in box, box.get("error")
    result = box["result"][0]
    print("\nkilled libvirtd on %s: module returned %.1f s later: %s" % (destination, time.monotonic() - struck,
                                                                         result["error"]))
    assert result["outcome"] == "failed"
    assert result["where"]["source"]["running"] and result["where"]["source"]["persistent"]
    defined, running = where(lab, name)
    assert running == [source] and defined == [source]
    # Once the destination's libvirtd is back, it has cleaned up its half of the migration: still one of each.
    lab.wait_for_libvirt(destination)
    time.sleep(2)
    assert_exactly_one(lab, name, source)
    assert source_has_no_job(lab, source, name)


def test_completion_timeout_on_a_vm_that_cannot_converge(lab, restore):
    guest = linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    lab.in_host(source, ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kbit",
                         "latency", "400ms"])
    try:
        started = time.monotonic()
        result = migrate(lab, [name], source, destination, completion_timeout_s_per_gib=1,
                         completion_timeout_min_s=10)[0]
        took = time.monotonic() - started
    finally:
        lab.in_host(source, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
    steps = [s["detail"] for s in result["policy_steps"]]
    print("\ncompletion timeout: %s after %.1f s: %s; steps %s" % (result["outcome"], took, result["error"], steps))
    assert result["outcome"] == "failed"
    assert result["timed_out"] == "completion_timeout"
    assert "completion timeout" in result["error"]
    assert 10 <= took < 40
    assert_exactly_one(lab, name, source)
    assert source_has_no_job(lab, source, name)


def dirtying_linux_guest(lab):
    """Set-up for the tests whose premise is a guest dirtying memory faster than the bandwidth they allow: the
    Linux workload guest, booted afresh so that its dirtying loop certainly runs.

    In a full run, after the fault and drain suites had moved and struck it many times, the guest still answered
    ping but a 4 MiB/s migration converged at once with no escalation: it was no longer dirtying memory. A fresh
    boot restores the workload; what the tests then assert about escalation is unchanged."""
    guest = linux_guest(lab)
    name = guest["name"]
    host = home_of(lab, name)
    lab.virsh(host, ["destroy", name], check=False)
    lab.virsh(host, ["start", name])
    assert lab_module.wait_for_ping(guest["ip"], 90), "%s does not come back after a fresh boot" % name
    time.sleep(3)  # the init starts its dirtying loop once the network is up
    return guest


def test_a_vm_that_needed_escalation_starts_its_next_migration_where_it_ended(lab, restore):
    guest = dirtying_linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    # The guest dirties memory faster than 4 MiB/s: only the downtime steps let it finish.
    options = {"bandwidth_mib_s": 4, "escalation": {"downtime_steps": [1000, 3000, 6000]}}
    first = migrate(lab, [name], source, destination, **options)[0]
    second = migrate(lab, [name], destination, source, **options)[0]
    for label, entry in (("first", first), ("second", second)):
        print("\n%s: %s in %.1f s, downtime %s ms, limit %s ms; steps %s" % (
            label, entry["outcome"], entry["elapsed_s"], entry["downtime_ms"], entry["downtime_limit_ms"],
            [s["detail"] for s in entry["policy_steps"]]))
    assert first["outcome"] == "migrated" and first["escalated"] and first["downtime_limit_ms"] >= 1000
    assert second["outcome"] == "migrated"
    head_start = [s for s in second["policy_steps"] if s["action"] == "note" and "needed escalation" in s["detail"]]
    assert head_start and "starts at max downtime %d ms" % first["downtime_limit_ms"] in head_start[0]["detail"]
    # No step below what worked last time was taken again, and the downtime stayed within the policy's maximum.
    assert all(s["action"] != "downtime" or int(s["detail"].split(" -> ")[1].split()[0]) > first["downtime_limit_ms"]
               for s in second["policy_steps"])
    assert second["downtime_ms"] <= 6000 + DOWNTIME_MARGIN_MS
    assert_exactly_one(lab, name, source)
    # Both moves ran under the 4 MiB/s limit: the VM's history says so, and the next plans learn no times from them.
    conn = open_connection(lab.uri(source))
    try:
        last = read_domain_metadata(conn.lookupByName(name))["moves"][-1]
    finally:
        conn.close()
    assert first["bandwidth_limit_mib_s"] == second["bandwidth_limit_mib_s"] == last["bandwidth_limit_mib_s"] == 4


def test_destination_that_does_not_exist(lab, restore):
    name = guests(lab, "idle", disk=False)[0]["name"]
    source = home_of(lab, name)
    unused = "%s.%d" % (lab.config["subnet"], 99)
    for destination, uri in (("no-such-host.invalid", "qemu+tls://no-such-host.invalid/system"),
                             (unused, "qemu+tls://%s/system" % unused)):
        # The engine's own connection from the controller carries the controller's certificates, as lab.uri does.
        params = {"uri": lab.uri(source), "name": name, "destination": destination, "destination_uri": uri,
                  "destination_connect_uri": "%s?pkipath=%s" % (uri, lab.controller_pki()), "transport": "tls"}
        with pytest.raises(HvmaintError) as refused:
            migration_run.execute(params)
        print("\n%s: %s" % (destination, refused.value))
        assert "unreachable" in str(refused.value) and "nothing was moved" in str(refused.value)
        assert "CA certificate" not in str(refused.value)
        assert_exactly_one(lab, name, source)


def test_moved_twice_reports_both_moves_and_home(lab, restore):
    name = guests(lab, "idle", disk=False)[-1]["name"]
    first = home_of(lab, name)
    second = other_host(lab, first)
    third = other_host(lab, second, avoid=(first,))
    conn = open_connection(lab.uri(first))
    try:
        before = read_domain_metadata(conn.lookupByName(name))
    finally:
        conn.close()
    one = execute(lab, first, second, name=name)
    two = execute(lab, second, third, name=name)
    assert one["changed"] and two["changed"]
    conn = open_connection(lab.uri(third))
    try:
        history = read_domain_metadata(conn.lookupByName(name))
    finally:
        conn.close()
    moves = history["moves"][-2:]
    print("\n%s history: home %s, last moves %s" % (name, history.get("home"), moves))
    expected = [(first, second, "migrated"), (second, third, "migrated")]
    assert [(m["from"], m["to"], m["outcome"]) for m in moves] == expected
    assert all(m.get("at") and m.get("seconds") is not None and m.get("downtime_ms") is not None for m in moves)
    assert history["home"] == (before.get("home") or first)
    assert len(history["moves"]) == min(len(before.get("moves") or []) + 2, 20)
    assert two["migrations"][0]["history"] == {"home": history["home"], "moves": len(history["moves"])}


def test_bad_input_is_refused_before_anything_moves(lab, restore):
    idle = [g["name"] for g in guests(lab, "idle", disk=False)]
    source = home_of(lab, idle[0])
    destination = other_host(lab, source)
    placed = {name: where(lab, name) for name in idle}
    cases = {
        "unknown VM": dict(names=[idle[0], "no-such-vm"]),
        "destination is the source": dict(name=idle[0], to=source),
        "invalid URI": dict(name=idle[0], destination_uri="qemu+tls//broken"),
        "not a QEMU URI": dict(name=idle[0], destination_uri="http://%s/system" % destination),
        "postcopy action without post-copy": dict(name=idle[0], completion_timeout_action="postcopy"),
        "zstd without parallel connections": dict(name=idle[0], compression="zstd"),
        "listed twice": dict(names=[idle[0], idle[0]]),
    }
    messages = {}
    for case, params in cases.items():
        with pytest.raises(HvmaintError) as refused:
            execute(lab, source, params.pop("to", destination), **params)
        messages[case] = str(refused.value)
    print("\n" + "\n".join("%s: %s" % item for item in messages.items()))
    assert "no VM named no-such-vm on %s (it has: " % source in messages["unknown VM"]
    assert idle[0] in messages["unknown VM"].split("it has:")[1]
    assert "is the source host" in messages["destination is the source"]
    assert "not a valid libvirt URI" in messages["invalid URI"]
    assert "not a valid libvirt URI" in messages["not a QEMU URI"]
    assert "escalation.post_copy" in messages["postcopy action without post-copy"]
    assert "parallel_connections" in messages["zstd without parallel connections"]
    assert "more than once" in messages["listed twice"]
    assert {name: where(lab, name) for name in idle} == placed


def test_check_mode_idempotence_and_diff(lab, restore):
    name = guests(lab, "idle", disk=False)[0]["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    checked = execute(lab, source, destination, name=name, _check_mode=True)
    assert checked["changed"] and checked["migrations"][0]["outcome"] == "would_migrate"
    assert checked["diff"] == {"before": {name: {"host": source}}, "after": {name: {"host": destination}}}
    assert_exactly_one(lab, name, source)
    moved = execute(lab, source, destination, name=name)
    assert moved["changed"] and moved["migrations"][0]["outcome"] == "migrated"
    again = execute(lab, source, destination, name=name)
    assert not again["changed"] and again["migrations"][0]["outcome"] == "already_there"
    assert again["diff"]["before"] == again["diff"]["after"] == {name: {"host": destination}}
    assert_exactly_one(lab, name, destination)


def test_abort_action_leaves_the_vm_on_the_source(lab, restore):
    guest = linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    thread, box = run_in_thread(migrate, lab, [name], source, destination, bandwidth_mib_s=2)
    wait_for_job(lab, source, name)
    aborted = migration_run.execute({"uri": lab.uri(source), "name": name, "state": "aborted"})
    thread.join(60)
    result = box["result"][0]
    print("\nabort: %s; migration: %s: %s" % (aborted["aborts"], result["outcome"], result["error"]))
    assert aborted["changed"] and aborted["aborts"][0]["outcome"] == "aborted"
    assert result["outcome"] == "aborted"
    assert_exactly_one(lab, name, source)
    assert source_has_no_job(lab, source, name)


def test_progress_lines_in_playbook_output(lab, restore, tmp_path):
    guest = dirtying_linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    # Slow enough to last well over 15 s; the guest dirties memory faster than this bandwidth, so the downtime
    # steps are what lets it finish. From the policy's first step, whatever the VM's history says: an earlier
    # test's escalated move would start it at the last step (found in a full run: no step was then taken).
    task = {"hvmaint.libvirt.live_migrate": {"name": name, "destination": destination, "bandwidth_mib_s": 4,
                                             "escalation": {"downtime_steps": [1000, 3000, 6000],
                                                            "from_history": False}}}
    process = playbook(lab, source, task, str(tmp_path))
    lines = read_lines_with_time(process)
    with open(tmp_path / "result.json", encoding="utf-8") as handle:
        result = json.load(handle)
    pattern = re.compile(r"^\[%s\u2192%s\] %s: \d+%% [\d.]+/[\d.]+ MiB remaining \d+ MiB/s iteration \d+" % (
        re.escape(source), re.escape(destination), re.escape(name)))
    progress = [t for t, line in lines if pattern.search(line)]
    task_start = next(t for t, line in lines if line.startswith("TASK [hvmaint.libvirt.live_migrate]"))
    # The migration as the user sees it: from the task's header to the line saying it is done.
    done = next(t for t, line in lines if "%s: migrated in" % name in line)
    marks = [task_start] + progress + [done]
    longest = max(b - a for a, b in zip(marks, marks[1:]))
    entry = result["migrations"][0]
    print("\n" + "\n".join("%6.1f %s" % (t - task_start, line) for t, line in lines if t >= task_start)[:3000])
    print("\nplaybook: migration took %.1f s, %d progress lines, longest silence %.1f s; steps %s; e.g. %r" % (
        entry["elapsed_s"], len(progress), longest, [s["detail"] for s in entry["policy_steps"]],
        next(line for _t, line in lines if pattern.search(line))))
    # Where the time before the first line went: the module's start on the host, its connections and
    # pre-flight, the migration's start (times on the wall clock, taken as the lines were read).
    print("task header at %.2f; module: startup %s; migration started at +%.2f s; gaps %s; load %s" % (
        task_start, result.get("startup_s"), entry["started_at"] - (task_start + WALL_MINUS_MONOTONIC),
        [round(b - a, 1) for a, b in zip(marks, marks[1:])], os.getloadavg()))
    assert not result.get("failed"), result.get("msg")
    assert entry["outcome"] == "migrated" and entry["elapsed_s"] > 15
    assert any(s["action"] == "downtime" for s in entry["policy_steps"])
    assert len(progress) >= 2
    assert longest <= 10.0
    assert_exactly_one(lab, name, destination)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_playbook_aborts_the_migration(lab, restore, tmp_path, signum):
    guest = linux_guest(lab)
    name = guest["name"]
    source = home_of(lab, name)
    destination = other_host(lab, source)
    task = {"hvmaint.libvirt.live_migrate": {"name": name, "destination": destination, "bandwidth_mib_s": 2}}
    process = playbook(lab, source, task, str(tmp_path))
    wait_for_job(lab, source, name, timeout=90)
    time.sleep(2)
    process.send_signal(signum)  # AWX cancels a job with SIGINT, then SIGTERM
    interrupted = time.monotonic()
    out = process.communicate(timeout=120)[0]
    # ansible-playbook itself exits at once ("User interrupted execution"); the task's worker process runs the
    # abort in the background, so what shows that it happened is the VM, not the output.
    deadline = time.time() + 60
    while not source_has_no_job(lab, source, name) and time.time() < deadline:
        time.sleep(0.2)
    gone = time.monotonic() - interrupted
    conn = open_connection(lab.uri(source))
    try:
        history = read_domain_metadata(conn.lookupByName(name))
    finally:
        conn.close()
    last = history["moves"][-1]
    print("\n%s to ansible-playbook: migration job gone %.1f s after the signal; last move in history %s; output tail:\n%s"
          % (signal.Signals(signum).name, gone, last, "\n".join(out.splitlines()[-3:])))
    assert source_has_no_job(lab, source, name)
    assert_exactly_one(lab, name, source)
    assert (last["from"], last["to"], last["outcome"]) == (source, destination, "aborted")


# ---- several destinations in one call, and shut-off VMs ------------------------------------------------------

def move_to(lab, name, destination):
    return {"name": name, "destination": destination, "destination_uri": "qemu+tls://%s/system" % destination,
            "destination_connect_uri": lab.uri(destination)}


def test_moves_to_two_destinations_run_side_by_side(lab, restore):
    by_host = {}
    for guest in guests(lab, "idle", disk=False):
        if not guest.get("network"):  # on the lab-wide network, so any host can take it
            by_host.setdefault(home_of(lab, guest["name"]), []).append(guest["name"])
    source, names = max(by_host.items(), key=lambda item: len(item[1]))
    if len(names) < 3 or len(lab.hosts) < 3:
        pytest.skip("needs 3 idle guests on one host and two other hosts")
    first, second = [host for host in lab.hosts if host != source][:2]
    a, b, c = names[:3]
    result = execute(lab, source, None, moves=[move_to(lab, a, first), move_to(lab, b, first),
                                               move_to(lab, c, second)],
                     max_parallel=2, max_parallel_per_destination=1)
    by_name = {r["name"]: r for r in result["migrations"]}
    for name, entry in by_name.items():
        print("%s -> %s: %s, %.2f..%.2f" % (
            name, entry["destination"], entry["outcome"], entry["started_at"], entry["finished_at"]))
    assert [r["name"] for r in result["migrations"]] == [a, b, c]
    assert {n: r["outcome"] for n, r in by_name.items()} == {a: "migrated", b: "migrated", c: "migrated"}
    assert result["changed"] and result["destinations"] == [first, second] and result["destination"] is None
    assert_exactly_one(lab, a, first)
    assert_exactly_one(lab, b, first)
    assert_exactly_one(lab, c, second)
    # One at a time into the first destination: b waited until a ran there (libvirt then only stopped a's QEMU on
    # the source) ...
    assert by_name[b]["started_at"] >= (by_name[a].get("switched_over_at") or by_name[a]["finished_at"])
    # ... while c, to the other destination, did not wait behind them.
    assert by_name[c]["started_at"] < by_name[a]["finished_at"]


@pytest.fixture
def shut_off_vm(lab, define_shut_off_vm):
    return define_shut_off_vm(home_of(lab, guests(lab, "idle", disk=False)[0]["name"]))


def test_shut_off_vm_moves_its_definition_only_when_asked(lab, shut_off_vm):
    name, source = shut_off_vm["name"], shut_off_vm["host"]
    destination = other_host(lab, source)
    with pytest.raises(HvmaintError) as refused:
        execute(lab, source, destination, name=name)
    assert "%s is shut off on %s" % (name, source) in str(refused.value)
    assert "shutoff_vms=move" in str(refused.value)
    assert where(lab, name) == ([source], [])

    check = execute(lab, source, destination, name=name, shutoff_vms="move", _check_mode=True)
    assert check["migrations"][0]["outcome"] == "would_migrate" and check["migrations"][0]["mode"] == "offline"
    assert where(lab, name) == ([source], [])

    moved = execute(lab, source, destination, name=name, shutoff_vms="move")
    entry = moved["migrations"][0]
    print("\noffline move of %s %s->%s: %s" % (name, source, destination, entry))
    assert moved["changed"] and entry["outcome"] == "migrated" and entry["mode"] == "offline"
    assert where(lab, name) == ([destination], []), "defined on the destination only, and still shut off"
    conn = open_connection(lab.uri(destination))
    try:
        history = read_domain_metadata(conn.lookupByName(name))
    finally:
        conn.close()
    assert history["home"] == source
    assert (history["moves"][-1]["from"], history["moves"][-1]["to"]) == (source, destination)

    again = execute(lab, source, destination, name=name, shutoff_vms="move")
    assert not again["changed"] and again["migrations"][0]["outcome"] == "already_there"

    back = execute(lab, destination, source, name=name, shutoff_vms="move")
    assert back["migrations"][0]["outcome"] == "migrated"
    assert where(lab, name) == ([source], [])


def test_shut_off_vm_on_host_local_storage_is_refused(lab, shut_off_vm):
    # The same VM given a qcow2 disk in the host's default (dir) pool: an offline move would strand the disk.
    name, source = shut_off_vm["name"], shut_off_vm["host"]
    guest = dict(shut_off_vm, disk_mib=16)
    lab.make_guest_disk(guest)
    lab.virsh(source, ["pool-refresh", "default"])
    lab.define_from_xml(source, "define", lab.guest_xml(guest, "qemu"))
    destination = other_host(lab, source)
    try:
        with pytest.raises(HvmaintError) as refused:
            execute(lab, source, destination, name=name, shutoff_vms="move")
        message = str(refused.value)
        print("\n" + message)
        assert "nothing was moved" in message and "%s is shut off and its disk vda" % name in message
        assert "on host-local storage (storage pool of type dir)" in message
        assert "moves the definition only" in message
        assert where(lab, name) == ([source], [])
    finally:
        lab.virsh(source, ["undefine", "--remove-all-storage", name], check=False)


def test_vm_suspended_to_disk_is_not_moved_offline(lab, shut_off_vm):
    # As a drain's suspend policy parks a VM: started, then saved to disk (managed save) on its host. An offline
    # move of its definition would leave the saved memory behind on the source: it is refused (a drain's plan
    # leaves such a VM in place: tests/unit/.../test_evacuation_plan.py).
    name, source = shut_off_vm["name"], shut_off_vm["host"]
    destination = other_host(lab, source)
    lab.virsh(source, ["start", name])
    lab.virsh(source, ["managedsave", name], timeout=120)
    save_image = os.path.join(lab.host_dir(source), "var-lib-libvirt", "qemu", "save", "%s.save" % name)
    assert os.path.exists(save_image)
    try:
        with pytest.raises(HvmaintError) as refused:
            execute(lab, source, destination, name=name, shutoff_vms="move")
        print("\n" + str(refused.value))
        assert "managed save image" in str(refused.value)
        assert where(lab, name) == ([source], []) and os.path.exists(save_image)
    finally:
        lab.virsh(source, ["managedsave-remove", name], check=False)
