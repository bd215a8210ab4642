"""The planner's predictions from history: each move predicted from the ledger, the longest first in its wave,
and a VM's last escalation named in the plan (tests/unit/fixtures/facts/lab3.json, as test_evacuation_plan)."""

from __future__ import annotations

import json
import os

from ansible_collections.hvmaint.libvirt.plugins.module_utils._evacuation_plan import plan_evacuation

FACTS = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "facts", "lab3.json")
POLICY = {"critical": "fail", "high": "fail", "normal": "shutdown", "low": "leave"}
TIERS = {"critical": ["db*", "dns1"]}
MIB = 1024 * 1024


def lab():
    with open(FACTS) as f:
        return json.load(f)


def drained(history):
    return plan_evacuation(lab(), "hv1", tiers=TIERS, unplaceable_policy=POLICY, history=history)


def ledger_from(plan, seconds_of, data_mib_of):
    """A ledger as the last drain would have left it: every live move of `plan` with the given figures."""
    return [{"vm": m["vm"], "source": m["source"], "destination": m["destination"], "outcome": "migrated",
             "mode": "live", "duration_s": seconds_of(m), "data_bytes": data_mib_of(m) * MIB}
            for m in plan["moves"] if m["mode"] == "live"]


def test_with_no_history_the_default_model_predicts_and_says_so():
    plan = drained([])
    live = [m for m in plan["moves"] if m["mode"] == "live"]
    assert live and all(m["prediction"].startswith("default model") for m in live)
    assert plan["prediction_model"]["pairs"] == []
    assert "default model" in plan["summary_lines"][0]


def test_a_second_drain_is_predicted_from_the_first_one():
    first = drained([])
    # The last drain: 1.5 s per move plus the memory at 200 MiB/s, except one VM that dirtied 4x its memory.
    busy = next(m["vm"] for m in first["moves"] if m["mode"] == "live")

    def sent(m):
        return m["memory_mib"] * (4 if m["vm"] == busy else 1)

    history = ledger_from(first, lambda m: 1.5 + sent(m) / 200.0, sent)
    second = drained(history)
    for move in (m for m in second["moves"] if m["mode"] == "live"):
        same_pair = any(h["source"] == move["source"] and h["destination"] == move["destination"] for h in history)
        expected = 1.5 + sent(move) / 200.0
        if same_pair:
            assert abs(move["estimated_seconds"] - expected) <= 0.1, move
    assert "learned from %d earlier migrations" % len(history) in second["summary_lines"][0]


def test_within_a_wave_the_longest_predicted_move_starts_first():
    first = drained([])
    history = ledger_from(first, lambda m: 1.0 + len(m["vm"]) * 3.0, lambda m: m["memory_mib"])
    plan = drained(history)
    for wave in plan["waves"]:
        seconds = [m["estimated_seconds"] for m in wave["moves"]]
        assert seconds == sorted(seconds, reverse=True)


def test_a_vm_that_needed_escalation_carries_what_finally_worked():
    first = drained([])
    name = next(m["vm"] for m in first["moves"] if m["mode"] == "live")
    history = ledger_from(first, lambda m: 2.0, lambda m: m["memory_mib"])
    for entry in history:
        if entry["vm"] == name:
            entry.update(escalated=True, downtime_limit_ms=1000)
    move = next(m for m in drained(history)["moves"] if m["vm"] == name)
    assert move["last_escalation"] == {"downtime_limit_ms": 1000, "postcopy": False}


def test_a_wave_is_predicted_with_each_slot_free_at_the_switch_over():
    # The engine starts the next move once the VM runs on its destination, while libvirt still stops the source's
    # QEMU: a wave of many short moves takes far less than their whole times scheduled slot after slot.
    first = drained([])
    whole = ledger_from(first, lambda m: 4.0, lambda m: m["memory_mib"])
    tails = [dict(e, switchover_s=1.0) for e in whole]
    without, with_tails = drained(whole), drained(tails)
    assert [m["estimated_seconds"] for m in with_tails["moves"]] == [m["estimated_seconds"] for m in without["moves"]]
    # Waves with more moves than the two slots the planner allows by default.
    crowded = [(wave, other) for wave, other in zip(with_tails["waves"], without["waves"]) if len(wave["moves"]) > 2]
    assert crowded
    for wave, other in crowded:
        # The third move starts when a slot is free: a second earlier than its neighbour's whole time.
        assert wave["predicted_seconds"] < other["predicted_seconds"]
        assert wave["predicted_seconds"] >= max(m["estimated_seconds"] for m in wave["moves"])
    assert with_tails["predicted_seconds"] < without["predicted_seconds"]
