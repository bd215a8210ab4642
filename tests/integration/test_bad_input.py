"""Bad input, table-driven: each case ends in a clear error and changes nothing on any host.

"Nothing changed" is what an administrator would check: every VM is defined and running where it was, no host has
a maintenance mark or a lease, and a file the run was pointed at is as it was. Module cases run as the tasks of
one playbook (each with ignore_errors, results saved), so the whole module table costs one ansible-playbook;
role and playbook cases need a run each, and most stop at the argument spec or the plan, within seconds.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from conftest import REPO, run_ansible, run_playbook

pytestmark = pytest.mark.lab

SOURCE = "hv1"
EMPTY_HOST = "hv3"  # the default lab's host without guests
TOO_FAST = 8796093022207 + 1  # one above libvirt's migration bandwidth limit, in MiB/s


def fleet_state(lab):
    """What a bad run must not change: each host's VMs and their states, marks and leases."""
    state = {}
    for host in lab.hosts:
        listing = lab.virsh(host, ["list", "--all"]).stdout.split("\n")
        vms = sorted(" ".join(line.split()[1:]) for line in listing if line.strip())
        hvmaint = os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint")
        state[host] = {"vms": vms, "files": sorted(os.listdir(hvmaint)) if os.path.isdir(hvmaint) else []}
    return state


def assert_nothing_changed(lab, before, case):
    after = fleet_state(lab)
    assert after == before, "%s changed the fleet:\nbefore %s\nafter  %s" % (case, before, after)
    for host, seen in after.items():
        assert not [f for f in seen["files"] if f in ("maintenance.json", "lease.json")], (case, host, seen)


@pytest.fixture(scope="module")
def untouched(lab):
    """The fleet before the table; it must start with no mark and no lease."""
    state = fleet_state(lab)
    for host, seen in state.items():
        assert "maintenance.json" not in seen["files"] and "lease.json" not in seen["files"], (
            "the lab must start without marks and leases (%s: %s)" % (host, seen["files"]))
    return state


