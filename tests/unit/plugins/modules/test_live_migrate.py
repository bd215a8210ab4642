"""The live_migrate module's interface: its argument spec agrees with its documentation, and bad input is refused
before any connection is opened."""

from __future__ import annotations

import json

import pytest
import yaml

from ansible_collections.hvmaint.libvirt.plugins.module_utils._libvirt_client import HvmaintError
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.policy import (
    DEFAULT_COMPLETION_TIMEOUT_MIN_S,
    DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB,
    DEFAULT_ITERATIONS_PER_STEP,
    DEFAULT_MAX_DOWNTIME_MS,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_PROGRESS_TIMEOUT_S,
)
from ansible_collections.hvmaint.libvirt.plugins.module_utils._migration.run import execute
from ansible_collections.hvmaint.libvirt.plugins.modules import live_migrate

DOC = yaml.safe_load(live_migrate.DOCUMENTATION)


def test_documented_options_match_the_argument_spec():
    spec = live_migrate.argument_spec()
    assert set(DOC["options"]) == set(spec)
    for name, doc in DOC["options"].items():
        assert doc["type"] == spec[name]["type"], name
        assert doc.get("default") == spec[name].get("default"), name
        assert doc.get("choices") == spec[name].get("choices"), name
    escalation_doc = DOC["options"]["escalation"]["suboptions"]
    escalation_spec = spec["escalation"]["options"]
    assert set(escalation_doc) == set(escalation_spec)
    for name, doc in escalation_doc.items():
        assert doc.get("default") == escalation_spec[name].get("default"), name


def test_documented_defaults_are_the_engines_defaults():
    spec = live_migrate.argument_spec()
    assert spec["max_downtime_ms"]["default"] == DEFAULT_MAX_DOWNTIME_MS
    assert spec["max_parallel"]["default"] == DEFAULT_MAX_PARALLEL
    assert spec["completion_timeout_s_per_gib"]["default"] == DEFAULT_COMPLETION_TIMEOUT_S_PER_GIB
    assert spec["completion_timeout_min_s"]["default"] == DEFAULT_COMPLETION_TIMEOUT_MIN_S
    assert spec["progress_timeout_s"]["default"] == DEFAULT_PROGRESS_TIMEOUT_S
    assert spec["escalation"]["options"]["iterations_per_step"]["default"] == DEFAULT_ITERATIONS_PER_STEP


def test_documentation_is_complete():
    assert DOC["version_added"] == "0.1.0"
    assert DOC["author"] == "hvmaint.libvirt maintainers (@hvmaint)"
    assert set(DOC["attributes"]) >= {"check_mode", "diff_mode", "idempotent"}
    yaml.safe_load(live_migrate.EXAMPLES)
    returned = yaml.safe_load(live_migrate.RETURN)
    assert {"migrations", "aborts", "source", "destination", "destinations", "policy"} <= set(returned)
    contains = returned["migrations"]["contains"]
    for field in ("outcome", "elapsed_s", "downtime_ms", "data_transferred_bytes", "memory_iterations",
                  "dirty_rate_pages_s", "policy_steps", "error"):
        assert field in contains


def params(**kw):
    spec = live_migrate.argument_spec()
    full = {name: option.get("default") for name, option in spec.items()}
    full["escalation"] = None
    full.update(kw)
    return full


@pytest.mark.parametrize("bad, fragment", [
    (dict(name="vm1"), "give destination (a host name) or destination_uri"),
    (dict(destination="hv2"), "give name (one VM), names (a list of VMs) or moves"),
    (dict(moves=[{"name": "vm1", "destination": "hv2"}], destination="hv3"), "do not also give destination"),
    (dict(moves=[{"name": "vm1", "destination": "hv2"}, {"name": "vm2"}]),
     "vm2: give destination (a host name) or destination_uri"),
    (dict(moves=[{"name": "vm1", "destination": "hv2"}, {"name": "vm1", "destination": "hv3"}]),
     "VMs listed more than once: vm1"),
    (dict(moves=[{"name": "vm1", "destination": "hv2"}], max_parallel_per_destination=0),
     "max_parallel_per_destination must be between 1 and 64"),
    (dict(name="vm1", destination="hv2", completion_timeout_action="postcopy"), "escalation.post_copy"),
    (dict(name="vm1", destination_uri="qemu+tls://hv2"), "must end in /system"),
    (dict(name="vm1", destination="hv2", uri="qemu+tls//hv1/system"), "not a valid libvirt URI"),
    (dict(name="vm1", destination="hv2", compression="zlib"), "parallel_connections"),
])
def test_bad_input_fails_before_any_connection(bad, fragment):
    # No libvirt host is reachable from a unit test: these must fail on the options alone.
    with pytest.raises(HvmaintError) as refused:
        execute(params(**bad))
    assert fragment in str(refused.value)


def test_failed_preflight_still_tells_the_action_plugin_it_is_over(tmp_path):
    progress = tmp_path / "progress.json"
    with pytest.raises(HvmaintError):
        execute(params(name="vm1", destination="hv2", uri="qemu+tcp://127.0.0.1:1/system",
                       progress_file=str(progress)))
    assert json.loads(progress.read_text())["finished"] is True


def test_nothing_to_move_still_checks_every_option():
    # A role's dry-run of an empty plan passes moves=[]: bad options must fail as they would with moves.
    result = execute(params(moves=[]))
    assert result["changed"] is False and result["failed"] is False and result["migrations"] == []
    for bad, fragment in ((dict(max_parallel=100), "max_parallel must be between 1 and 64"),
                          (dict(max_parallel_per_destination=0), "max_parallel_per_destination must be between 1"),
                          (dict(bandwidth_mib_s=8796093022208), "bandwidth_mib_s must be between 0 and"),
                          (dict(uri="qemu+tls//hv1/system"), "not a valid libvirt URI")):
        with pytest.raises(HvmaintError) as refused:
            execute(params(moves=[], **bad))
        assert fragment in str(refused.value)


def test_mark_source_marks_the_host_in_the_same_run(tmp_path):
    # The drain's first wave sets the maintenance mark itself (one module run fewer); with nothing to move the run
    # still marks, and says so.
    from .utils import run_module

    path = tmp_path / "maintenance.json"
    mark = {"reason": "firmware", "by": "alice", "job": "4711", "path": str(path)}
    checked, code = run_module(live_migrate.main, {"moves": [], "mark_source": mark, "_ansible_check_mode": True})
    assert code == 0 and checked["changed"] and checked["maintenance"]["reason"] == "firmware"
    assert not path.exists(), "check mode writes no mark"
    marked, code = run_module(live_migrate.main, {"moves": [], "mark_source": mark})
    assert code == 0 and marked["changed"] and marked["migrations"] == []
    on_host = json.loads(path.read_text())
    assert (on_host["reason"], on_host["by"], on_host["job"]) == ("firmware", "alice", "4711")
    again, code = run_module(live_migrate.main, {"moves": [], "mark_source": mark})
    assert code == 0 and not again["changed"], "a host already marked so is not changed again"


def test_a_mark_that_cannot_be_set_fails_before_anything_moves(tmp_path):
    from .utils import run_module

    other = tmp_path / "notes.txt"
    other.write_text("not a mark")
    failed, code = run_module(live_migrate.main, {
        "moves": [{"name": "vm1", "destination": "hv2"}], "uri": "qemu+tcp://127.0.0.1:1/system",
        "mark_source": {"path": str(other)}})
    assert code == 1 and "cannot mark the source host under maintenance, so nothing moved" in failed["msg"]
    assert "migrations" not in failed
    assert other.read_text() == "not a mark"
