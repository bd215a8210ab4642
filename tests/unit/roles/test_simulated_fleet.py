"""The shipped playbooks over a small simulated fleet (tests/sim/simulated_fleet.py), through the real roles: the
same tasks as on real hosts, with recorded facts instead of libvirt daemons. One host is unreachable and one
cannot be read: they are named, left out, never destinations, and the play still succeeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "tests", "sim"))

from simulated_fleet import write_fleet  # noqa: E402

UNREACHABLE, BROKEN = "sim0013", "sim0014"
MARKED, LEASED = "sim0001", "sim0002"
PER_HOST_READ = "Read the hypervisor's facts, once no migration is under way on it"
FLEET_READ = "Read every hypervisor's facts from the controller over libvirt"
LOAD_TASK = "Measure what the VMs of each hypervisor use over the window"


def collections_path():
    """Where Ansible finds this collection: above it in the installed layout that `ansible-test units` runs in
    (.../ansible_collections/hvmaint/libvirt), else the link scripts/bootstrap makes in the checkout."""
    parts = REPO.split(os.sep)
    if len(parts) > 3 and parts[-3] == "ansible_collections":
        return os.sep.join(parts[:-3])
    return os.path.join(REPO, ".tmp", "collections")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    inventory = write_fleet(str(out), 16, 10)
    with open(inventory, encoding="utf-8") as handle:
        document = json.load(handle)
    hosts = document["all"]["children"]["hypervisors"]["hosts"]
    # Nothing listens on port 1 of the loopback: SSH to it is refused at once.
    hosts[UNREACHABLE].update(ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=1)
    hosts[UNREACHABLE].pop("hvmaint_recorded_facts")
    hosts[BROKEN]["hvmaint_recorded_facts"] = str(out / "no-such-file.json")
    with open(inventory, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return out, inventory


def run(fleet, playbook, *extra):
    out, inventory = fleet
    record = str(out / ("%s.json" % playbook))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=collections_path(),
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "sim", "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="record_results", HVMAINT_RECORD_RESULTS=record)
    ledger = str(out / "ledger.jsonl")
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, os.path.join(REPO, "playbooks", playbook), "-e",
         "drain_host_ledger=%s" % ledger, "-e", "return_host_ledger=%s" % ledger, "-e",
         "rebalance_ledger=%s" % ledger, *extra],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    with open(record, encoding="utf-8") as handle:
        return dict(json.load(handle), output=result.stdout)


def task_results(report, name):
    """{host: result} of the task called `name` (its last run on each host)."""
    results = {entry["host"]: dict(entry["result"], status=entry["status"]) for entry in report["tasks"]
               if entry["task"] == name}
    assert results, "no task named %r ran" % name
    return results


def left_out_lines(report):
    results = task_results(report, "Name the hosts left out (unreachable, or their facts could not be read); "
                                   "they are never destinations")
    return next(iter(results.values()))["msg"]


def drain_plan_around_the_unread_hosts(report):
    """The check-mode drain of sim0000 read 14 hosts, named the unreachable and the broken one as left out, and
    planned its 10 VMs: its plan."""
    lines = left_out_lines(report)
    assert lines[0] == "14 hypervisors read"
    assert any(line.startswith("left out: %s (unreachable" % UNREACHABLE) for line in lines), lines
    assert any(line.startswith("left out: %s (its facts could not be read" % BROKEN) for line in lines), lines
    plan = next(iter(task_results(report, "Plan where each VM goes").values()))
    assert plan["ok"] and len(plan["moves"]) == 10
    return plan


def test_check_mode_drain_plans_around_the_hosts_it_cannot_read(fleet):
    report = run(fleet, "drain_host.yml", "-e", "drain_host_host=sim0000", "--check")
    plan = drain_plan_around_the_unread_hosts(report)
    destinations = {move["destination"] for move in plan["moves"]}
    assert destinations and not destinations & {UNREACHABLE, BROKEN, "sim0000"}
    # The plan is live_migrate's input as it is, and the report lines come from the planner.
    assert plan["live_migrate_moves"] == [{"name": m["vm"], "destination": m["destination"], "destination_uri": None}
                                          for m in plan["moves"]]
    assert next(iter(task_results(report, "Report what moved where").values()))["msg"] == plan["moved_lines"]
    # Only the facts ran on every host; the drain's own tasks ran once. Measuring load is rebalance's alone: a
    # drain does not even skip it, host by host.
    assert LOAD_TASK not in {entry["task"] for entry in report["tasks"]}
    # The drain sets fleet_lease's options from its own, checked once: no task validates them again, and each wave
    # after the first still renews the leases (one renewal task per wave in check mode, whatever the fleet's size).
    ran = [entry["task"] for entry in report["tasks"]]
    assert not [name for name in ran if name.startswith("Validating arguments against arg spec")], ran
    waves = len(plan["waves"])
    assert waves > 1 and ran.count("Renew every lease this run holds") == waves - 1
    dry_run = task_results(report, "Dry-run every planned move from the drained host before anything moves")
    assert len(dry_run) == 1 and next(iter(dry_run.values()))["changed"]
    assert [r["status"] for r in task_results(report, FLEET_READ).values()] == ["skipped"]
    assert report["stats"][UNREACHABLE]["ignored"] == 1 and report["stats"][UNREACHABLE]["unreachable"] == 0
    assert report["stats"][BROKEN]["ignored"] == 1 and report["stats"][BROKEN]["failures"] == 0


@pytest.fixture(scope="module")
def marked_fleet(fleet, tmp_path_factory):
    """The fleet with sim0001 (empty, the planner's first choice) under maintenance and sim0002 held by another
    job, as their recorded facts say."""
    out, inventory = fleet
    with open(inventory, encoding="utf-8") as handle:
        document = json.load(handle)
    hosts = document["all"]["children"]["hypervisors"]["hosts"]
    for host, key, value in ((MARKED, "maintenance", {"since": "2026-12-02T05:00:00Z", "reason": "firmware"}),
                             (LEASED, "lease", {"job": "other-job", "operation": "drain", "role": "source"})):
        with open(hosts[host]["hvmaint_recorded_facts"], encoding="utf-8") as handle:
            facts = json.load(handle)
        facts[key] = value
        hosts[host]["hvmaint_recorded_facts"] = str(out / ("%s-%s.json" % (host, key)))
        with open(hosts[host]["hvmaint_recorded_facts"], "w", encoding="utf-8") as handle:
            json.dump(facts, handle)
    marked_inventory = str(tmp_path_factory.mktemp("marked") / "inventory.json")
    with open(marked_inventory, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return out, marked_inventory


def test_check_mode_drain_reading_the_facts_from_the_controller(marked_fleet):
    # The per-host read of the same fleet is test_check_mode_drain_plans_around_the_hosts_it_cannot_read.
    report = run(marked_fleet, "drain_host.yml", "-e", "drain_host_host=sim0000", "-e",
                 "fleet_facts_read=from_controller", "--check")
    plan = drain_plan_around_the_unread_hosts(report)
    destinations = {move["destination"] for move in plan["moves"]}
    assert destinations and not destinations & {UNREACHABLE, BROKEN, MARKED, "sim0000"}
    per_host, fleet_read = task_results(report, PER_HOST_READ), task_results(report, FLEET_READ)
    # One task for the fleet: the per-host read is skipped once, not on every host.
    assert [r["status"] for r in per_host.values()] == ["skipped"]
    (result,) = fleet_read.values()
    assert result["status"] == "ok" and len(result["read"]) == 14
    assert result["hosts"][LEASED]["hypervisor"]["lease"]["job"] == "other-job"
    assert result["hosts"][MARKED]["hypervisor"]["maintenance"]["reason"] == "firmware"
    assert {entry["host"] for entry in result["left_out"]} == {UNREACHABLE, BROKEN}
    assert "qemu+tls://127.0.0.1/system" in result["hosts"][UNREACHABLE]["msg"]


def test_check_mode_return_preflight_and_report(fleet):
    report = run(fleet, "return_host.yml", "-e", "return_host_host=sim0001", "--check")
    plan = next(iter(task_results(report, "Plan bringing home every VM whose home is this host").values()))
    assert plan["ok"] and sorted(m["vm"] for m in plan["moves"]) == sorted("sim0001-%s" % s for s in (
        "db1-0", "dns1-1", "web1-2", "web2-3", "batch1-4", "paused1-5", "old1-6", "app1-7", "mon1-8", "cache1-9"))
    dry_run = task_results(report, "Dry-run every planned move home before anything moves")
    assert sorted(h for h, r in dry_run.items() if r.get("changed")) == ["sim%04d" % i for i in range(2, 12)]
    # Once planned, only the home host and the hosts that send stay in the play: none of the others even skips.
    assert sorted(dry_run) == ["sim%04d" % i for i in range(1, 12)]
    assert "End the play for the hosts that take no part in the return" in report["output"]
    # fleet_lease's options come from the return's own, checked once: no task validates them again. Every wave but
    # the first renews the leases first; the first follows the take of the sending hosts, which takes the home host
    # again with them.
    ran = [entry["task"] for entry in report["tasks"]]
    assert not [name for name in ran if name.startswith("Validating arguments against arg spec")], ran
    assert ran.count("Renew every lease this run holds") == len(plan["waves"]) - 1 > 0
    # The last take (task_results keeps it): the home host again, then the sending hosts in order.
    take = task_results(report, "Take each host for this run, stopping at the first one that another job holds")
    taken = [item["fleet_lease__item"]["host"] for result in take.values() for item in result["results"]]
    assert taken == ["sim%04d" % i for i in range(1, 12)], taken

    report = run(fleet, "preflight.yml", "-e", "preflight_host=sim0000")
    readiness = next(iter(task_results(report, "Find what would stop or harm each migration").values()))
    assert len(readiness["vm_summaries"]) == 10

    report = run(fleet, "report.yml")
    hosts = next(iter(task_results(report, "Show the hosts").values()))["msg"]
    assert len(hosts) == 14 and "sim0001 - in service - 0 running VMs" in hosts


def test_check_mode_rebalance_plans_around_the_hosts_it_cannot_read(fleet):
    # The simulated hosts have facts but no load to measure: plan on allocations.
    report = run(fleet, "rebalance.yml", "-e", "rebalance_measure=allocated", "-e", "rebalance_max_moves=4",
                 "--check")
    plan = next(iter(task_results(report, "Plan the moves").values()))
    # sim0001's VMs went to ten other hosts: it is the least loaded, the first destination.
    assert plan["ok"] and 0 < len(plan["moves"]) <= 4 and plan["measure"] == "allocated"
    assert plan["imbalance_after"]["imbalance"] < plan["imbalance_before"]["imbalance"]
    assert "sim0001" in {m["destination"] for m in plan["moves"]}
    touched = {m["source"] for m in plan["moves"]} | {m["destination"] for m in plan["moves"]}
    assert not touched & {UNREACHABLE, BROKEN}
    shown = next(iter(task_results(report, "Show the plan, every move explained").values()))["msg"]
    assert shown == plan["summary_lines"] and any("why this VM" in line for line in shown)
    # Each sending host dry-ran its own moves; in check mode nothing was taken or moved.
    dry_run = task_results(report, "Dry-run this host's planned moves")
    assert sorted(h for h, r in dry_run.items() if r.get("changed")) == sorted({m["source"] for m in plan["moves"]})
    assert "Send this host's VMs of the wave" not in {entry["task"] for entry in report["tasks"]}

    # Every simulated host runs a critical VM: only with move_critical can one be emptied.
    report = run(fleet, "rebalance.yml", "-e", "rebalance_measure=allocated", "-e", "rebalance_strategy=consolidate",
                 "-e", "rebalance_max_moves=40", "-e", "rebalance_move_critical=true", "--check")
    plan = next(iter(task_results(report, "Plan the moves").values()))
    assert plan["ok"] and plan["hosts_emptied"] and "sim0001" in plan["hosts_left_empty"]


def test_tier_overlap_runs_the_live_waves_in_one_call_each_move_keeping_its_wave(fleet):
    runs = {}
    for overlap in ("false", "true"):
        report = run(fleet, "drain_host.yml", "-e", "drain_host_host=sim0002", "-e",
                     "drain_host_tier_overlap=%s" % overlap, "--check")
        plan = next(iter(task_results(report, "Plan where each VM goes").values()))
        grouped = next(iter(task_results(report, "Group the waves into the runs that move them").values()))
        runs[overlap] = grouped["ansible_facts"]["drain_host__runs"]
        moved = [entry for entry in report["tasks"] if entry["task"] == "Move the wave's VMs"]
        assert len(moved) == len(runs[overlap])
    live = [wave for wave in plan["waves"] if wave["mode"] == "live"]
    assert len(live) >= 2, "the simulated fleet's tiers give several live waves"
    # Off (the default): one call per wave, as planned, moves without a wave number.
    assert [r["live_migrate_moves"] for r in runs["false"]] == [w["live_migrate_moves"] for w in plan["waves"]]
    # On: the live waves in one call, in the plan's order, each move with its wave; shut-off VMs after, apart.
    merged = runs["true"][0]
    assert merged["waves"] == [w["wave"] for w in live]
    assert merged["live_migrate_moves"] == [dict(m, wave=w["wave"]) for w in live for m in w["live_migrate_moves"]]
    assert runs["true"][1:] == [dict(w, waves=[w["wave"]]) for w in plan["waves"] if w["mode"] != "live"]


def test_check_mode_site_evacuation_places_every_vm_of_one_site_at_the_other(fleet):
    out, _inventory = fleet
    east, west = ["sim%04d" % i for i in range(0, 4)], ["sim%04d" % i for i in range(4, 12)]
    sites = str(out / "sites.json")
    with open(sites, "w", encoding="utf-8") as handle:
        json.dump({"all": {"children": {"hypervisors": {"children": {
            "site_east": {"hosts": {h: {} for h in east}}, "site_west": {"hosts": {h: {} for h in west}}}}}}},
            handle)
    # The simulated hosts all have the same names: an identity mapping, which must still be given.
    mapping = {"networks": {"lan": "lan"}, "bridges": {"br0": "br0", "br-app": "br-app"},
               "pools": {"vmstore": "vmstore", "default": "default"}}
    report = run(fleet, "evacuate_site.yml", "-i", sites, "--check", "-e", json.dumps({
        "evacuate_site_from": "site_east", "evacuate_site_to": "site_west", "evacuate_site_mapping": mapping,
        "evacuate_site_ledger": str(out / "sites-ledger.jsonl")}))
    plan = next(iter(task_results(report, "Plan where each VM goes").values()))
    assert plan["ok"], plan["summary_lines"]
    assert {m["source"] for m in plan["moves"]} <= set(east)
    assert {m["destination"] for m in plan["moves"]} <= set(west)
    assert plan["site_mapping"]["pools"] == mapping["pools"]
    dry_run = task_results(report, "Dry-run every planned move from its host before anything moves")
    assert sorted(h for h, r in dry_run.items() if r.get("changed")) == sorted({m["source"] for m in plan["moves"]})
    moved = task_results(report, "Report what moved where, and the source copies of the disks each move copied")
    assert len(next(iter(moved.values()))["msg"]) == len(plan["moves"])