# (case id, module, arguments, words the error must contain, where the module runs)
def module_cases(not_a_mark, a_directory, address):
    # A lab host's address on a port where nothing listens: refused at once, as a host whose libvirtd is down.
    nowhere = "qemu+tls://%s:1/system" % address
    move = {"name": "idle1", "destination": "hv2"}
    return [
        ("migrate: max_parallel above the engine's limit", "hvmaint.libvirt.live_migrate",
         dict(move, max_parallel=100), "max_parallel must be between 1 and 64", SOURCE),
        ("migrate: max_parallel_per_destination 0", "hvmaint.libvirt.live_migrate",
         dict(move, max_parallel_per_destination=0), "max_parallel_per_destination must be between 1", SOURCE),
        ("migrate: bandwidth above libvirt's limit", "hvmaint.libvirt.live_migrate",
         dict(move, bandwidth_mib_s=TOO_FAST), "bandwidth_mib_s must be between 0 and 8796093022207", SOURCE),
        ("migrate: negative bandwidth", "hvmaint.libvirt.live_migrate",
         dict(move, bandwidth_mib_s=-1), "bandwidth_mib_s must be between", SOURCE),
        ("migrate: downtime 0", "hvmaint.libvirt.live_migrate",
         dict(move, max_downtime_ms=0), "max_downtime_ms must be between 1", SOURCE),
        ("migrate: 300 connections", "hvmaint.libvirt.live_migrate",
         dict(move, parallel_connections=300), "parallel_connections must be between 1 and 255", SOURCE),
        ("migrate: unknown compression", "hvmaint.libvirt.live_migrate",
         dict(move, compression="lz4"), "compression", SOURCE),
        ("migrate: zstd without parallel connections", "hvmaint.libvirt.live_migrate",
         dict(move, compression="zstd"), "needs parallel_connections of 2 or more", SOURCE),
        ("migrate: post-copy timeout without post-copy", "hvmaint.libvirt.live_migrate",
         dict(move, completion_timeout_action="postcopy"), "needs escalation.post_copy=true", SOURCE),
        ("migrate: downtime steps that do not rise", "hvmaint.libvirt.live_migrate",
         dict(move, escalation={"downtime_steps": [100]}), "must rise above max_downtime_ms", SOURCE),
        ("migrate: nothing to move, max_parallel above the engine's limit", "hvmaint.libvirt.live_migrate",
         {"moves": [], "max_parallel": 100}, "max_parallel must be between 1 and 64", SOURCE),
        ("migrate: max_parallel of the wrong type", "hvmaint.libvirt.live_migrate",
         dict(move, max_parallel="lots"), "max_parallel", SOURCE),
        ("migrate: unknown VM", "hvmaint.libvirt.live_migrate",
         {"name": "no-such-vm", "destination": "hv2"}, "no-such-vm", SOURCE),
        ("migrate: VM listed twice", "hvmaint.libvirt.live_migrate",
         {"names": ["idle1", "idle1"], "destination": "hv2"}, "VMs listed more than once: idle1", SOURCE),
        ("migrate: destination that is no host name", "hvmaint.libvirt.live_migrate",
         {"name": "idle1", "destination": "hv 2"}, "is not a host name", SOURCE),
        ("migrate: destination URI of another scheme", "hvmaint.libvirt.live_migrate",
         {"name": "idle1", "destination_uri": "http://hv2/system"}, "not a valid libvirt URI", SOURCE),
        ("migrate: moves and names at once", "hvmaint.libvirt.live_migrate",
         {"moves": [move], "names": ["idle2"]}, "mutually exclusive: name|names|moves", SOURCE),
        ("migrate: unreachable destination", "hvmaint.libvirt.live_migrate",
         {"name": "idle1", "destination_uri": nowhere}, address, SOURCE),
        ("mark: remove a file that is not a mark", "hvmaint.libvirt.maintenance_mode",
         {"state": "absent", "path": not_a_mark}, "is not a maintenance mark", SOURCE),
        ("mark: overwrite a file that is not a mark", "hvmaint.libvirt.maintenance_mode",
         {"state": "present", "path": not_a_mark}, "is not a maintenance mark", SOURCE),
        ("mark: remove a directory", "hvmaint.libvirt.maintenance_mode",
         {"state": "absent", "path": a_directory}, "not a regular file", SOURCE),
        ("mark: unknown state", "hvmaint.libvirt.maintenance_mode", {"state": "on"}, "state", SOURCE),
        ("ledger: a directory", "hvmaint.libvirt.audit_ledger",
         {"path": a_directory, "state": "ready"}, "cannot use the audit ledger", "localhost"),
        ("ledger: under /proc", "hvmaint.libvirt.audit_ledger",
         {"path": "/proc/hvmaint/ledger.jsonl", "state": "ready"}, "cannot use the audit ledger", "localhost"),
        ("plan: unknown source", "hvmaint.libvirt.evacuation_plan",
         {"source": "hv9"}, "source hv9 is not in hosts", "localhost"),
        ("plan: empty tier order", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "tier_order": []}, "tier_order must be a non-empty list", "localhost"),
        ("plan: a tier twice", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "tier_order": ["a", "a"], "default_tier": "a"}, "names a tier twice", "localhost"),
        ("plan: default tier that is no tier", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "default_tier": "gold"}, "default_tier gold is not a tier", "localhost"),
        ("plan: unknown unplaceable policy", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "unplaceable_policy": {"low": "delete"}}, "choose one of", "localhost"),
        ("plan: tiers naming an unknown tier", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "tiers": {"bronze": ["idle*"]}}, "tiers names unknown tiers: bronze", "localhost"),
        ("plan: excluding an unknown host", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "exclude_hosts": ["hv8"]}, "exclude_hosts names hosts that are not in hosts: hv8",
         "localhost"),
        ("plan: no parallel migrations", "hvmaint.libvirt.evacuation_plan",
         {"source": SOURCE, "max_parallel_per_source": 0}, "max_parallel_per_source must be a whole number",
         "localhost"),
        ("plan: return to an unknown host", "hvmaint.libvirt.evacuation_plan",
         {"return_to": "hv9"}, "return_to hv9 is not in hosts", "localhost"),
        ("cpu: duplicate host names", "hvmaint.libvirt.cpu_compat",
         {"guests": [{"name": "g", "xml": "<cpu mode='custom'><model>qemu64</model></cpu>"}],
          "hosts": [{"name": "h", "xml": "<cpu><model>qemu64</model></cpu>"},
                    {"name": "h", "xml": "<cpu><model>qemu64</model></cpu>"}]}, "appears more than once",
         "localhost"),
        ("cpu: guests of the wrong type", "hvmaint.libvirt.cpu_compat",
         {"guests": "not a list", "hosts": []}, "dictionary requested", "localhost"),
        ("cpu: unreachable live host", "hvmaint.libvirt.cpu_compat",
         {"guests": [{"name": "g", "xml": "<cpu mode='custom'><model>qemu64</model></cpu>"}],
          "live_hosts": [{"name": "nowhere", "uri": nowhere}]}, address, SOURCE),
        ("state: unknown VM", "hvmaint.libvirt.vm_state",
         {"names": ["no-such-vm"], "state": "shutdown"}, "no-such-vm", SOURCE),
        ("state: unknown state", "hvmaint.libvirt.vm_state",
         {"names": ["idle1"], "state": "exploded"}, "state", SOURCE),
        ("facts: unreachable host", "hvmaint.libvirt.hypervisor_info", {"uri": nowhere}, address, SOURCE),
    ]


