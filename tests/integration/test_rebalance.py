"""The rebalance playbook on the lab, as an administrator runs it: a balance of a deliberately unbalanced lab,
a consolidation that empties a host and one that cannot, check mode, and bad input. Every test leaves each guest
on its starting host (lab_at_home)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import REPO, ansible_module_json, lease_of, run_playbook, where_is

pytestmark = pytest.mark.lab

# Short sampling window: the Linux guests burn CPU without pause under TCG, so a short window already tells them
# from the idle ones (and keeps the suite's time down).
WINDOW = 2


def recorded_run(lab, env, tmp_path, name, extra_vars, check_mode=False, check=True):
    """Run playbooks/rebalance.yml and return (process, {task name: [results]}) from the record_results callback."""
    record = str(tmp_path / ("%s.json" % name))
    env = dict(env, ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "sim", "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="record_results", HVMAINT_RECORD_RESULTS=record)
    done = run_playbook(lab, env, "rebalance.yml", extra_vars, check_mode=check_mode, check=check)
    tasks = {}
    if os.path.exists(record):
        with open(record, encoding="utf-8") as handle:
            for entry in json.load(handle)["tasks"]:
                tasks.setdefault(entry["task"], []).append(entry["result"])
    return done, tasks


def plan_of(tasks):
    return tasks["Plan the moves"][0]


def placement(lab):
    return {g["name"]: where_is(lab, g["name"])[1][0] for g in lab.config["guests"]}


def read_ledger(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def assert_nobody_holds_the_lab(lab):
    for host in lab.hosts:
        assert lease_of(lab, host) is None, "%s still holds a lease" % host
        assert not os.path.exists(os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint",
                                               "maintenance.json")), "%s is marked" % host


def crowd(lab, env):
    """Most VMs, both busy Linux guests among them, on the first host. Moved with live_migrate, which records
    the guest's home (its lab host) as it leaves it, so that the rebalance, which keeps homes, leaves it right."""
    first = lab.config["hosts"][0]["name"]
    for guest in lab.config["guests"]:
        if guest["kind"] == "linux" and guest["host"] != first:
            ansible_module_json(lab, guest["host"], "hvmaint.libvirt.live_migrate", {
                "name": guest["name"], "destination": first, "destination_uri": "qemu+tls://%s/system" % first,
                "tls_stream": True}, env)
    return first


def test_balance_evens_out_a_crowded_lab_as_the_plan_said_and_a_second_run_moves_nothing(
        lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    first = crowd(lab, ansible_env)
    before = placement(lab)
    assert sum(1 for host in before.values() if host == first) > len(before) / 2
    ledger = str(tmp_path / "ledger.jsonl")
    options = {"rebalance_load_window_s": WINDOW, "rebalance_threshold": 0.3, "rebalance_max_moves": 4,
               "rebalance_ledger": ledger}

    # Check mode shows the plan and changes nothing.
    done, tasks = recorded_run(lab, ansible_env, tmp_path, "check", options, check_mode=True)
    preview = plan_of(tasks)
    print("\n".join(preview["summary_lines"]))
    assert preview["measure"] == "measured" and preview["imbalance_before"]["imbalance"] > 0.3
    assert preview["moves"] and all(m["why_vm"] and m["why_host"] for m in preview["moves"])
    assert placement(lab) == before and read_ledger(ledger) == []
    assert_nobody_holds_the_lab(lab)

    done, tasks = recorded_run(lab, ansible_env, tmp_path, "balance", options)
    plan = plan_of(tasks)
    print("\n".join(plan["summary_lines"]))
    assert 0 < len(plan["moves"]) <= 4 and plan["balanced"]
    assert plan["imbalance_after"]["imbalance"] <= 0.3 < plan["imbalance_before"]["imbalance"]
    # Every VM is where the plan said, and nowhere else; every move is in the ledger as a rebalance.
    after = placement(lab)
    expected = dict(before, **{m["vm"]: m["destination"] for m in plan["moves"]})
    assert after == expected
    entries = [e for e in read_ledger(ledger) if e.get("outcome") == "migrated"]
    assert sorted(e["vm"] for e in entries) == sorted(m["vm"] for m in plan["moves"])
    assert {e["operation"] for e in entries} == {"rebalance"}
    assert_nobody_holds_the_lab(lab)

    # Measured again, the lab is at or below the threshold: nothing moves.
    done, tasks = recorded_run(lab, ansible_env, tmp_path, "again", options)
    again = plan_of(tasks)
    print("\n".join(again["summary_lines"][:3]))
    assert again["moves"] == [] and again["imbalance_before"]["imbalance"] <= 0.3
    assert placement(lab) == after


def test_consolidate_empties_a_host_and_refuses_with_reasons_when_capacity_does_not_allow(
        lab_at_home, ansible_env, tmp_path):
    lab = lab_at_home
    before = placement(lab)
    ledger = str(tmp_path / "ledger.jsonl")
    options = {"rebalance_strategy": "consolidate", "rebalance_measure": "allocated", "rebalance_max_moves": 4,
               "rebalance_ledger": ledger}

    # With nearly all of every host kept back (8 GiB hosts, 7900 MiB reserve), no host's VMs fit on another:
    # refused, with reasons, nothing moved.
    done, tasks = recorded_run(lab, ansible_env, tmp_path, "refused", dict(options, rebalance_memory_reserve_mib=7900),
                               check=False)
    # Ansible folds long messages over lines: compare with the whitespace made single.
    said = " ".join(done.stdout.split())
    assert done.returncode != 0
    assert "no host can be emptied" in said and "fits no other host in use" in said, done.stdout[-3000:]
    assert placement(lab) == before and read_ledger(ledger) == []
    assert_nobody_holds_the_lab(lab)

    done, tasks = recorded_run(lab, ansible_env, tmp_path, "consolidate", dict(options, rebalance_mark_empty=True))
    plan = plan_of(tasks)
    print("\n".join(plan["summary_lines"]))
    assert plan["ok"] and plan["hosts_emptied"]
    after = placement(lab)
    for host in plan["hosts_emptied"]:
        assert host not in after.values(), "%s still runs a VM" % host
        mark = os.path.join(lab.host_dir(host), "var-lib-libvirt", "hvmaint", "maintenance.json")
        assert os.path.exists(mark), "%s is not marked" % host
    assert after == dict(before, **{m["vm"]: m["destination"] for m in plan["moves"]})
    stats = tasks.get("Publish the result for AWX workflows")
    assert stats and set(stats[0]["ansible_stats"]["data"]["hvmaint_rebalance_hosts_left_empty"]) >= set(
        plan["hosts_emptied"])


@pytest.mark.parametrize("bad, says", [
    ({"rebalance_strategy": "spread"}, "rebalance_strategy"),
    ({"rebalance_max_parallel": 100}, "max_parallel"),
])
def test_bad_input_is_refused_before_anything_moves(lab_at_home, ansible_env, tmp_path, bad, says):
    lab = lab_at_home
    before = placement(lab)
    ledger = str(tmp_path / "ledger.jsonl")
    options = dict({"rebalance_measure": "allocated", "rebalance_threshold": 0.05, "rebalance_ledger": ledger}, **bad)
    done = run_playbook(lab, ansible_env, "rebalance.yml", options, check=False)
    assert done.returncode != 0 and says in " ".join(done.stdout.split()), done.stdout[-3000:]
    assert placement(lab) == before and read_ledger(ledger) == []
    assert_nobody_holds_the_lab(lab)
