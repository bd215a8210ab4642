"""The migration model learns a fixed cost and a rate per host pair from the ledger and predicts each move."""

from __future__ import annotations

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils import _migration_model as model

MIB = 1024 * 1024


def entry(vm, seconds, mib, source="hv1", destination="hv2", **extra):
    return dict({"vm": vm, "source": source, "destination": destination, "outcome": "migrated", "mode": "live",
                 "duration_s": seconds, "data_bytes": int(mib * MIB)}, **extra)


def test_a_pair_gets_the_fixed_cost_and_rate_its_migrations_show():
    # 1.5 s fixed + 100 MiB/s, exactly
    ledger = [entry("a", 1.5 + 64 / 100.0, 64), entry("b", 1.5 + 128 / 100.0, 128), entry("c", 1.5 + 400 / 100.0, 400)]
    learned = model.MigrationModel.from_history(ledger)
    pair = learned.describe()["pairs"][0]
    assert pair["fixed_s"] == pytest.approx(1.5)
    assert pair["rate_mib_s"] == pytest.approx(100.0)
    seconds, basis = learned.predict("new", "hv1", "hv2", 200 * MIB)
    assert seconds == pytest.approx(3.5)
    assert "hv1->hv2" in basis


def test_a_vm_is_predicted_from_what_it_sent_last_time_not_its_size():
    # A busy VM of 256 MiB sent 900 MiB (it dirtied memory while moving): that is what the next move sends.
    ledger = [entry("a", 1.0 + 0.64, 64), entry("b", 1.0 + 1.28, 128), entry("busy", 1.0 + 9.0, 900)]
    learned = model.MigrationModel.from_history(ledger)
    busy = learned.predict("busy", "hv1", "hv2", 256 * MIB)[0]
    idle = learned.predict("idle", "hv1", "hv2", 256 * MIB)[0]
    assert busy == pytest.approx(10.0)
    assert idle == pytest.approx(3.56)


def test_an_unknown_pair_uses_what_all_pairs_show_and_no_history_the_default():
    learned = model.MigrationModel.from_history([entry("a", 2.0, 100), entry("b", 3.0, 200)])
    seconds, basis = learned.predict("x", "hv1", "hv3", 300 * MIB)
    assert seconds == pytest.approx(4.0) and basis.startswith("all pairs")
    empty = model.MigrationModel.from_history([], bandwidth_mib_s=100)
    seconds, basis = empty.predict("x", "hv1", "hv2", 100 * MIB)
    assert seconds == pytest.approx(model.DEFAULT_FIXED_S + 1.0) and basis.startswith("default model")


def test_failures_offline_moves_and_junk_are_not_learned():
    ledger = [entry("a", 50.0, 64, outcome="failed"), entry("b", 0.2, 0, mode="offline"), {"vm": None},
              "not a dict", entry("c", 2.0, 64)]
    learned = model.MigrationModel.from_history(ledger)
    assert learned.describe()["pairs"][0]["migrations"] == 1


def test_metadata_history_counts_only_for_vms_the_ledger_does_not_know():
    metadata = {"a": {"moves": [{"from": "hv1", "to": "hv2", "outcome": "migrated", "seconds": 9.0,
                                 "data_bytes": 64 * MIB}]},
                "z": {"moves": [{"from": "hv1", "to": "hv2", "outcome": "migrated", "seconds": 4.0,
                                 "data_bytes": 64 * MIB, "downtime_limit_ms": 1000, "escalated": True}]}}
    learned = model.MigrationModel.from_history([entry("a", 2.0, 64)], metadata)
    assert learned.describe()["pairs"][0]["migrations"] == 2
    history = learned.vm_history("z")
    assert history["escalated"] and history["downtime_limit_ms"] == 1000


def test_throttled_and_faulted_moves_teach_no_times():
    # Seen on the lab: the fault tests' migrations at 2-8 MiB/s entered the VMs' histories, and the next drain
    # predicted hv1->hv2 at 25.5 s for moves that took 3.4-4.4 s.
    ledger = [entry("a", 1.5 + 64 / 100.0, 64), entry("b", 1.5 + 128 / 100.0, 128), entry("c", 1.5 + 400 / 100.0, 400),
              entry("busy", 70.0, 300, bandwidth_limit_mib_s=4, escalated=True, downtime_limit_ms=3000),
              entry("d", 40.0, 64, faulted=True)]
    metadata = {"work1": {"moves": [
        {"from": "hv1", "to": "hv2", "outcome": "migrated", "seconds": 3.5, "data_bytes": 200 * MIB},
        {"from": "hv2", "to": "hv1", "outcome": "migrated", "seconds": 130.0, "data_bytes": 260 * MIB,
         "bandwidth_limit_mib_s": "2"},
        {"from": "hv1", "to": "hv2", "outcome": "migrated", "seconds": 45.0, "data_bytes": 260 * MIB,
         "faulted": "true"}]}}
    learned = model.MigrationModel.from_history(ledger, metadata)
    described = learned.describe()
    pair = [p for p in described["pairs"] if (p["source"], p["destination"]) == ("hv1", "hv2")][0]
    assert pair["migrations"] == 4 and pair["fixed_s"] == pytest.approx(1.5)
    assert described["left_out"] == {"faulted": 2, "throttled": 2}
    assert learned.predict("new", "hv1", "hv2", 200 * MIB)[0] == pytest.approx(3.5)
    # The VM's own figures are its unthrottled move's; what its last move needed still carries over.
    assert learned.predict("work1", "hv1", "hv2", 256 * MIB)[0] == pytest.approx(3.5)
    busy = learned.vm_history("busy")
    assert busy["migrations"] == 0 and busy["escalated"] and busy["downtime_limit_ms"] == 3000
    assert learned.predict("busy", "hv1", "hv2", 256 * MIB)[0] == pytest.approx(1.5 + 2.56)


def test_only_throttled_moves_leave_the_default_model():
    learned = model.MigrationModel.from_history([entry("a", 60.0, 128, bandwidth_limit_mib_s=2)], bandwidth_mib_s=100)
    seconds, basis = learned.predict("a", "hv1", "hv2", 100 * MIB)
    assert basis.startswith("default model") and seconds == pytest.approx(model.DEFAULT_FIXED_S + 1.0)


def test_a_move_holds_its_slot_until_the_switch_over_not_to_the_end_of_the_clean_up():
    # Each move of hv1->hv2 went on 1.5 s after the VM ran on hv2 (stopping the source's QEMU); hv1->hv3 said not.
    ledger = [entry("a", 4.5, 64, switchover_s=3.0), entry("b", 5.5, 128, switchover_s=4.0),
              entry("c", 3.0, 64, destination="hv3")]
    learned = model.MigrationModel.from_history(ledger)
    pairs = {p["destination"]: p for p in learned.describe()["pairs"]}
    assert pairs["hv2"]["tail_after_switchover_s"] == pytest.approx(1.5)
    assert learned.slot_seconds("hv1", "hv2", 5.0) == pytest.approx(3.5)
    # A pair whose moves never said borrows what all pairs show; a tail longer than the move leaves it a tenth.
    assert learned.slot_seconds("hv1", "hv3", 5.0) == pytest.approx(3.5)
    assert learned.slot_seconds("hv1", "hv2", 1.0) == pytest.approx(0.1)
    assert model.MigrationModel.from_history([entry("a", 4.5, 64)]).slot_seconds("hv1", "hv2", 5.0) == 5.0