def test_modules_refuse_bad_input_and_change_nothing(lab, ansible_env, untouched):
    with tempfile.TemporaryDirectory(dir=lab.state_dir) as work:
        not_a_mark = os.path.join(work, "not-a-mark.conf")
        with open(not_a_mark, "w", encoding="utf-8") as handle:
            handle.write("keep me\n")
        a_directory = os.path.join(work, "a-directory")
        os.mkdir(a_directory)
        cases = module_cases(not_a_mark, a_directory, lab.hosts[sorted(lab.hosts)[-1]]["address"])
        results = os.path.join(work, "results.json")
        tasks = [{"name": "Read the fleet for the plan cases", "hvmaint.libvirt.hypervisor_info": {},
                  "register": "facts"}]
        for index, (_case, module, args, _words, where) in enumerate(cases):
            if module == "hvmaint.libvirt.evacuation_plan":
                args = dict(args, hosts="{{ [facts.hypervisor] }}")
            task = {"name": "case %d" % index, module: args, "register": "case_%d" % index, "ignore_errors": True}
            if where == "localhost":
                task["delegate_to"] = "localhost"
            tasks.append(task)
        tasks.append({"name": "save", "delegate_to": "localhost", "ansible.builtin.copy": {
            "dest": results,
            "content": "{{ %s | to_json }}" % ("[" + ", ".join("case_%d" % i for i in range(len(cases))) + "]")}})
        playbook = os.path.join(work, "bad-input.yml")
        with open(playbook, "w", encoding="utf-8") as handle:
            json.dump([{"hosts": SOURCE, "gather_facts": False, "tasks": tasks}], handle)
        run = run_ansible(["ansible-playbook", "-i", os.path.join(lab.state_dir, "inventory.yml"), playbook],
                          ansible_env, check=False)
        assert os.path.exists(results), run.stdout[-4000:]
        with open(results, encoding="utf-8") as handle:
            outcomes = json.load(handle)
        with open(not_a_mark, encoding="utf-8") as handle:
            assert handle.read() == "keep me\n"
        assert os.path.isdir(a_directory) and os.listdir(a_directory) == []
    wrong = []
    for (case, _module, _args, words, _where), result in zip(cases, outcomes):
        if not result.get("failed") or words not in str(result.get("msg")) or result.get("changed"):
            wrong.append("%s: failed=%s changed=%s msg=%s"
                         % (case, result.get("failed"), result.get("changed"), result.get("msg")))
    assert not wrong, "\n".join(wrong)
    assert_nothing_changed(lab, untouched, "the module cases")


