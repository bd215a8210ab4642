"""evacuation_plan as Ansible runs it: arguments in, JSON out."""

from __future__ import annotations

import copy
import json
import os

from ansible_collections.hvmaint.libvirt.plugins.modules.evacuation_plan import main

from .utils import run_module

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")
POLICY = {"critical": "fail", "high": "fail", "normal": "shutdown", "low": "leave"}


def lab():
    with open(FACTS) as f:
        return json.load(f)


def test_drain_plan():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "tiers": {"critical": ["db*", "dns1"]},
                                     "unplaceable_policy": POLICY, "max_wave_size": 2})
    assert code == 0
    assert result["changed"] is False and result["ok"] is True and result["direction"] == "drain"
    assert result["moves"][0]["vm"] == "db1" and result["moves"][0]["tier"] == "critical"
    assert all(len(w["moves"]) <= 2 for w in result["waves"])
    assert result["predicted_seconds"] == sum(w["predicted_seconds"] for w in result["waves"])
    assert [a["vm"] for a in result["actions"]] == ["gpu1"]
    assert result["unplaceable"][0]["vm"] == "gpu1"
    assert result["cannot_return"] == []
    # Plan warnings come back as data, not as Ansible warnings.
    assert any("storage must be copied" in w for w in result["plan_warnings"])
    assert "warnings" not in result
    assert result["summary_lines"][0].startswith("drain hv1: 9 moves in 6 waves")


def test_default_policy_fails_the_plan_but_not_the_task():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1"})
    assert code == 0
    assert result["ok"] is False and result["moves"] == []
    assert [u["vm"] for u in result["unplaceable"]] == ["gpu1"]


def test_return_plan():
    hosts = lab()
    # hv1's maintenance is over and db1 and web1 run on hv2.
    hv1, hv2 = hosts[0], hosts[1]
    hv1["maintenance"] = None
    for name in ("db1", "web1"):
        vm = next(v for v in hv1["vms"] if v["name"] == name)
        hv1["vms"].remove(vm)
        hv2["vms"].append(copy.deepcopy(vm))
    result, code = run_module(main, {"hosts": hosts, "return_to": "hv1"})
    assert code == 0 and result["ok"] is True and result["direction"] == "return"
    assert [(m["vm"], m["source"], m["destination"]) for m in result["moves"]] == [
        ("db1", "hv2", "hv1"), ("web1", "hv2", "hv1")]
    assert result["cannot_return"] == []


def test_source_and_return_to_are_exclusive_and_one_is_required():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "return_to": "hv1"})
    assert code == 1 and "mutually exclusive" in result["msg"]
    result, code = run_module(main, {"hosts": lab()})
    assert code == 1 and "one of the following is required: source, return_to" in result["msg"]


def test_bad_input_fails_with_a_clear_message():
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "tiers": {"platinum": ["db1"]}})
    assert code == 1
    assert result["msg"] == ("tiers names unknown tiers: platinum (tiers, in order: critical, high, normal, low;"
                             " set tier_order to add tiers)")
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "shutoff_vms": "delete"})
    assert code == 1 and "shutoff_vms" in result["msg"]
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "exclude_hosts": ["hv7"]})
    assert code == 1 and "exclude_hosts names hosts that are not in hosts: hv7" in result["msg"]
    result, code = run_module(main, {"hosts": lab(), "source": "hv1", "max_parallel_per_source": 0})
    assert code == 1 and "max_parallel_per_source must be a whole number of at least 1" in result["msg"]


def test_return_plan_ignores_only_the_home_hosts_own_mark():
    hosts = lab()
    hv1, hv2 = hosts[0], hosts[1]
    assert hv1["maintenance"], "the fixture's hv1 is under maintenance"
    vm = next(v for v in hv1["vms"] if v["name"] == "db1")
    hv1["vms"].remove(vm)
    hv2["vms"].append(copy.deepcopy(vm))
    # The return role plans before it clears the mark: without ignore_home_mark the planner refuses the home host.
    refused, code = run_module(main, {"hosts": hosts, "return_to": "hv1"})
    assert code == 0 and refused["ok"] is False and refused["moves"] == []
    assert any("nothing returns: hv1 is under maintenance" in w for w in refused["plan_warnings"])
    result, code = run_module(main, {"hosts": hosts, "return_to": "hv1", "ignore_home_mark": True})
    assert code == 0 and result["ok"] is True
    assert [(m["vm"], m["source"], m["destination"]) for m in result["moves"]] == [("db1", "hv2", "hv1")]
    # Only for a return: a drain has no home host whose mark it could ignore.
    result, code = run_module(main, {"hosts": lab(), "source": "hv2", "ignore_home_mark": True})
    assert code == 1 and "ignore_home_mark applies only with return_to" in result["msg"]
