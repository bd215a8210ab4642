"""What a move records in the VM's own history, for the next plans' predictions and its next migration's policy."""

from __future__ import annotations

import time
import types
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration import history as history_module
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import Escalator, Policy
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.results import MIGRATED, base_result, faulted
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration_model import (
    not_representative,
    observations_from_metadata,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._vm_metadata import parse_metadata, render_metadata


def recorded_move(monkeypatch, policy, steps=(), **result):
    written = {}
    monkeypatch.setattr(history_module, "write_domain_metadata", lambda dom, data: written.update(data))
    recorder = history_module.HistoryRecording()
    recorder.source, recorder.destination, recorder.home, recorder.policy = "hv1", "hv2", None, policy
    started_wall = result.pop("started_wall", time.time() - 3.0)
    job = types.SimpleNamespace(started=time.monotonic() - 3.0, started_wall=started_wall,
                                escalator=Escalator(policy, 60),
                                result=dict(base_result("work1", "u1", "hv1", "hv2"), outcome=MIGRATED, **result))
    job.escalator.steps.extend(steps)
    recorder._record(None, types.SimpleNamespace(metadata={}, offline=False), job, MIGRATED, home_if_unset="hv1")
    # As the next run reads it back from the domain's XML.
    return parse_metadata(ET.fromstring(render_metadata(written)))["moves"][-1]


def test_a_move_under_a_bandwidth_limit_is_recorded_as_throttled(monkeypatch):
    move = recorded_move(monkeypatch, Policy(bandwidth_mib_s=2))
    assert move["bandwidth_limit_mib_s"] == 2 and "faulted" not in move
    assert not_representative(observations_from_metadata("work1", {"moves": [move]})[0]) == "throttled"


@pytest.mark.parametrize("step", ["error", "repair", "postcopy_resume"])
def test_a_move_that_ran_into_a_fault_is_recorded_as_faulted(monkeypatch, step):
    move = recorded_move(monkeypatch, Policy(), [{"at_s": 1.0, "iteration": None, "action": step, "detail": "x"}])
    assert move["faulted"] is True and "bandwidth_limit_mib_s" not in move
    assert not_representative(observations_from_metadata("work1", {"moves": [move]})[0]) == "faulted"


def test_a_plain_move_is_representative(monkeypatch):
    move = recorded_move(monkeypatch, Policy(), [{"at_s": 0.0, "iteration": 0, "action": "note", "detail": "x"}])
    assert "faulted" not in move and "bandwidth_limit_mib_s" not in move
    assert not_representative(observations_from_metadata("work1", {"moves": [move]})[0]) is None


def test_needs_attention_counts_as_a_fault():
    assert faulted({"needs_attention": "on two hosts", "policy_steps": []})
    assert not faulted({"policy_steps": [{"action": "downtime"}]})


def test_a_move_records_when_the_vm_ran_on_its_destination(monkeypatch):
    # A controller without the ledger learns each VM's slot time from its own history (_migration_model).
    # As the engine leaves the result when it records the move: switched_over_at set, started_at not yet.
    move = recorded_move(monkeypatch, Policy(), started_wall=1796211720.29, switched_over_at=1796211721.902)
    assert move["switchover_s"] == pytest.approx(1.612)
    assert observations_from_metadata("work1", {"moves": [move]})[0]["switchover_s"] == pytest.approx(1.612)
    assert "switchover_s" not in recorded_move(monkeypatch, Policy(), started_wall=1796211720.29)
