"""Per-VM learning: a drain planned from the ledger of an earlier drain of the same host predicts the span the
engine gave, because each VM is predicted from its own moves and frees its slot at its own switch-over.

The ledgers are real ones (tests/unit/fixtures/ledger/): drains of the default lab's hv1 to hv2 and the returns,
as audit_ledger wrote them. The facts are lab3.json's hv1 and hv2 with the default lab's
guests on hv1 (tests/lab/lab.json), hv3 left out as the lab's drain leaves it out (too small)."""

from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _migration_model as model
from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import plan_evacuation, plan_return

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures")
MIB = 1024 * 1024
# The default lab's guests on hv1: name -> memory MiB.
LAB_HV1 = {"idle1": 96, "idle2": 96, "idle3": 96, "idle5": 64, "idle6": 64, "disk1": 96, "work1": 256}


def recorded_ledger():
    with open(os.path.join(FIXTURES, "ledger", "lab-hv1-drain-return.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def lab_facts():
    with open(os.path.join(FIXTURES, "facts", "lab3.json")) as f:
        hosts = {h["name"]: h for h in json.load(f)}
    hv1, hv2 = hosts["hv1"], hosts["hv2"]
    template = next(vm for vm in hv1["vms"] if vm["name"] == "web1")
    guests = []
    for number, (name, memory) in enumerate(sorted(LAB_HV1.items())):
        vm = copy.deepcopy(template)
        vm.update(name=name, uuid="00000000-0000-4000-8000-%012d" % number, memory_mib=memory,
                  current_memory_mib=memory, metadata={"home": "hv1", "tier": "normal"})
        guests.append(vm)
    hv1 = dict(hv1, vms=guests, maintenance=None)
    return [hv1, dict(hv2, vms=[])]


def drained(history):
    return plan_evacuation(lab_facts(), "hv1", history=history)


def engine_span(entries):
    """What the report counts as the wave's actual time: first start to last end."""
    return max(e["started_at"] + e["duration_s"] for e in entries) - min(e["started_at"] for e in entries)


def test_a_second_drain_predicts_the_span_of_the_first_within_a_quarter():
    ledger = recorded_ledger()
    drain = [e for e in ledger if e["operation"] == "drain"]
    actual = engine_span(drain)
    plan = drained(ledger)
    assert [w["moves"][0]["destination"] for w in plan["waves"]] == ["hv2"]
    assert {m["vm"] for m in plan["moves"]} == set(LAB_HV1)
    # Each VM is predicted from its own move on hv1->hv2: disk1 (which copies its disk) took 4.3 s where the
    # pair's fit over all seven moves says 3.0 s.
    for move in plan["moves"]:
        own = next(e for e in drain if e["vm"] == move["vm"])
        assert move["estimated_seconds"] == pytest.approx(own["duration_s"], abs=0.05)
        assert move["prediction"].startswith("%s's own last 1 on hv1->hv2" % move["vm"])
    # Within 25 % (the target); from the pair's figures alone it was 8.0 s (+28 %).
    assert abs(plan["predicted_seconds"] - actual) <= 0.25 * actual


def test_a_return_before_any_return_is_predicted_from_the_vms_moves_the_other_way():
    # The return after the first drain: hv2->hv1 was never seen, each VM's drain says how it runs.
    ledger = recorded_ledger()
    drain = [e for e in ledger if e["operation"] == "drain"]
    returned = [e for e in ledger if e["operation"] == "return"]
    learned = model.MigrationModel.from_history(drain)
    for entry in returned:
        seconds, basis = learned.predict(entry["vm"], "hv2", "hv1", LAB_HV1[entry["vm"]] * MIB)
        own = next(e for e in drain if e["vm"] == entry["vm"])
        assert seconds == pytest.approx(own["duration_s"], abs=0.05) and "as its own moves ran" in basis


def recorded_runs(name):
    """The drains and returns of a recorded ledger, each as its list of entries, in the order they ran."""
    with open(os.path.join(FIXTURES, "ledger", name)) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    runs = []
    for entry in entries:
        if not runs or runs[-1][0] != entry["operation"]:
            runs.append((entry["operation"], []))
        runs[-1][1].append(entry)
    return runs


def returned_facts():
    hv1, hv2 = lab_facts()
    return [dict(hv1, vms=[]), dict(hv2, vms=hv1["vms"])]


@pytest.mark.parametrize("name", ["lab-hv1-drain-return.jsonl", "lab-hv1-two-rounds-a.jsonl",
                                  "lab-hv1-two-rounds-b.jsonl", "lab-hv1-two-rounds-c.jsonl"])
def test_every_recorded_drain_and_return_is_predicted_within_a_quarter_from_the_runs_before(name):
    # Four ledgers of the default lab, written at 11:42, 11:54, 12:11 and 12:25 on 2026-12-02 with other
    # developers' work on the machine: the same drain took 9.1 s and 7.7 s in two rounds. From the pairs' figures
    # the predictions ran up to 51 % over.
    runs = recorded_runs(name)
    before = []
    for operation, entries in runs:
        if before:
            plan = drained(before) if operation == "drain" else plan_return(returned_facts(), "hv1", history=before)
            actual = engine_span(entries)
            predicted = plan["predicted_seconds"]
            assert abs(predicted - actual) <= 0.25 * actual, (operation, predicted, actual)
        before += entries


def wave_entries(tails):
    """One drain's ledger entries: each VM took `seconds` and switched over `seconds - tail` after its start."""
    return [{"vm": vm, "source": "hv1", "destination": "hv2", "outcome": "migrated", "mode": "live",
             "duration_s": seconds, "switchover_s": round(seconds - tail, 3), "data_bytes": size_mib * MIB,
             "operation": "drain"} for vm, (seconds, tail, size_mib) in tails.items()]


def slot_schedule(plan, truth):
    """The engine's slot schedule for the plan's order: two slots, each freed at the move's switch-over (the
    ledger's switchover_s), the wave over at the last move's end."""
    slots, end = [0.0, 0.0], 0.0
    for move in plan["moves"]:
        seconds, tail, _size = truth[move["vm"]]
        start = min(slots)
        slots[slots.index(start)] = start + seconds - tail
        end = max(end, start + seconds)
    return end


def test_a_linux_guest_that_switches_over_early_frees_its_slot_early():
    # As b-work1 on the bench lab: a 6.6 s job whose VM ran on the destination after 1.65 s (5 s of clean-up on
    # the source), beside idle guests of about 2.7 s with about 1.2 s of clean-up. The pair's median tail (an
    # idle guest's) kept work1's slot for 5.4 s in the prediction: 9.7 s predicted for a 6.85 s wave (+42 %).
    truth = {"work1": (6.6, 4.95, 260), "idle1": (2.7, 1.2, 1), "idle2": (2.6, 1.1, 1), "idle3": (2.8, 1.2, 1),
             "idle5": (2.5, 1.3, 1), "idle6": (2.4, 1.0, 1), "disk1": (4.2, 2.6, 3)}
    once = drained(wave_entries(truth))
    actual = slot_schedule(once, truth)
    assert once["moves"][0]["vm"] == "work1"
    assert once["predicted_seconds"] == pytest.approx(actual, abs=0.1)
    described = once["prediction_model"]
    assert described["vms_with_own_tail"] == 7
    assert described["vm_tail_after_switchover_s"] == {"min": 1.0, "max": 4.95}


def test_a_vm_without_switch_over_times_falls_back_to_its_pairs_tail_then_all_pairs():
    ledger = wave_entries({"a": (4.0, 2.0, 64), "b": (4.0, 1.0, 64), "c": (4.0, 1.0, 64)})
    ledger.append({"vm": "old", "source": "hv1", "destination": "hv2", "outcome": "migrated", "mode": "live",
                   "duration_s": 5.0, "data_bytes": 64 * MIB})
    learned = model.MigrationModel.from_history(ledger)
    # "a" went on 2 s after its switch-over, where the pair's median is 1 s.
    assert learned.slot_seconds("hv1", "hv2", 4.0, "a") == pytest.approx(2.0)
    # "old" never said when it switched over: the pair's median tail (1 s); a pair never seen: all pairs'.
    assert learned.slot_seconds("hv1", "hv2", 5.0, "old") == pytest.approx(4.0)
    assert learned.slot_seconds("hv3", "hv2", 5.0, "new") == pytest.approx(4.0)
    # A VM's own tail counts on other pairs too.
    assert learned.slot_seconds("hv3", "hv2", 4.0, "a") == pytest.approx(2.0)


def test_throttled_and_faulted_moves_teach_no_vm_times():
    ledger = wave_entries({"a": (4.0, 1.0, 64), "b": (4.0, 1.0, 64)})
    ledger += [dict(ledger[0], duration_s=60.0, switchover_s=2.0, bandwidth_limit_mib_s=2),
               dict(ledger[0], duration_s=40.0, switchover_s=39.0, faulted=True)]
    learned = model.MigrationModel.from_history(ledger)
    # Only a's clean move counts: 4 s with 1 s of clean-up, as its pair's.
    assert learned.predict("a", "hv1", "hv2", 64 * MIB)[0] == pytest.approx(4.0)
    assert learned.slot_seconds("hv1", "hv2", 4.0, "a") == pytest.approx(3.0)
    assert learned.describe()["left_out"] == {"faulted": 1, "throttled": 1}


def test_a_vms_own_history_teaches_its_slot_time_without_the_ledger():
    # A fresh controller (an AWX container) has no ledger: the VMs' metadata moves are the history.
    metadata = {"work1": {"moves": [{"from": "hv1", "to": "hv2", "outcome": "migrated", "seconds": 6.6,
                                     "switchover_s": 1.65, "data_bytes": 260 * MIB}]},
                "idle1": {"moves": [{"from": "hv1", "to": "hv2", "outcome": "migrated", "seconds": 2.7,
                                     "switchover_s": 1.5, "data_bytes": MIB}]}}
    learned = model.MigrationModel.from_history([], metadata)
    assert learned.slot_seconds("hv1", "hv2", 6.6, "work1") == pytest.approx(1.65)
    assert learned.slot_seconds("hv1", "hv2", 2.7, "idle1") == pytest.approx(1.5)
    assert learned.describe()["vms_with_own_tail"] == 2