# (case id, playbook, extra vars, words the output must contain); each case is one ansible-playbook run.
ROLE_CASES = [
    ("drain: host not in the play", "drain_host.yml", {"drain_host_host": "hv9"},
     "hv9 is not among this play's reachable hypervisors"),
    ("drain: host missing", "drain_host.yml", {}, "drain_host_host"),
    ("drain: max_parallel of the wrong type", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_max_parallel": "lots"}, "drain_host_max_parallel"),
    ("drain: mistyped migration option", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_migration": {"max_downtme_ms": 500}}, "max_downtme_ms"),
    ("drain: negative shutdown timeout", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_shutdown_timeout": -5}, "must be 0 or more"),
    ("drain: unknown default tier", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_default_tier": "gold"}, "default_tier gold is not a tier"),
    ("drain: every destination excluded", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_exclude_hosts": ["hv2", "hv3"]}, "stops before any VM moves"),
    ("drain: max_parallel above the engine's limit", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_max_parallel": 100}, "max_parallel must be between 1 and 64"),
    ("drain: no migration into a destination at a time", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_max_parallel_per_destination": 0},
     "max_parallel_per_destination must be between 1 and 64"),
    ("drain: bandwidth above libvirt's limit", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_migration": {"bandwidth_mib_s": TOO_FAST}},
     "bandwidth_mib_s must be between 0 and"),
    ("drain: ledger that cannot be written", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_ledger": "/proc/hvmaint/ledger.jsonl"}, "cannot use the audit ledger"),
    # Made before the lease take, the mark and any move; /proc refuses it whoever runs the test (root included).
    ("drain: report directory that cannot be created", "drain_host.yml",
     {"drain_host_host": SOURCE, "drain_host_report_dir": "/proc/hvmaint/reports"},
     "cannot make the report directory /proc/hvmaint/reports"),
    ("drain: mistyped hypervisor group", "drain_host.yml",
     {"drain_host_host": SOURCE, "hvmaint_hypervisors": "hypervisorz"}, "No host of the inventory matches"),
    ("return: host not in the play", "return_host.yml", {"return_host_host": "hv9"},
     "hv9 is not among this play's reachable hypervisors"),
    ("return: ledger that cannot be written", "return_host.yml",
     {"return_host_host": SOURCE, "return_host_ledger": "/proc/hvmaint/ledger.jsonl"}, "cannot use the audit ledger"),
    ("return: report directory that cannot be created", "return_host.yml",
     {"return_host_host": SOURCE, "return_host_report_dir": "/proc/hvmaint/reports"},
     "cannot make the report directory /proc/hvmaint/reports"),
    # Nothing to move (every VM is home, hv3 holds none): the options are checked all the same, before any change.
    ("return: nothing to move, max_parallel above the engine's limit", "return_host.yml",
     {"return_host_host": SOURCE, "return_host_max_parallel": 100}, "max_parallel must be between 1 and 64"),
    ("return: nothing to move, bandwidth above libvirt's limit", "return_host.yml",
     {"return_host_host": SOURCE, "return_host_migration": {"bandwidth_mib_s": TOO_FAST}},
     "bandwidth_mib_s must be between 0 and"),
    ("drain: nothing to move, max_parallel above the engine's limit", "drain_host.yml",
     {"drain_host_host": EMPTY_HOST, "drain_host_max_parallel": 100}, "max_parallel must be between 1 and 64"),
    ("drain: nothing to move, no migration into a destination at a time", "drain_host.yml",
     {"drain_host_host": EMPTY_HOST, "drain_host_max_parallel_per_destination": 0},
     "max_parallel_per_destination must be between 1 and 64"),
    ("preflight: mistyped hypervisor group", "preflight.yml",
     {"preflight_host": SOURCE, "hvmaint_hypervisors": "hypervisorz"}, "No host of the inventory matches"),
]


@pytest.mark.parametrize("case, playbook, extra, words", ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_roles_and_playbooks_refuse_bad_input_and_change_nothing(
        lab, ansible_env, untouched, tmp_path, case, playbook, extra, words):
    extra = dict(extra)
    for key in ("drain_host_ledger", "return_host_ledger"):
        extra.setdefault(key, str(tmp_path / "ledger.jsonl"))
    run = run_playbook(lab, ansible_env, playbook, extra, check=False)
    assert run.returncode != 0, "%s exited 0:\n%s" % (case, run.stdout[-3000:])
    assert words in run.stdout, "%s: %r not in the output:\n%s" % (case, words, run.stdout[-3000:])
    assert_nothing_changed(lab, untouched, case)
    assert not os.path.exists(str(tmp_path / "ledger.jsonl")) or os.path.getsize(str(tmp_path / "ledger.jsonl")) == 0


# A return of a host still under maintenance, refused on bad input: the host must keep its mark (the return
# clears it only once the plan and the dry-run succeed). (case id, extra vars, words the output must contain)
MARKED_RETURN_CASES = [
    ("marked return: unknown default tier", {"return_host_default_tier": "gold"}, "default_tier gold is not a tier"),
    ("marked return: max_parallel above the engine's limit", {"return_host_max_parallel": 100},
     "max_parallel must be between 1 and 64"),
    ("marked return: bandwidth above libvirt's limit", {"return_host_migration": {"bandwidth_mib_s": TOO_FAST}},
     "bandwidth_mib_s must be between 0 and"),
]


@pytest.mark.parametrize("case, extra, words", MARKED_RETURN_CASES, ids=[c[0] for c in MARKED_RETURN_CASES])
def test_a_return_refused_on_bad_input_leaves_the_mark(lab, ansible_env, untouched, tmp_path, case, extra, words):
    mark_path = os.path.join(lab.host_dir(SOURCE), "var-lib-libvirt", "hvmaint", "maintenance.json")
    os.makedirs(os.path.dirname(mark_path), exist_ok=True)
    mark = {"since": "2026-12-02T05:00:00Z", "reason": "bad-input test", "by": "pytest"}
    with open(mark_path, "w", encoding="utf-8") as handle:
        json.dump(mark, handle)
    try:
        before = fleet_state(lab)
        run = run_playbook(lab, ansible_env, "return_host.yml",
                           dict(extra, return_host_host=SOURCE, return_host_ledger=str(tmp_path / "ledger.jsonl")),
                           check=False)
        assert run.returncode != 0, "%s exited 0:\n%s" % (case, run.stdout[-3000:])
        assert words in run.stdout, "%s: %r not in the output:\n%s" % (case, words, run.stdout[-3000:])
        assert os.path.exists(mark_path), "%s cleared %s's mark and then failed:\n%s" % (case, SOURCE,
                                                                                         run.stdout[-3000:])
        with open(mark_path, encoding="utf-8") as handle:
            assert json.load(handle) == mark
        assert fleet_state(lab) == before, case
    finally:
        if os.path.exists(mark_path):
            os.unlink(mark_path)
    assert_nothing_changed(lab, untouched, case)


def test_the_table_is_big_enough():
    assert len(module_cases("x", "y", "z")) + len(ROLE_CASES) + len(MARKED_RETURN_CASES) >= 40
    assert os.path.isdir(REPO)
